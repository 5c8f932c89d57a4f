"""PodNet: POD-spatial and POD-flat, the local similarity classifier, the NCA loss, the adaptive weight, exemplars."""

import math

import pytest
import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.incremental import class_splits, train_incremental
from methods.cl.podnet import (
    LocalSimilarityClassifier,
    adaptive_factor,
    build,
    nca_loss,
    pod_flat_loss,
    pod_spatial_loss,
    pod_spatial_vectors,
)
from tests.methods.cl.test_etag import FAST, templates


def test_pod_spatial_equals_a_hand_computation_and_is_zero_for_equal_maps():
    # One image, one channel, 2 x 2 maps.
    new = torch.tensor([[[[1.0, 2.0], [3.0, 0.0]]]])
    old = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]])
    # Squared: new [[1, 4], [9, 0]] -> summed over the width (per row) [5, 9], over the height (per column) [10, 4].
    vector = torch.tensor([5.0, 9.0, 10.0, 4.0])
    torch.testing.assert_close(pod_spatial_vectors(new)[0], vector / vector.norm())
    old_vector = torch.tensor([1.0, 4.0, 1.0, 4.0])  # squared old [[1, 0], [0, 4]]
    by_hand = (vector / vector.norm() - old_vector / old_vector.norm()).norm()
    assert pod_spatial_loss([new], [old]).item() == pytest.approx(by_hand.item(), rel=1e-6)
    # Two stages: the mean of the stages' distances; equal maps give exactly zero.
    assert pod_spatial_loss([new, new], [old, new]).item() == pytest.approx(by_hand.item() / 2, rel=1e-6)
    maps = [torch.randn(3, 4, 5, 6), torch.randn(3, 2, 3, 3)]
    assert pod_spatial_loss(maps, [m.clone() for m in maps]).item() == 0.0
    # Pooled, not pixel-wise: moving activation along a row (same row sums, same column sums) costs nothing.
    swapped = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert pod_spatial_loss([swapped], [swapped.flip(3)]).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError):
        pod_spatial_loss([new], [torch.zeros(1, 1, 2, 3)])


def test_pod_flat_is_one_minus_the_cosine():
    new, old = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    assert pod_flat_loss(new, old).item() == pytest.approx((1.0 + 0.0) / 2)


def test_lsc_output_is_the_softmax_weighted_cosine_over_proxies():
    classifier = LocalSimilarityClassifier(dim=2, n_classes=2, proxies=2)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0],      # class 0's proxies
                                              [-1.0, 0.0], [1.0, 1.0]]))   # class 1's proxies
        classifier.scale.fill_(3.0)
    h = torch.tensor([[2.0, 0.0]])  # cosines: class 0 -> (1, 0), class 1 -> (-1, 1/sqrt 2)

    def weighted(s):
        s = torch.tensor(s)
        return float((torch.softmax(s, 0) * s).sum())

    expected = torch.tensor([[weighted([1.0, 0.0]), weighted([-1.0, 1 / math.sqrt(2)])]])
    torch.testing.assert_close(classifier.similarities(h), expected)
    torch.testing.assert_close(classifier(h), 3.0 * expected)
    assert classifier(torch.randn(7, 2)).shape == (7, 2)


def test_nca_loss_with_margin_on_a_tiny_case():
    similarities = torch.tensor([[0.9, 0.2, -0.1], [0.1, 0.5, 0.4]])
    labels = torch.tensor([0, 2])
    eta, delta = 2.0, 0.6
    row0 = -eta * (0.9 - delta) + math.log(math.exp(eta * 0.2) + math.exp(eta * -0.1))
    row1 = -eta * (0.4 - delta) + math.log(math.exp(eta * 0.1) + math.exp(eta * 0.5))
    assert nca_loss(similarities, labels, eta, delta).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # The margin acts on the true class only: each unit of margin costs exactly eta per row.
    assert (nca_loss(similarities, labels, eta, delta) - nca_loss(similarities, labels, eta, 0.0)).item() == \
        pytest.approx(eta * delta, rel=1e-6)
    # The positive is left out of the denominator: it differs from the softmax cross-entropy.
    ce = F.cross_entropy(eta * (similarities - delta * F.one_hot(labels, 3)), labels)
    assert nca_loss(similarities, labels, eta, delta).item() < ce.item()
    with pytest.raises(ValueError):
        nca_loss(similarities[:, :1], torch.tensor([0, 0]), eta)


