"""A one-stage GFL detector in plain torch: backbone, FPN, GFL head, loss and inference.

The paper's detector (docs/papers/egor.md) is MMDetection's GFL on a
ResNet-50-FPN: 5 FPN levels of 256 channels at strides 8-128, a head of 4 stacked
3x3 convs with GroupNorm per branch, an anchor of side 8 x stride per location, ATSS
assignment (top 9), QFL (beta 2, weight 1), DFL (weight 0.25, reg_max 16) and GIoU
(weight 2); inference keeps scores above 0.05, NMS at IoU 0.6, 100 boxes per image.
:func:`gfl_detector` builds that, or a small version for CPU runs (a 4-stage
convolutional backbone and 3 levels), from the same classes.

Images enter as float ``(B, 3, H, W)`` in [0, 1] (so detector inversion optimises
pixels directly); the detector normalises them with its ``pixel_mean``/``pixel_std``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from methods.detection.atss import AnchorGrid, anchor_grid, atss_assign
from methods.detection.boxes import aligned_iou, batched_nms, box_to_distance, distance_to_box, giou_loss
from methods.detection.gfl import distribution_focal_loss, integral, quality_focal_loss

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
QFL_WEIGHT, DFL_WEIGHT, GIOU_WEIGHT = 1.0, 0.25, 2.0


# ---------------------------------------------------------------- backbones


class NormEvalBackbone(nn.Module):
    """A backbone whose BatchNorm layers can stay in eval mode while it trains (``norm_eval``):
    their running statistics are frozen, their affine weights still learn (MMDetection's
    ``norm_eval=True``)."""

    norm_eval = False

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), torchvision's parameter names."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50(NormEvalBackbone):
    """ResNet-50 returning C3, C4, C5 (strides 8, 16, 32; 512, 1024, 2048 channels).

    Parameter names match torchvision's ``resnet50`` so its ImageNet state dict loads
    (``load_state_dict(..., strict=False)`` leaves only ``fc.*`` unused). As in the
    paper's config, ``frozen_stages=1`` freezes the stem and ``layer1`` and
    ``norm_eval=True`` keeps every BatchNorm in eval mode with frozen statistics.
    """

    out_channels = (512, 1024, 2048)

    def __init__(self, frozen_stages: int = 1, norm_eval: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels, layers = 64, []
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stage = [Bottleneck(channels, width, stride)]
            channels = width * Bottleneck.expansion
            stage += [Bottleneck(channels, width) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        frozen = [self.conv1, self.bn1] + [self.layer1, self.layer2, self.layer3, self.layer4][:frozen_stages]
        for module in frozen:
            module.requires_grad_(False)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c3 = self.layer2(self.layer1(x))
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class SmallBackbone(NormEvalBackbone):
    """A small plain CNN for CPU runs: stem at stride 2, then stages at strides 4, 8, 16, 32.

    Each stage is two 3x3 conv-BN-ReLU layers (the first strided); returns C3, C4, C5 with
    ``2w, 4w, 8w`` channels for base width ``w``. Its BatchNorm statistics train with the
    first task (there are no ImageNet statistics to keep; set ``norm_eval`` to freeze them
    afterwards), and are what detector inversion matches.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = conv_bn_relu(3, width, 2)
        widths = [width, width, 2 * width, 4 * width, 8 * width]
        self.stages = nn.ModuleList(
            nn.Sequential(conv_bn_relu(widths[i], widths[i + 1], 2), conv_bn_relu(widths[i + 1], widths[i + 1]))
            for i in range(4))
        self.out_channels = tuple(widths[2:])

    def forward(self, x):
        x = self.stages[0](self.stem(x))
        outputs = []
        for stage in self.stages[1:]:
            x = stage(x)
            outputs.append(x)
        return outputs


# ---------------------------------------------------------------- neck and head


