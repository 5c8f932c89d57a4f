"""ABD: local CE, head fine-tuning CE, importance-weighted feature distillation, inversion, tiny runs."""

import pytest
import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.abd import ABD, build, class_weights, importance_weighted_distillation
from methods.cl.incremental import class_splits, train_incremental
from methods.cl.inversion import ModelInversion
from tests.methods.cl.test_etag import FAST, templates

TINY = {"inversion_steps": 3, "inversion_batch": 8, "latent": 8, "generator_width": 8}


def learner_at_second_task(seed: int = 0, **hyper) -> tuple[ABD, torch.Tensor, torch.Tensor]:
    """A tiny ABD after task 0 (classes 0, 1) and its inversion, begun on task 1 (classes 2, 3)."""
    torch.manual_seed(seed)
    x, y = templates(4, 8, seed=seed)
    learner = build(4, 4, 3, generator=torch.Generator().manual_seed(seed), optim=FAST, **{**TINY, **hyper})
    first = y < 2
    learner.begin_task(0, (0, 1))
    for _ in range(3):
        learner.train_step(x[first], y[first])
    learner.end_task(lambda: iter([(x[first], y[first])]), last=False)
    learner.begin_task(1, (2, 3))
    return learner, x[~first], y[~first]


def test_class_weights_balance_old_and_new_classes():
    weights = class_weights(6, (0, 1, 2), (3,))
    torch.testing.assert_close(weights, torch.tensor([0.75, 0.75, 0.75, 0.25, 1.0, 1.0]))
    # B synthetic rows over 3 old classes and B real rows over 1 new one: every seen class weighs B / 4 in total.
    rows = 12
    assert rows / 3 * weights[0].item() == pytest.approx(rows / 1 * weights[3].item()) == pytest.approx(rows / 4)
    with pytest.raises(ValueError):
        class_weights(4, (0, 1), ())


def test_feature_distillation_is_zero_for_the_same_features_and_weighted_by_the_old_head():
    torch.manual_seed(0)
    features, head = torch.randn(5, 4), torch.randn(3, 4)
    assert importance_weighted_distillation(features, features, head).item() == 0.0
    shift = torch.randn(5, 4)
    by_hand = sum(float(((head @ shift[i]) ** 2).sum()) for i in range(5)) / 5 / 3
    assert importance_weighted_distillation(features + shift, features, head).item() == pytest.approx(by_hand)
    # A change no old logit sees (orthogonal to every old head row) costs nothing; plain feature MSE would count it.
    blind = torch.linalg.svd(head).Vh[-1]  # (4,) with head @ blind = 0
    moved = features + 2.0 * blind
    assert importance_weighted_distillation(moved, features, head).item() == pytest.approx(0.0, abs=1e-10)
    assert F.mse_loss(moved, features).item() > 0.5
    # Doubling one old class's row quadruples its share.
    one = torch.zeros(3, 4)
    one[1] = head[1]
    doubled = one.clone()
    doubled[1] *= 2
    assert importance_weighted_distillation(features + shift, features, doubled).item() == pytest.approx(
        4 * importance_weighted_distillation(features + shift, features, one).item())
    with pytest.raises(ValueError):
        importance_weighted_distillation(features, features[:, :3], head)


def test_distillation_is_zero_while_the_network_equals_the_old_model():
    learner, x, _ = learner_at_second_task()
    old = learner.inversion.old_net
    learner.net.eval()
    with torch.no_grad():
        assert importance_weighted_distillation(learner.net.features(x), old.features(x),
                                                old.fc.weight[learner.old_index]).item() == 0.0
    assert old.fc.weight.shape[0] == 4 and len(learner.old_index) == 2


def test_local_ce_spares_old_head_rows_and_the_head_ce_spares_the_extractor():
    learner, x, y = learner_at_second_task()
    terms = learner.losses(x, y)
    assert set(terms) == {"local", "head", "kd", "total"} and terms["kd"].item() > 0
    net = learner.net
    net.zero_grad(set_to_none=True)
    terms["local"].backward(retain_graph=True)
    fc = net.fc.weight.grad
    assert (fc[:2] == 0).all() and (net.fc.bias.grad[:2] == 0).all()  # real data never touches old rows here
    assert (fc[2:] != 0).any() and net.conv1.weight.grad.abs().sum() > 0
    net.zero_grad(set_to_none=True)
    terms["head"].backward(retain_graph=True)
    assert net.conv1.weight.grad is None  # gradient stop: the head CE trains the head alone ...
    assert (net.fc.weight.grad[:2] != 0).any()  # ... on all classes, the old ones through synthetic rows
    net.zero_grad(set_to_none=True)
    terms["kd"].backward()
    assert net.fc.weight.grad is None and net.conv1.weight.grad.abs().sum() > 0  # KD moves features only
    assert all(p.grad is None for p in learner.inversion.old_net.parameters())


