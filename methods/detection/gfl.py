"""The losses of Generalized Focal Loss (Li et al., NeurIPS 2020, arXiv 2006.04388).

- Quality focal loss (QFL, eq. 5): the classification branch predicts the IoU of the box
  it would draw (a soft label ``y`` in [0, 1]) instead of a one-hot class;
  ``QFL(s) = -|y - s|^beta ((1 - y) log(1 - s) + y log s)`` with ``s = sigmoid(logit)``.
- Distribution focal loss (DFL, eq. 6): each box side is a discrete distribution over
  ``0..reg_max`` (stride units); a continuous target ``y`` between ``y_i`` and ``y_{i+1}``
  is learned as ``-((y_{i+1} - y) log S_i + (y - y_i) log S_{i+1})``.
- :func:`integral`: the expected distance ``sum_i i P(i)`` of those distributions.

EGOR's modified QFL also returns its balancing factor (docs/papers/egor.md): the mean of
``|IoU target - predicted probability|`` over the positive anchors, which scales every
distillation term by how hard the new classes currently are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def quality_focal_loss(logits: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor, beta: float = 2.0):
    """Per-anchor QFL summed over classes, and the balancing factor.

    Parameters
    ----------
    logits : (N, C) tensor
        Classification logits of N anchors.
    labels : (N,) long tensor
        Class of each positive anchor in ``0..C-1``; ``C`` (or any value outside) marks a negative.
    quality : (N,) tensor
        IoU target of each positive anchor (ignored for negatives).
    beta : float
        The focusing exponent (2 in GFL).

    Returns
    -------
    loss : (N,) tensor
        QFL summed over classes; negatives are pushed to 0 with weight ``s^beta``.
    balance : (,) tensor
        ``mean |quality - s_label|`` over positives (0 when there is none), detached.
    """
    n_classes = logits.shape[1]
    probs = logits.sigmoid()
    loss = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") * probs.pow(beta)
    positive = (labels >= 0) & (labels < n_classes)
    balance = logits.new_zeros(())
    if positive.any():
        rows = positive.nonzero(as_tuple=True)[0]
        cols = labels[rows]
        target = quality[rows].to(logits.dtype)
        gap = target - probs[rows, cols]
        positive_loss = F.binary_cross_entropy_with_logits(logits[rows, cols], target, reduction="none")
        loss = loss.index_put((rows, cols), positive_loss * gap.abs().pow(beta))
        balance = gap.detach().abs().mean()
    return loss.sum(dim=1), balance


def distribution_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DFL of side distributions ``logits (N, reg_max + 1)`` against continuous ``target (N,)``: ``(N,)``.

    ``target`` lies in ``[0, reg_max)``; the two bins around it share the cross entropy by
    their distance to it.
    """
    left = target.long()
    right = left + 1
    weight_left = right.to(target.dtype) - target
    weight_right = target - left.to(target.dtype)
    return (F.cross_entropy(logits, left, reduction="none") * weight_left
            + F.cross_entropy(logits, right, reduction="none") * weight_right)


def integral(logits: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Expected distances ``(N, 4)`` of the side distributions ``logits (N, 4 * (reg_max + 1))``."""
    bins = torch.arange(reg_max + 1, dtype=logits.dtype, device=logits.device)
    return F.softmax(logits.reshape(-1, 4, reg_max + 1), dim=-1) @ bins
