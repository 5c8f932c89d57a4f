"""R-DFCIL: model inversion, relational distillation, local CE, head fine-tuning, tiny runs."""

import functools
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.incremental import class_splits, frozen_copy, train_incremental
from methods.cl.inversion import (
    InversionGenerator,
    ModelInversion,
    batchnorm_inputs,
    batchnorm_statistics_loss,
    class_balance,
    cross_entropy_over,
)
from methods.cl.rdfcil import RDFCIL, angle_relations, build, loss_weights, relation_distillation_loss
from tests.methods.cl.test_etag import FAST, templates

TINY = {"inversion_steps": 3, "inversion_batch": 8, "latent": 8, "generator_width": 8, "finetune_epochs": 1}


@functools.cache
def trained_cnn() -> nn.Module:
    """A small CNN with two batch norms, trained on 4 template classes: the frozen old model of the inversion tests.

    Cached, and built inside a test (under the one-thread fixture of tests/methods/conftest.py).
    """
    torch.manual_seed(0)
    x, y = templates(4, 16, seed=0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    optimizer = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(60):
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return frozen_copy(net)


def synthetic_summary(inversion: ModelInversion) -> tuple[torch.Tensor, float, float]:
    """Class counts (old classes 0..2) and mean confidence of the old model on 64 samples; the BN-statistics term."""
    images, labels, logits = inversion.sample(64, torch.Generator().manual_seed(6))
    torch.testing.assert_close(logits, inversion.old_net(images)[:, inversion.old_index])
    confidence = F.softmax(logits, 1).max(1).values.mean()
    inversion.generator.train()
    with torch.no_grad():
        statistics = inversion.losses(64, torch.Generator().manual_seed(5))["statistics"]
    return torch.bincount(labels, minlength=3), float(confidence), float(statistics)


# -- model inversion -----------------------------------------------------------------------------------------------

def test_generator_output_shape_for_any_image_size():
    for shape in [(3, 32, 32), (1, 8, 8), (3, 10, 6)]:
        images = InversionGenerator(shape, latent=8, hidden=8)(torch.randn(5, 8))
        assert images.shape == (5, *shape)


def test_batchnorm_statistics_loss_is_zero_iff_batch_statistics_match_running_ones():
    bn = nn.BatchNorm2d(3).eval()
    inputs = torch.randn(16, 3, 4, 4) * torch.tensor([1.0, 2.0, 0.5])[None, :, None, None] + 3
    bn.running_mean.copy_(inputs.mean((0, 2, 3)))
    bn.running_var.copy_(inputs.transpose(0, 1).flatten(1).var(1, unbiased=False))
    with batchnorm_inputs(nn.Sequential(bn, nn.ReLU())) as records:
        bn(inputs)
    assert len(records) == 1 and records[0][0] is bn
    assert batchnorm_statistics_loss(records).item() == pytest.approx(0.0, abs=1e-5)
    assert batchnorm_statistics_loss([(bn, inputs + 1)]).item() > 0.1
    assert batchnorm_statistics_loss([(bn, inputs * 2)]).item() > 0.1


def test_class_balance_is_zero_when_uniform_and_one_when_collapsed():
    assert class_balance(torch.zeros(6, 4)).item() == pytest.approx(0.0, abs=1e-6)
    collapsed = torch.full((6, 4), -50.0)
    collapsed[:, 2] = 50.0
    assert class_balance(collapsed).item() == pytest.approx(1.0, abs=1e-4)


def test_inversion_makes_the_old_model_recognise_all_old_classes():
    # Content and balance terms alone (tau = 1, no statistics term): the generator learns images that the old
    # model classifies confidently, and as each of the old classes 0..2 (never as class 3, which is not old).
    torch.manual_seed(1)
    inversion = ModelInversion(trained_cnn(), (0, 1, 2), (3, 8, 8), latent=16, hidden=8, tau=1.0, alpha_rf=0.0)
    counts, confidence, _ = synthetic_summary(inversion)
    assert (counts == 0).any()  # before: collapsed on one class
    inversion.fit(40, 32, 1e-2, torch.Generator().manual_seed(0))
    counts_after, confidence_after, _ = synthetic_summary(inversion)
    assert counts_after.sum() == 64 and (counts_after >= 64 / 3 / 2).all(), counts_after  # all old classes
    assert confidence_after > max(confidence, 0.9)  # far above chance (1/3)


def test_inversion_matches_the_old_models_batch_norm_statistics():
    torch.manual_seed(1)
    inversion = ModelInversion(trained_cnn(), (0, 1, 2), (3, 8, 8), latent=16, hidden=8)  # the published weights
    _, _, before = synthetic_summary(inversion)
    history = []
    inversion.fit(40, 32, 1e-2, torch.Generator().manual_seed(0), lambda terms, step: history.append(terms))
    _, _, after = synthetic_summary(inversion)
    assert len(history) == 40 and set(history[0]) == {"content", "balance", "prior", "statistics", "total"}
    assert after < before / 5, (before, after)
    assert all(p.grad is None for p in trained_cnn().parameters())  # the old model is never trained


# -- distillation and losses ---------------------------------------------------------------------------------------

def test_relation_distillation_is_zero_for_equal_relations_and_invariant_to_scale_and_shift():
    torch.manual_seed(2)
    features = torch.randn(7, 5)
    assert relation_distillation_loss(features, features).item() == 0.0
    assert relation_distillation_loss(3.0 * features + 2.0, features).item() == pytest.approx(0.0, abs=1e-6)
    assert relation_distillation_loss(features + 0.5 * torch.randn(7, 5), features).item() > 0.01
    angles = angle_relations(features)
    assert angles.shape == (7, 7, 7)
    a, b, c = features[1] - features[0], features[2] - features[0], features[0]  # angle at e_0 between e_1 and e_2
    assert angles[0, 1, 2].item() == pytest.approx(F.cosine_similarity(a, b, 0).item(), abs=1e-6)
    assert angles[0, 0, 2].item() == 0.0 and c.shape == (5,)


def test_local_cross_entropy_covers_only_the_given_classes():
    logits = torch.randn(4, 6, requires_grad=True)
    labels = torch.tensor([4, 5, 5, 4])
    new = torch.tensor([4, 5])
    loss = cross_entropy_over(logits, labels, new)
    assert torch.allclose(loss, F.cross_entropy(logits[:, 4:], labels - 4))
    loss.backward()
    assert (logits.grad[:, :4] == 0).all() and (logits.grad[:, 4:] != 0).all()
    with pytest.raises(ValueError, match="outside"):
        cross_entropy_over(logits, torch.tensor([0, 4, 5, 4]), new)


def test_loss_weights_by_hand():
    ce, hkd, rkd = loss_weights(4, 2, 0.5, 0.15, 0.5)  # a = log2(2) = 1, b = sqrt(2)
    assert ce == pytest.approx(0.5 * 2 / math.sqrt(2))
    assert hkd == pytest.approx(0.15 * math.sqrt(2)) and rkd == pytest.approx(0.5 * math.sqrt(2))
    with pytest.raises(ValueError):
        loss_weights(0, 2, 0.5, 0.15, 0.5)


# -- the learner ---------------------------------------------------------------------------------------------------

def learner_at_second_task(seed: int = 0) -> tuple[RDFCIL, torch.Tensor, torch.Tensor, object]:
    """A tiny R-DFCIL after task 0 (classes 0, 1) and its inversion, begun on task 1 (classes 2, 3)."""
    torch.manual_seed(seed)
    x, y = templates(4, 8, seed=seed)
    learner = build(4, 4, 3, generator=torch.Generator().manual_seed(seed), optim=FAST, **TINY)

    def batches(task):
        rows = torch.isin(y, torch.tensor(task)).nonzero().flatten()
        return lambda: iter([(x[rows], y[rows])])

    learner.begin_task(0, (0, 1))
    for _ in range(3):
        learner.train_step(*next(batches((0, 1))()))
    learner.end_task(batches((0, 1)), last=False)
    learner.begin_task(1, (2, 3))
    return learner, *next(batches((2, 3))()), batches((2, 3))


def test_relational_gradient_reaches_the_new_network_and_local_ce_spares_old_rows():
    learner, x, y, _ = learner_at_second_task()
    assert learner.old_net is not None and learner.inversion is not None
    terms = learner.losses(x, y)
    assert set(terms) == {"local", "hkd", "rkd", "total"} and terms["rkd"].item() > 0
    learner.net.zero_grad(set_to_none=True)  # no gradient left from task 0's steps
    terms["rkd"].backward(retain_graph=True)
    stem = learner.net.conv1.weight.grad
    assert stem is not None and stem.abs().sum() > 0  # RRL trains the extractor
    assert learner.relation.student.weight.grad.abs().sum() > 0
    learner.net.zero_grad(set_to_none=True)
    terms["local"].backward()
    fc = learner.net.fc.weight.grad
    assert (fc[:2] == 0).all() and (fc[2:] != 0).any()  # local CE: old classes' rows untouched
    assert all(p.grad is None for p in learner.old_net.parameters())


def test_head_fine_tuning_trains_only_the_classifier_with_balanced_weights():
    learner, x, y, batches = learner_at_second_task(seed=1)
    learner.train_step(x, y)
    counts = learner.class_counts.clone()
    assert counts[2:].sum() == len(y) and counts[:2].sum() == len(y)  # real new + as many synthetic old
    expected = counts[:4].clamp_min(1).sum() / counts[:4].clamp_min(1)
    torch.testing.assert_close(learner.balanced_weights(), expected / expected.min())
    extractor = {k: v.clone() for k, v in learner.net.state_dict().items() if not k.startswith("fc.")}
    head = learner.net.fc.weight.clone()
    learner.end_task(batches, last=True)
    after = learner.net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in extractor.items())  # parameters and BN statistics
    assert not torch.equal(head, learner.net.fc.weight)
    assert [h["phase"] for h in learner.history][-1] == "finetune"


def test_two_tiny_tasks_end_to_end():
    x, y = templates(4, 8, seed=3)
    tx, ty = templates(4, 4, seed=4)
    torch.manual_seed(3)
    learner = build(4, 4, 3, generator=torch.Generator().manual_seed(3), optim=FAST, **TINY)
    result = train_incremental(learner, x, y, tx, ty, class_splits(4, 2, 1), epochs=4, batch_size=8)
    assert result.seen_accuracy.shape == (2,) and result.task_accuracy[0, 0] > 50.0
    assert learner.logits(tx).shape == (len(tx), 4)
    phases = [h["phase"] for h in learner.history]
    assert phases == ["network"] * 4 + ["inversion"] * 3 + ["network"] * 4 + ["finetune"]
    assert {"local", "hkd", "rkd"} <= set(learner.history[-2]) and learner.stored_exemplars == 0