class FPN(nn.Module):
    """Feature pyramid (Lin et al., 2017): 1x1 laterals, top-down nearest upsampling, 3x3 outputs,
    and ``n_outs - len(in_channels)`` extra levels by stride-2 3x3 convs on the last output
    (MMDetection's ``add_extra_convs="on_output"``)."""

    def __init__(self, in_channels: tuple[int, ...], channels: int, n_outs: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        self.extra = nn.ModuleList(nn.Conv2d(channels, channels, 3, 2, 1) for _ in range(n_outs - len(in_channels)))
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.xavier_uniform_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, features):
        laterals = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.output, laterals, strict=True)]
        for conv in self.extra:
            outs.append(conv(outs[-1]))
        return outs


class Scale(nn.Module):
    """A learnable scalar multiplier (one per FPN level on the regression output)."""

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x):
        return x * self.scale


def _branch(channels: int, n_convs: int, groups: int) -> nn.Sequential:
    layers = []
    for _ in range(n_convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.GroupNorm(groups, channels),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class GFLHead(nn.Module):
    """GFL's head: per level, a classification and a regression branch of ``n_convs`` 3x3
    conv-GN-ReLU layers shared across levels, then ``n_classes`` logits and
    ``4 * (reg_max + 1)`` side-distribution logits per location (scaled per level).

    Initialisation as GFL: convs N(0, 0.01), classification bias ``-log((1 - 0.01) / 0.01)``.
    """

    def __init__(self, n_classes: int, channels: int, n_levels: int, n_convs: int = 4, reg_max: int = 16,
                 groups: int = 32):
        super().__init__()
        self.n_classes, self.reg_max = n_classes, reg_max
        self.cls_convs = _branch(channels, n_convs, groups)
        self.reg_convs = _branch(channels, n_convs, groups)
        self.gfl_cls = nn.Conv2d(channels, n_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(channels, 4 * (reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in range(n_levels))
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.normal_(conv.weight, std=0.01)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
        nn.init.constant_(self.gfl_cls.bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, features):
        """Per level: class logits ``(B, C, H, W)``, side logits ``(B, 4(n+1), H, W)``, cls-branch features."""
        cls_logits, reg_logits, cls_features = [], [], []
        for x, scale in zip(features, self.scales, strict=True):
            cls_feature = self.cls_convs(x)
            cls_logits.append(self.gfl_cls(cls_feature))
            reg_logits.append(scale(self.gfl_reg(self.reg_convs(x))).float())
            cls_features.append(cls_feature)
        return cls_logits, reg_logits, cls_features


# ---------------------------------------------------------------- the detector


@dataclass
class DetectorOutput:
    """A forward pass over a batch.

    Attributes
    ----------
    cls_logits : (B, A, C) tensor
        Class logits of every anchor of every level (levels concatenated, row-major).
    reg_logits : (B, A, 4 * (reg_max + 1)) tensor
        Side-distribution logits, in stride units.
    cls_features : list of (B, F, H_l, W_l) tensors
        The classification branch's last feature map per level (EGOR's feature distillation).
    anchors : AnchorGrid
        The ``A`` anchors.
    image_shape : (int, int)
        Height and width of the (padded) input.
    """

    cls_logits: torch.Tensor
    reg_logits: torch.Tensor
    cls_features: list[torch.Tensor]
    anchors: AnchorGrid
    image_shape: tuple[int, int]


@dataclass
class Detections:
    """One image's detections: ``boxes (K, 4)`` pixels, ``scores (K,)``, ``labels (K,)`` class indices."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


class GFLDetector(nn.Module):
    """Backbone + FPN + GFL head over images in [0, 1]; see the module docstring."""

    def __init__(self, backbone: nn.Module, n_classes: int, channels: int, n_levels: int, strides: tuple[int, ...],
                 n_convs: int = 4, reg_max: int = 16, octave_scale: float = 8.0, groups: int = 32,
                 pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD):
        super().__init__()
        self.backbone = backbone
        self.neck = FPN(backbone.out_channels, channels, n_levels)
        self.head = GFLHead(n_classes, channels, n_levels, n_convs, reg_max, groups)
        self.strides, self.octave_scale = tuple(strides), octave_scale
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1))

    @property
    def n_classes(self) -> int:
        return self.head.n_classes

    @property
    def reg_max(self) -> int:
        return self.head.reg_max

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        """``images (B, 3, H, W)`` in [0, 1], H and W multiples of the largest stride."""
        features = self.neck(self.backbone((images - self.pixel_mean) / self.pixel_std))
        cls_logits, reg_logits, cls_features = self.head(features)
        shapes = [tuple(x.shape[-2:]) for x in cls_logits]
        anchors = anchor_grid(shapes, list(self.strides), self.octave_scale, images.device)
        flatten = lambda maps: torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)  # noqa: E731
        return DetectorOutput(flatten(cls_logits), flatten(reg_logits), cls_features, anchors,
                              tuple(images.shape[-2:]))


def gfl_detector(n_classes: int, kind: str = "resnet50", width: int = 16, channels: int | None = None,
                 n_convs: int | None = None) -> GFLDetector:
    """The paper's GFL R50-FPN (``kind="resnet50"``: 256 channels, 5 levels, 4 convs), or the
    CPU version (``kind="small"``: :class:`SmallBackbone` of base ``width``, 3 levels at
    strides 8-32, ``channels`` defaulting to 4 x width and 2 convs per branch)."""
    if kind == "resnet50":
        return GFLDetector(ResNet50(), n_classes, channels or 256, 5, (8, 16, 32, 64, 128), n_convs or 4)
    if kind == "small":
        channels = channels or 4 * width
        return GFLDetector(SmallBackbone(width), n_classes, channels, 3, (8, 16, 32), n_convs or 2,
                           groups=min(32, channels // 4))
    raise ValueError(f"unknown detector kind {kind!r}; choose resnet50 or small")


def expand_classes(detector: GFLDetector, n_new: int) -> GFLDetector:
    """A copy of ``detector`` with ``n_new`` more classes: the old classification rows are
    copied, the new rows initialised like a fresh head (EGOR's incremental head)."""
    expanded = copy.deepcopy(detector)
    old = detector.head.gfl_cls
    conv = nn.Conv2d(old.in_channels, old.out_channels + n_new, 3, padding=1).to(old.weight.device)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.constant_(conv.bias, -math.log((1 - 0.01) / 0.01))
    with torch.no_grad():
        conv.weight[:old.out_channels] = old.weight
        conv.bias[:old.out_channels] = old.bias
    expanded.head.gfl_cls = conv
    expanded.head.n_classes = old.out_channels + n_new
    return expanded


# ---------------------------------------------------------------- loss and inference


@dataclass
class Targets:
    """Ground truth of one image: ``boxes (G, 4)`` pixels and ``labels (G,)`` class indices."""

    boxes: torch.Tensor
    labels: torch.Tensor


def gfl_loss(output: DetectorOutput, targets: list[Targets], reg_max: int, class_offset: int = 0,
             n_classes: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """GFL's training loss over a batch, and EGOR's balancing factor.

    ``class_offset``/``n_classes`` restrict the loss to logit columns
    ``[class_offset, class_offset + n_classes)`` (EGOR's new-class loss on new logits only);
    target labels are global indices inside that range.

    Returns ``({"qfl", "giou", "dfl"}, balance)``: QFL averaged over positives (at least 1);
    GIoU (x2) and DFL (x0.25) weighted per positive by its detached best class probability
    and averaged over those weights, as GFL does.
    """
    logits = output.cls_logits[..., class_offset:]
    n_classes = logits.shape[-1] if n_classes is None else n_classes
    logits = logits[..., :n_classes]
    anchors = output.anchors
    labels, gt_boxes = [], []
    for target in targets:
        assigned = atss_assign(anchors, target.boxes)
        positive = assigned >= 0
        image_labels = torch.full_like(assigned, n_classes)
        image_labels[positive] = target.labels[assigned[positive]] - class_offset
        labels.append(image_labels)
        gt_boxes.append(target.boxes[assigned.clamp(min=0)] if target.boxes.numel() else
                        anchors.boxes.new_zeros(anchors.boxes.shape))
    labels, gt_boxes = torch.stack(labels), torch.stack(gt_boxes)  # (B, A), (B, A, 4)
    positive = labels < n_classes
    flat_logits = logits.reshape(-1, n_classes)
    quality = flat_logits.new_zeros(flat_logits.shape[0])
    zero = flat_logits.sum() * 0
    losses = {"giou": zero, "dfl": zero}
    if positive.any():
        batch_index, anchor_index = positive.nonzero(as_tuple=True)
        strides = anchors.strides[anchor_index][:, None]
        centers = anchors.centers[anchor_index] / strides
        reg = output.reg_logits[batch_index, anchor_index]
        pred_boxes = distance_to_box(centers, integral(reg, reg_max))
        target_boxes = gt_boxes[batch_index, anchor_index] / strides
        quality[positive.reshape(-1).nonzero(as_tuple=True)[0]] = aligned_iou(pred_boxes.detach(), target_boxes)
        weight = logits[batch_index, anchor_index].detach().sigmoid().max(dim=1).values
        normaliser = weight.sum().clamp(min=1e-6)
        losses["giou"] = GIOU_WEIGHT * (giou_loss(pred_boxes, target_boxes) * weight).sum() / normaliser
        side_targets = box_to_distance(centers, target_boxes, reg_max).reshape(-1)
        dfl = distribution_focal_loss(reg.reshape(-1, reg_max + 1), side_targets)
        losses["dfl"] = DFL_WEIGHT * (dfl * weight.repeat_interleave(4)).sum() / (4 * normaliser)
    qfl, balance = quality_focal_loss(flat_logits, labels.reshape(-1), quality)
    losses["qfl"] = QFL_WEIGHT * qfl.sum() / max(int(positive.sum()), 1)
    return losses, balance


def decode_boxes(output: DetectorOutput, reg_max: int) -> torch.Tensor:
    """Predicted boxes ``(B, A, 4)`` in pixels, clipped to the input."""
    batch, n_anchors = output.reg_logits.shape[:2]
    distances = integral(output.reg_logits.reshape(batch * n_anchors, -1), reg_max).reshape(batch, n_anchors, 4)
    distances = distances * output.anchors.strides[None, :, None]
    centers = output.anchors.centers.expand(batch, -1, -1).reshape(-1, 2)
    return distance_to_box(centers, distances.reshape(-1, 4), output.image_shape).reshape(batch, n_anchors, 4)


@torch.no_grad()
def predict(output: DetectorOutput, reg_max: int, score_threshold: float = 0.05, iou_threshold: float = 0.6,
            max_detections: int = 100, pre_nms: int = 1000) -> list[Detections]:
    """GFL's inference (MMDetection's ``filter_scores_and_topk``): per level, the (anchor, class)
    pairs scoring above the threshold, at most ``pre_nms`` of them by score; then class-aware
    NMS over all levels and the ``max_detections`` best boxes per image."""
    boxes = decode_boxes(output, reg_max)
    scores = output.cls_logits.sigmoid()
    n_classes = scores.shape[-1]
    results = []
    for image in range(scores.shape[0]):
        anchor_ids, labels, start = [], [], 0
        for size in output.anchors.level_sizes:
            level = scores[image, start:start + size].reshape(-1)
            candidates = (level > score_threshold).nonzero().flatten()
            candidates = candidates[level[candidates].topk(min(pre_nms, candidates.numel())).indices]
            anchor_ids.append(candidates // n_classes + start)
            labels.append(candidates % n_classes)
            start += size
        anchor_ids, labels = torch.cat(anchor_ids), torch.cat(labels)
        candidate_boxes, candidate_scores = boxes[image, anchor_ids], scores[image, anchor_ids, labels]
        keep = batched_nms(candidate_boxes, candidate_scores, labels, iou_threshold)[:max_detections]
        results.append(Detections(candidate_boxes[keep], candidate_scores[keep], labels[keep]))
    return results