def test_losses_equal_their_definitions_by_hand():
    learner, x, y = learner_at_second_task(seed=1)
    state = learner.generator.get_state()
    terms = learner.losses(x, y)
    learner.generator.set_state(state)
    synthetic, synthetic_labels, _ = learner.inversion.sample(len(y), learner.generator)
    assert set(synthetic_labels.tolist()) <= {0, 1}
    both, labels = torch.cat([x, synthetic]), torch.cat([y, synthetic_labels])
    with torch.no_grad():
        logits = learner.net(both)  # train mode, as in losses: the same batch statistics
    w = torch.tensor([0.5, 0.5, 0.5, 0.5])  # 2 old and 2 new of 4 seen classes
    local = (w[y] * F.cross_entropy(logits[:len(y), 2:], y - 2, reduction="none")).mean()
    head = (w[labels] * F.cross_entropy(logits, labels, reduction="none")).mean()
    torch.testing.assert_close(terms["local"].detach(), local, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms["head"].detach(), head, rtol=1e-4, atol=1e-5)


def test_inversion_images_are_classified_as_their_sampled_old_class_by_the_old_model():
    # A tiny ABD learns 3 template classes, then inverts its network (published loss weights).
    torch.manual_seed(2)
    x, y = templates(4, 16, seed=2)
    learner = build(4, 4, 3, generator=torch.Generator().manual_seed(2), optim=FAST, inversion_steps=60,
                    inversion_batch=32, inversion_lr=1e-2, latent=16, generator_width=16)
    first = y < 3
    learner.begin_task(0, (0, 1, 2))
    for _ in range(40):
        learner.train_step(x[first], y[first])
    learner.end_task(lambda: iter([(x[first], y[first])]), last=False)
    inversion = learner.inversion
    images, labels, logits = inversion.sample(90, torch.Generator().manual_seed(3))
    with torch.no_grad():
        old = inversion.old_net(images)
    assert torch.equal(labels, old[:, :3].argmax(1))  # each image's label is the old model's old-class argmax
    confidence = F.softmax(old[:, :3], 1).max(1).values
    assert confidence.mean() > 0.9, confidence.mean()
    counts = torch.bincount(labels, minlength=4)
    assert counts[3] == 0 and (counts[:3] >= 90 / 3 / 3).all(), counts  # every old class, never a new one
    torch.manual_seed(2)  # an untrained generator of the same shape, against the same old model: far less so
    untrained = ModelInversion(inversion.old_net, (0, 1, 2), (3, 8, 8), latent=16, hidden=16)
    _, _, before = untrained.sample(90, torch.Generator().manual_seed(3))
    assert F.softmax(before, 1).max(1).values.mean() < confidence.mean() - 0.2
    # The next task's inversion continues the same generator (ABD keeps one across tasks).
    generator = inversion.generator
    learner.begin_task(1, (3,))
    learner.train_step(x[~first], y[~first])
    learner.end_task(lambda: iter([(x[~first], y[~first])]), last=False)
    assert learner.inversion.generator is generator and learner.inversion.old_net is not inversion.old_net
    assert learner.inversion.old_index.tolist() == [0, 1, 2, 3]


def test_two_tiny_tasks_end_to_end():
    x, y = templates(4, 8, seed=3)
    tx, ty = templates(4, 4, seed=4)
    torch.manual_seed(3)
    learner = build(4, 4, 3, generator=torch.Generator().manual_seed(3), optim=FAST, **TINY)
    result = train_incremental(learner, x, y, tx, ty, class_splits(4, 2, 1), epochs=4, batch_size=8)
    assert result.seen_accuracy.shape == (2,) and result.task_accuracy[0, 0] > 50.0
    phases = [h["phase"] for h in learner.history]
    assert phases == ["network"] * 4 + ["inversion"] * 3 + ["network"] * 4
    assert {"local", "head", "kd"} <= set(learner.history[-1]) and learner.stored_exemplars == 0
