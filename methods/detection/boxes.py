"""Box geometry for the detectors: IoU, GIoU, distance encoding, NMS and RoIAlign.

Boxes are ``(x1, y1, x2, y2)`` in pixels, float tensors of shape ``(..., 4)``. Written in
torch (torchvision's compiled ops do not load beside the pinned CPU torch), with the same
conventions as torchvision and MMDetection: areas are ``(x2 - x1) * (y2 - y1)`` (no +1),
RoIAlign samples with ``aligned=True`` (pixel centres at half-integers).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

EPS = 1e-6


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas ``(...)`` of boxes ``(..., 4)``; degenerate boxes have area 0."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of ``a (N, 4)`` and ``b (M, 4)``: ``(N, M)``."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (box_area(a)[:, None] + box_area(b)[None, :] - inter).clamp(min=EPS)


def aligned_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of each box of ``a (N, 4)`` with the box of ``b (N, 4)`` at the same index: ``(N,)``."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (box_area(a) + box_area(b) - inter).clamp(min=EPS)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Generalized-IoU loss ``1 - GIoU`` of aligned boxes ``(N, 4)``: ``(N,)`` (Rezatofighi et al., 2019).

    ``GIoU = IoU - (|C| - |A u B|) / |C|`` with ``C`` the smallest box enclosing both.
    """
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = (box_area(pred) + box_area(target) - inter).clamp(min=EPS)
    enclose = (torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])).clamp(min=0)
    enclose_area = enclose.prod(-1).clamp(min=EPS)
    return 1 - (inter / union - (enclose_area - union) / enclose_area)


def distance_to_box(points: torch.Tensor, distance: torch.Tensor, max_shape: tuple[int, int] | None = None):
    """Boxes ``(N, 4)`` from points ``(N, 2)`` and their distances ``(left, top, right, bottom)`` ``(N, 4)``.

    ``max_shape = (height, width)`` clips the boxes to the image.
    """
    boxes = torch.cat([points - distance[:, :2], points + distance[:, 2:]], dim=-1)
    if max_shape is not None:
        height, width = max_shape
        boxes = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                             boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=-1)
    return boxes


def box_to_distance(points: torch.Tensor, boxes: torch.Tensor, max_distance: float) -> torch.Tensor:
    """Distances ``(left, top, right, bottom)`` ``(N, 4)`` from points ``(N, 2)`` to box edges, in
    ``[0, max_distance - 0.01]`` (GFL's target for the distribution focal loss, its eq. 6)."""
    distance = torch.cat([points - boxes[:, :2], boxes[:, 2:] - points], dim=-1)
    return distance.clamp(min=0, max=max_distance - 0.01)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; indices ``(K,)`` of the kept boxes by decreasing score.

    A box is dropped when its IoU with a kept, higher-scoring box exceeds ``iou_threshold``.
    The overlap matrix is computed on the boxes' device; the greedy pass runs over a host
    copy of it, so a GPU tensor costs one transfer, not one synchronisation per box.
    """
    order = scores.argsort(descending=True)
    if order.numel() == 0:
        return order
    overlapping = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()
    suppressed = np.zeros(order.numel(), dtype=bool)
    keep = []
    for i in range(order.numel()):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlapping[i]
    return order[torch.as_tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float):
    """Class-aware NMS: boxes of different labels never suppress each other. Indices ``(K,)``.

    Offsets each label's boxes by more than the largest coordinate, as torchvision does.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offset = labels.to(boxes.dtype)[:, None] * (boxes.max() + 1)
    return nms(boxes + offset, scores, iou_threshold)


def roi_align(feature: torch.Tensor, boxes: torch.Tensor, batch_index: torch.Tensor, output_size: int,
              spatial_scale: float, sampling_ratio: int = 2) -> torch.Tensor:
    """RoIAlign (He et al., 2017) with ``aligned=True``: ``(R, C, output_size, output_size)``.

    Parameters
    ----------
    feature : (B, C, H, W) tensor
    boxes : (R, 4) tensor, image pixels
    batch_index : (R,) long tensor, the image of each box
    output_size : int
        Bins per side.
    spatial_scale : float
        ``1 / stride`` of ``feature``.
    sampling_ratio : int
        Bilinear samples per bin and side, averaged.

    Each bin averages ``sampling_ratio**2`` bilinear samples (``grid_sample``, zero outside).
    """
    n_rois = boxes.shape[0]
    if n_rois == 0:
        return feature.new_zeros((0, feature.shape[1], output_size, output_size))
    height, width = feature.shape[-2:]
    scaled = boxes * spatial_scale - 0.5
    steps = output_size * sampling_ratio
    fractions = (torch.arange(steps, device=feature.device, dtype=feature.dtype) + 0.5) / steps
    xs = scaled[:, 0:1] + fractions[None] * (scaled[:, 2:3] - scaled[:, 0:1])
    ys = scaled[:, 1:2] + fractions[None] * (scaled[:, 3:4] - scaled[:, 1:2])
    # grid_sample's normalised coordinates with align_corners=False: pixel centre i -> (2i + 1) / size - 1
    grid_x = (2 * xs + 1) / width - 1
    grid_y = (2 * ys + 1) / height - 1
    grid = torch.stack([grid_x[:, None, :].expand(-1, steps, -1), grid_y[:, :, None].expand(-1, -1, steps)], dim=-1)
    sampled = F.grid_sample(feature[batch_index], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(sampled, sampling_ratio)
