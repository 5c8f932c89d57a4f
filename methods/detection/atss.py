"""Anchors and the ATSS label assignment (Zhang et al., CVPR 2020, arXiv 1912.02424) that GFL trains with.

One square anchor per feature-map location and level (GFL's config: octave scale 8,
ratio 1, so an anchor of side ``8 * stride``), centred on the location. ATSS picks, for
each ground-truth box, the ``topk`` anchors of every level whose centres lie closest to
the box centre, and keeps those whose IoU is at least the mean plus the standard
deviation of the candidates' IoUs and whose centre lies inside the box; an anchor claimed
by several boxes goes to the one it overlaps most.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.detection.boxes import box_iou


@dataclass
class AnchorGrid:
    """The anchors of all levels of one input size, concatenated level after level.

    Attributes
    ----------
    boxes : (A, 4) tensor
        Anchor boxes in pixels.
    centers : (A, 2) tensor
        Their centres ``(x, y)`` in pixels.
    strides : (A,) tensor
        The stride of each anchor's level, pixels.
    level_sizes : list of int
        Anchors per level, in level order (sums to A).
    """

    boxes: torch.Tensor
    centers: torch.Tensor
    strides: torch.Tensor
    level_sizes: list[int]


def anchor_grid(feature_shapes: list[tuple[int, int]], strides: list[int], octave_scale: float = 8.0,
                device: torch.device | str = "cpu") -> AnchorGrid:
    """Anchors for feature maps of ``feature_shapes[l] = (H_l, W_l)`` at ``strides[l]`` pixels.

    Location ``(i, j)`` of level ``l`` is centred at ``((j + 0.5) s, (i + 0.5) s)`` with an
    anchor of side ``octave_scale * s``, row-major, matching the head's flattened outputs.
    """
    boxes, centers, all_strides, sizes = [], [], [], []
    for (height, width), stride in zip(feature_shapes, strides, strict=True):
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        center = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=-1)
        half = octave_scale * stride / 2
        boxes.append(torch.cat([center - half, center + half], dim=-1))
        centers.append(center)
        all_strides.append(torch.full((height * width,), float(stride), device=device))
        sizes.append(height * width)
    return AnchorGrid(torch.cat(boxes), torch.cat(centers), torch.cat(all_strides), sizes)


def atss_assign(anchors: AnchorGrid, gt_boxes: torch.Tensor, topk: int = 9) -> torch.Tensor:
    """The ground-truth index of each anchor, ``(A,)`` long, ``-1`` for background.

    Parameters
    ----------
    anchors : AnchorGrid
    gt_boxes : (G, 4) tensor
        Boxes of one image in pixels (crowd boxes removed beforehand).
    topk : int
        Candidates per level and box (9 in GFL).
    """
    n_anchors = anchors.boxes.shape[0]
    assigned = torch.full((n_anchors,), -1, dtype=torch.long, device=anchors.boxes.device)
    if gt_boxes.numel() == 0:
        return assigned
    ious = box_iou(anchors.boxes, gt_boxes)  # (A, G)
    gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    distances = torch.cdist(anchors.centers, gt_centers)  # (A, G)
    candidates, start = [], 0
    for size in anchors.level_sizes:
        k = min(topk, size)
        candidates.append(distances[start:start + size].topk(k, dim=0, largest=False).indices + start)
        start += size
    candidate_index = torch.cat(candidates, dim=0)  # (K, G)
    candidate_iou = ious.gather(0, candidate_index)
    threshold = candidate_iou.mean(0) + candidate_iou.std(0, unbiased=candidate_iou.shape[0] > 1)
    is_positive = candidate_iou >= threshold[None]
    centers = anchors.centers[candidate_index]  # (K, G, 2)
    inside = ((centers - gt_boxes[None, :, :2]).min(-1).values > 0.01) & (
        (gt_boxes[None, :, 2:] - centers).min(-1).values > 0.01)
    is_positive &= inside
    claimed = torch.full_like(ious, -1.0)
    gt_index = torch.arange(gt_boxes.shape[0], device=gt_boxes.device).expand_as(candidate_index)
    claimed[candidate_index[is_positive], gt_index[is_positive]] = ious[candidate_index[is_positive],
                                                                         gt_index[is_positive]]
    best_iou, best_gt = claimed.max(dim=1)
    assigned[best_iou >= 0] = best_gt[best_iou >= 0]
    return assigned