def test_adaptive_lambda():
    assert adaptive_factor(5, 5) == 0.0  # first task: nothing to distil
    assert adaptive_factor(60, 10) == pytest.approx(math.sqrt(6))
    assert adaptive_factor(100, 25) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        adaptive_factor(3, 5)


def test_exemplars_distillation_and_balanced_finetuning_on_three_tiny_tasks():
    x, y = templates(6, 24, seed=5)
    tx, ty = templates(6, 4, seed=6)
    torch.manual_seed(5)
    learner = build(6, 4, 3, generator=torch.Generator().manual_seed(5), optim=FAST, proxies=3, finetune_epochs=2)
    result = train_incremental(learner, x, y, tx, ty, class_splits(6, 2, 2), epochs=2, batch_size=16)
    assert result.task_accuracy[0, 0] > 50.0
    # 20 herded images per class of every seen class, from the training set.
    assert learner.stored_exemplars == 6 * 20 == len(learner.memory)
    assert torch.equal(torch.bincount(learner.memory.y, minlength=6), torch.full((6,), 20))
    phases = [(h["task"], h["phase"]) for h in learner.history]
    assert phases == [(0, "network")] * 2 + [(1, "network")] * 2 + [(1, "finetune")] * 2 + \
        [(2, "network")] * 2 + [(2, "finetune")] * 2
    assert {"lsc", "spatial", "flat"} <= set(learner.history[-3]) and learner.history[-3]["spatial"] > 0
    # The adaptive weight of the last task: 6 seen, 2 new.
    assert learner.factor == pytest.approx(math.sqrt(3))


def test_distillation_is_zero_while_the_network_equals_the_old_model_and_finetuning_moves_only_the_lsc():
    x, y = templates(4, 24, seed=7)
    torch.manual_seed(7)
    learner = build(4, 4, 3, generator=torch.Generator().manual_seed(7), optim=FAST, proxies=2, finetune_epochs=1)
    learner.begin_task(0, (0, 1))
    first = y < 2
    task_x, task_y = learner.training_set(x[first], y[first])
    learner.train_step(task_x[:16], task_y[:16])
    learner.end_task(lambda: iter([]), last=False)
    assert learner.stored_exemplars == 40
    learner.begin_task(1, (2, 3))
    task_x, task_y = learner.training_set(x[~first], y[~first])
    assert len(task_y) == 48 + 40 and set(task_y[48:].tolist()) == {0, 1}  # the memory joins the task's rows
    learner.net.eval()
    with torch.no_grad():
        maps, embeddings = learner.net.stage_outputs(task_x)
        old_maps, old_embeddings = learner.old_net.stage_outputs(task_x)
    assert len(maps) == 4 and pod_spatial_loss(maps, old_maps).item() == 0.0
    assert pod_flat_loss(embeddings, old_embeddings).item() == pytest.approx(0.0, abs=1e-6)
    terms = learner.losses(task_x[:16], task_y[:16])
    learner.net.zero_grad(set_to_none=True)
    (terms["spatial"] + terms["flat"]).backward()
    assert learner.net.backbone.conv1.weight.grad.abs().sum() > 0 and learner.net.classifier.weight.grad is None
    learner.train_step(task_x[:16], task_y[:16])
    backbone = {k: v.clone() for k, v in learner.net.backbone.state_dict().items()}
    proxies = learner.net.classifier.weight.detach().clone()
    learner.end_task(lambda: iter([]), last=True)
    assert all(torch.equal(v, learner.net.backbone.state_dict()[k]) for k, v in backbone.items())
    assert not torch.equal(proxies, learner.net.classifier.weight)
    assert learner.stored_exemplars == 80
