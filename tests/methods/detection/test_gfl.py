"""GFL's losses and the box geometry against hand-computed values."""

import math

import pytest
import torch

from methods.detection.boxes import aligned_iou, batched_nms, box_iou, giou_loss, nms, roi_align
from methods.detection.gfl import distribution_focal_loss, integral, quality_focal_loss


def _bce(logit, target):
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_quality_focal_loss_matches_the_formula_and_returns_the_balance():
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    labels = torch.tensor([1, 2])  # anchor 0 positive for class 1 with IoU 0.7; anchor 1 negative (2 = background)
    quality = torch.tensor([0.7, 0.0])
    loss, balance = quality_focal_loss(logits, labels, quality, beta=2.0)
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected0 = _bce(0.5, 0.0) * s(0.5) ** 2 + _bce(-1.0, 0.7) * abs(0.7 - s(-1.0)) ** 2
    expected1 = _bce(2.0, 0.0) * s(2.0) ** 2 + _bce(0.0, 0.0) * s(0.0) ** 2
    assert loss.tolist() == pytest.approx([expected0, expected1], rel=1e-5)
    assert float(balance) == pytest.approx(abs(0.7 - s(-1.0)), rel=1e-5)


def test_quality_focal_loss_without_positives_has_zero_balance():
    _, balance = quality_focal_loss(torch.zeros(3, 4), torch.full((3,), 4), torch.zeros(3))
    assert float(balance) == 0.0


def test_distribution_focal_loss_splits_the_cross_entropy_between_the_two_bins():
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.5]])
    log_p = torch.log_softmax(logits, dim=1)[0]
    loss = distribution_focal_loss(logits, torch.tensor([1.25]))
    assert float(loss) == pytest.approx(-(0.75 * float(log_p[1]) + 0.25 * float(log_p[2])), rel=1e-6)


def test_integral_is_the_expected_bin():
    logits = torch.full((1, 4 * 5), -1e4)
    logits[0, [2, 5 + 4, 10 + 0, 15 + 1]] = 0.0  # one-hot at 2, 4, 0, 1
    assert integral(logits, 4).tolist() == [[2.0, 4.0, 0.0, 1.0]]


def test_iou_and_giou_of_known_boxes():
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[1.0, 1, 3, 3]])
    assert float(box_iou(a, b)) == pytest.approx(1 / 7)
    assert float(aligned_iou(a, b)) == pytest.approx(1 / 7)
    # enclosing box 3 x 3 = 9, union 7: GIoU = 1/7 - 2/9
    assert float(giou_loss(a, b)) == pytest.approx(1 - (1 / 7 - 2 / 9))
    assert float(giou_loss(a, a)) == pytest.approx(0.0, abs=1e-6)


def test_nms_keeps_the_best_of_overlapping_boxes_and_batched_nms_respects_classes():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1, 2]


def test_roi_align_averages_a_linear_ramp_exactly():
    # feature value = x coordinate of the pixel centre (x + 0.5); bilinear sampling of a ramp is exact
    feature = (torch.arange(16.0) + 0.5).expand(1, 1, 16, 16).contiguous()
    out = roi_align(feature, torch.tensor([[2.0, 2.0, 8.0, 8.0]]), torch.tensor([0]), 3, 1.0)
    assert out.shape == (1, 1, 3, 3)
    assert out[0, 0, 0].tolist() == pytest.approx([3.0, 5.0, 7.0], abs=1e-5)  # bin centres at x = 3, 5, 7
