"""EGOR's pieces: the protocol split, inversion, replay, distillation and the evaluator."""

import numpy as np
import pytest
import torch

from methods.detection import (
    AspectRatioSampler,
    CropCycle,
    InversionConfig,
    ReplayConfig,
    class_split,
    coco_map,
    crop_objects,
    expand_classes,
    gfl_detector,
    incremental_loss,
    invert,
    non_cooccurrence_split,
    paste_objects,
)
from methods.detection.detector import Targets
from methods.detection.egor import roi_levels
from methods.detection.inversion import BatchNormStatistics, total_variation_l1


def _coco():
    images = [{"id": i, "width": 50, "height": 50} for i in range(1, 6)]
    annotations = [(1, 1), (1, 3), (2, 2), (3, 3), (4, 4), (4, 1), (5, 4)]  # (image, category)
    return {"images": images, "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3, 4)],
            "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "bbox": [1, 1, 10, 10], "area": 100,
                             "iscrowd": 0} for k, (i, c) in enumerate(annotations)]}


def test_non_cooccurrence_split_keeps_old_objects_out_of_task_two():
    coco = _coco()
    old, new = class_split(coco["categories"], 2)
    assert (old, new) == ([1, 2], [3, 4])
    task1, task2 = non_cooccurrence_split(coco, old, new)
    assert {i["id"] for i in task1["images"]} == {1, 2, 4}
    assert {a["category_id"] for a in task1["annotations"]} <= {1, 2}
    assert {i["id"] for i in task2["images"]} == {3, 5}  # image 4 holds category 1: excluded
    task2_images = {i["id"] for i in task2["images"]}
    assert not [a for a in coco["annotations"] if a["image_id"] in task2_images and a["category_id"] in old]
    with pytest.raises(ValueError):
        class_split(coco["categories"], 4)


def test_evaluator_gives_ap_100_for_perfect_and_0_for_no_predictions():
    coco = _coco()
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in coco["annotations"]]
    result = coco_map(coco, perfect)
    assert result.ap == pytest.approx(100.0) and result.ap50 == pytest.approx(100.0)
    assert result.subset([1, 2]) == pytest.approx((100.0, 100.0))
    assert coco_map(coco, []).ap == 0.0
    shifted = [dict(d, bbox=[30, 30, 10, 10]) for d in perfect]
    assert coco_map(coco, shifted).ap == 0.0



@pytest.mark.parametrize("predicted", [True, False], ids=["detections", "no-detections"])
def test_a_category_subset_without_ground_truth_is_nan_in_the_overall_ap_and_in_subset(predicted):
    coco = _coco()
    coco["categories"].append({"id": 5, "name": "5"})  # a category no image holds
    detections = [{"image_id": 1, "category_id": 5, "bbox": [1, 1, 10, 10], "score": 0.9}] if predicted else []
    result = coco_map(coco, detections, category_ids=[5])
    assert np.isnan(result.ap) and np.isnan(result.ap50) and np.isnan(result.ap75)
    assert np.isnan(result.subset([5])).all()
    with_truth = coco_map(coco, detections, category_ids=[1, 5])
    assert with_truth.ap == 0.0 and np.isnan(with_truth.per_class[5][0])

def test_aspect_ratio_sampler_draws_boxes_inside_the_size_limits():
    rng = np.random.default_rng(0)
    sampler = AspectRatioSampler({0: np.concatenate([np.linspace(0.5, 2.0, 99), [50.0]])})
    for _ in range(50):
        x1, y1, x2, y2 = sampler.sample(0, 160, rng)
        longer = max(x2 - x1, y2 - y1)
        assert 0.6 * 160 - 1e-3 <= longer <= 0.8 * 160 + 1e-3
        assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 160
        assert (x2 - x1) / (y2 - y1) <= 2.0 + 1e-6  # the 95th percentile trims the outlier 50


def test_batchnorm_hooks_and_total_variation():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4)).eval()
    with BatchNormStatistics(net) as stats:
        net(torch.randn(2, 3, 8, 8))
    assert len(stats.losses) == 2 and all(float(v.detach()) > 0 for v in stats.losses)
    assert float(total_variation_l1(torch.ones(1, 3, 5, 5))) == 0.0
    assert float(total_variation_l1(torch.rand(1, 3, 5, 5))) > 0.0


