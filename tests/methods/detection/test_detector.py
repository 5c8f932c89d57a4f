"""The GFL detector: ATSS assignment, training reduces the loss, inference, class expansion."""

import torch

from methods.detection.atss import anchor_grid, atss_assign
from methods.detection.detector import Targets, expand_classes, gfl_detector, gfl_loss, predict


def test_atss_assigns_anchors_inside_the_box_near_its_centre():
    anchors = anchor_grid([(8, 8), (4, 4)], [8, 16], octave_scale=4)
    box = torch.tensor([[16.0, 16.0, 48.0, 48.0]])
    assigned = atss_assign(anchors, box)
    positive = assigned == 0
    assert positive.any()
    centers = anchors.centers[positive]
    assert ((centers > 16) & (centers < 48)).all()
    assert atss_assign(anchors, torch.zeros((0, 4))).eq(-1).all()


def test_training_lowers_the_gfl_loss_and_inference_finds_the_object():
    torch.manual_seed(0)
    model = gfl_detector(3, "small", width=8)
    images = torch.rand(4, 3, 64, 64) * 0.2
    images[:, :, 16:48, 8:40] = 0.9
    targets = [Targets(torch.tensor([[8.0, 16.0, 40.0, 48.0]]), torch.tensor([2]))] * 4
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    first = None
    for _ in range(60):
        losses, _ = gfl_loss(model(images), targets, model.reg_max)
        loss = sum(losses.values())
        first = first if first is not None else float(loss.detach())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.6 * first
    model.eval()
    found = predict(model(images), model.reg_max, score_threshold=0.0)[0]
    assert int(found.labels[0]) == 2
    assert found.boxes.shape[1] == 4 and len(found.boxes) <= 100


def test_expanded_head_keeps_the_old_logits():
    torch.manual_seed(0)
    model = gfl_detector(3, "small", width=8).eval()
    bigger = expand_classes(model, 2).eval()
    images = torch.rand(2, 3, 64, 64)
    old, new = model(images), bigger(images)
    assert new.cls_logits.shape[-1] == 5
    assert torch.allclose(new.cls_logits[..., :3], old.cls_logits, atol=1e-6)
    assert torch.allclose(new.reg_logits, old.reg_logits, atol=1e-6)


def test_resnet50_matches_torchvision_names_and_freezes_the_stem():
    model = gfl_detector(80, "resnet50")
    names = set(model.backbone.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight", "layer4.2.bn3.weight"} <= names
    assert not model.backbone.conv1.weight.requires_grad and not model.backbone.layer1[0].conv1.weight.requires_grad
    assert model.backbone.layer2[0].conv1.weight.requires_grad
    model.train()
    assert not model.backbone.bn1.training  # norm_eval
    assert 31e6 < sum(p.numel() for p in model.parameters()) < 34e6  # GFL R50-FPN has about 32 M parameters
