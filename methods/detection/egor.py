"""EGOR's incremental training losses (docs/papers/egor.md), and the baselines'.

The new detector (old classes + new rows, :func:`~methods.detection.detector.expand_classes`)
trains on task-2 images while a frozen copy of the old detector sees the same batch.

- **New-class loss**: GFL's QFL + GIoU + DFL on new-class ground truth only, over the
  new-class logits only (``class_offset = n_old``).
- **Logit distillation**: per image, the ``logit_topk`` (1000) anchors where the old
  detector's best old-class score is highest; mean squared error between the new and old
  old-class logits there.
- **Box distillation (LD)**: per image, the ``box_topk`` (1000) anchors with the largest
  old box-distribution logit, reduced by class-aware NMS at IoU 0.005 on the old boxes;
  KL divergence at temperature 10 (``T^2``-scaled, weight 0.25) between the new and old
  side distributions, weighted by the new detector's best old-class probability.
- **Feature distillation**: RoIAlign (3 x 3) of the classification branch's features at
  the replayed (pasted) old-object boxes, each box on the FPN level of its scale
  (``floor(log2(sqrt(wh) / 56))``); mean squared error between new and old, weight 0.03.
- **Balancing**: every distillation term is multiplied by the QFL's balancing factor,
  the mean ``|IoU target - probability|`` over the positive new-class anchors.

Methods: ``finetune`` (GFL loss on new ground truth over all logits; no old model),
``distill`` (new-class loss + balanced logit and box distillation, no replay) and ``egor``
(the same on images with replayed objects, plus feature distillation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

from methods.detection.boxes import batched_nms, roi_align
from methods.detection.detector import DetectorOutput, GFLDetector, Targets, decode_boxes, gfl_loss

METHODS = ("finetune", "distill", "egor")


@dataclass(frozen=True)
class DistillationConfig:
    """Distillation settings; defaults are the public code's."""

    logit_topk: int = 1000
    logit_weight: float = 1.0
    box_topk: int = 1000
    box_nms_iou: float = 0.005
    temperature: float = 10.0
    ld_weight: float = 0.25
    feature_weight: float = 0.03
    finest_scale: float = 56.0
    roi_size: int = 3
    balance: bool = True


def logit_distillation(new: DetectorOutput, old: DetectorOutput, n_old: int, topk: int) -> torch.Tensor:
    """Mean squared error of the old-class logits at each image's ``topk`` most confident old anchors."""
    old_logits = old.cls_logits[..., :n_old]
    index = old_logits.max(dim=-1).values.topk(min(topk, old_logits.shape[1]), dim=1).indices  # (B, k)
    index = index[..., None].expand(-1, -1, n_old)
    return F.mse_loss(new.cls_logits[..., :n_old].gather(1, index), old_logits.gather(1, index))


def box_distillation(new: DetectorOutput, old: DetectorOutput, n_old: int, reg_max: int,
                     config: DistillationConfig) -> torch.Tensor:
    """LD between new and old side distributions at the old detector's NMS-kept confident anchors (sum over images)."""
    old_boxes = decode_boxes(old, reg_max)
    old_probs, old_labels = old.cls_logits[..., :n_old].sigmoid().max(dim=-1)
    bins, temperature = reg_max + 1, config.temperature
    total = new.reg_logits.new_zeros(())
    for image in range(new.reg_logits.shape[0]):
        candidates = old.reg_logits[image].max(dim=-1).values.topk(
            min(config.box_topk, old.reg_logits.shape[1])).indices
        keep = candidates[batched_nms(old_boxes[image, candidates], old_probs[image, candidates],
                                      old_labels[image, candidates], config.box_nms_iou)]
        new_sides = new.reg_logits[image, keep].reshape(-1, bins)
        old_sides = old.reg_logits[image, keep].reshape(-1, bins)
        kl = F.kl_div(F.log_softmax(new_sides / temperature, dim=1), F.softmax(old_sides / temperature, dim=1),
                      reduction="none").mean(dim=1) * temperature**2
        weight = new.cls_logits[image, keep, :n_old].detach().sigmoid().max(dim=-1).values.repeat_interleave(4)
        total = total + config.ld_weight * (kl * weight).sum() / 4
    return total


def roi_levels(boxes: torch.Tensor, n_levels: int, finest_scale: float) -> torch.Tensor:
    """FPN level of each box ``(R, 4)`` by its scale: ``floor(log2(sqrt(wh) / finest_scale + 1e-6))`` in ``[0, L)``."""
    scale = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0).sqrt()
    return torch.floor(torch.log2(scale / finest_scale + 1e-6)).clamp(0, n_levels - 1).long()


def feature_distillation(new: DetectorOutput, old: DetectorOutput, boxes: list[torch.Tensor], strides,
                         config: DistillationConfig) -> torch.Tensor:
    """Mean squared error of the RoIAligned classification features at the replayed boxes (0 if none)."""
    all_boxes = torch.cat(boxes) if boxes else new.cls_logits.new_zeros((0, 4))
    if all_boxes.numel() == 0:
        return new.cls_logits.sum() * 0
    batch_index = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=all_boxes.device)
                             for i, b in enumerate(boxes)])
    levels = roi_levels(all_boxes, len(strides), config.finest_scale)
    losses = []
    for level, stride in enumerate(strides):
        chosen = levels == level
        if chosen.any():
            rois = (all_boxes[chosen], batch_index[chosen], config.roi_size, 1 / stride)
            difference = roi_align(new.cls_features[level], *rois) - roi_align(old.cls_features[level], *rois)
            losses.append(difference.pow(2).flatten(1).mean(1))
    return torch.cat(losses).mean()


def incremental_loss(method: str, model: GFLDetector, old_model: GFLDetector | None, images: torch.Tensor,
                     targets: list[Targets], replayed: list[torch.Tensor], n_old: int,
                     config: DistillationConfig = DistillationConfig()) -> dict[str, torch.Tensor]:
    """The loss terms of one task-2 batch.

    Parameters
    ----------
    method : {"finetune", "distill", "egor"}
    model, old_model : GFLDetector
        The new detector (trained) and the frozen old one (unused by ``finetune``).
    images : (B, 3, H, W) tensor in [0, 1]
    targets : list of Targets
        New-class ground truth per image (global class indices ``>= n_old``).
    replayed : list of (R_i, 4) tensors
        Boxes of the objects pasted into each image (empty unless ``egor``).
    n_old : int
        Number of old classes (the first logits).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    output = model(images)
    if method == "finetune":
        return gfl_loss(output, targets, model.reg_max)[0]
    losses, balance = gfl_loss(output, targets, model.reg_max, class_offset=n_old)
    factor = balance if config.balance else 1.0
    with torch.no_grad():
        old = old_model(images)
    losses["distill_logit"] = factor * config.logit_weight * logit_distillation(output, old, n_old, config.logit_topk)
    losses["distill_box"] = factor * box_distillation(output, old, n_old, model.reg_max, config)
    if method == "egor":
        losses["distill_feature"] = factor * config.feature_weight * feature_distillation(
            output, old, replayed, model.strides, config)
    return losses


def is_finite(losses: dict[str, torch.Tensor]) -> bool:
    return all(math.isfinite(float(v.detach())) for v in losses.values())