def test_inversion_lowers_its_loss_on_a_tiny_detector():
    torch.manual_seed(0)
    detector = gfl_detector(2, "small", width=8)
    with torch.no_grad():  # give the BatchNorm layers non-trivial running statistics
        detector.train()
        for _ in range(3):
            detector(torch.rand(4, 3, 32, 32))
    config = InversionConfig(iterations=40, resolution=32)
    weights_before = [p.clone() for p in detector.parameters()]
    images, history = invert(detector, torch.tensor([0, 1]), torch.tensor([[4.0, 4, 26, 28], [2, 6, 24, 26]]), config,
                             torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    assert np.mean(history[-5:]) < 0.85 * np.mean(history[:5])
    assert all(torch.equal(a, b) for a, b in zip(weights_before, detector.parameters(), strict=True))
    assert [tuple(c.shape) for c in crop_objects(images, torch.tensor([[4.0, 4, 26, 28], [2, 6, 24, 26]]))] == [
        (3, 24, 22), (3, 20, 22)]


def test_pasted_objects_keep_valid_boxes_and_respect_the_overlap_rules():
    generator = torch.Generator().manual_seed(0)
    crops = [torch.rand(3, 10 + k, 12) for k in range(5)]
    stream = iter(CropCycle(crops, [0, 1, 0, 1, 0], generator))
    image = torch.zeros(3, 64, 80)
    boxes, labels = torch.tensor([[5.0, 5, 30, 30]]), torch.tensor([3])
    config = ReplayConfig()
    for _ in range(20):
        out, all_boxes, all_labels, n = paste_objects(image, boxes, labels, stream, generator, config)
        assert n <= config.max_pastes and len(all_boxes) == 1 + n == len(all_labels)
        assert torch.equal(all_boxes[0], boxes[0]) and int(all_labels[0]) == 3
        pasted = all_boxes[1:]
        assert (pasted[:, 0] >= 0).all() and (pasted[:, 1] >= 0).all()
        assert (pasted[:, 2] <= 80).all() and (pasted[:, 3] <= 64).all()
        assert (pasted[:, 2] > pasted[:, 0]).all() and (pasted[:, 3] > pasted[:, 1]).all()
        for k, box in enumerate(pasted):
            earlier = all_boxes[:1 + k]
            wh = (torch.minimum(earlier[:, 2:], box[2:]) - torch.maximum(earlier[:, :2], box[:2])).clamp(min=0)
            inter = wh.prod(1)
            assert (inter <= 0.3 * (earlier[:, 2:] - earlier[:, :2]).prod(1) + 1e-6).all()
            assert (inter <= 0.1 * (box[2:] - box[:2]).prod() + 1e-6).all()
        assert out.min() >= 0 and out.max() <= 1
    covered = torch.tensor([[0.0, 0, 70, 60]])  # over 75% of both sides: left alone
    _, same, _, n = paste_objects(image, covered, labels, stream, generator, config)
    assert n == 0 and torch.equal(same, covered)


def test_roi_levels_follow_the_box_scale():
    boxes = torch.tensor([[0.0, 0, 40, 40], [0, 0, 112, 112], [0, 0, 224, 224], [0, 0, 2000, 2000]])
    assert roi_levels(boxes, 3, 56).tolist() == [0, 1, 2, 2]


@pytest.mark.parametrize("method", ["finetune", "distill", "egor"])
def test_incremental_losses_have_the_terms_of_each_method_and_gradients(method):
    torch.manual_seed(0)
    old = gfl_detector(2, "small", width=8).eval()
    model = expand_classes(old, 2)
    images = torch.rand(2, 3, 64, 64)
    targets = [Targets(torch.tensor([[8.0, 8, 40, 40]]), torch.tensor([3])), Targets(torch.tensor([[20.0, 4, 60, 50]]),
                                                                                  torch.tensor([2]))]
    replayed = [torch.tensor([[30.0, 30, 60, 60]]), torch.zeros((0, 4))]
    losses = incremental_loss(method, model, old, images, targets, replayed, n_old=2)
    expected = {"qfl", "giou", "dfl"} | ({"distill_logit", "distill_box"} if method != "finetune" else set()) | (
        {"distill_feature"} if method == "egor" else set())
    assert set(losses) == expected
    sum(losses.values()).backward()
    assert model.head.gfl_cls.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in old.parameters())
