"""eTag and the exemplar-free class-incremental protocol: splits, metrics, losses, networks, tiny runs."""

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import ResNet, count_parameters
from methods.cl.er import Augmentation
from methods.cl.etag import (
    CHANNEL_ORDERS,
    SELF_SUPERVISION,
    AuxiliaryResNet,
    ETag,
    FeatureCVAE,
    aux_distillation,
    build,
    channel_permutation_batch,
    distill_kl,
    feature_distance,
    generator_loss,
    incremental_loss,
    jigsaw_batch,
    rotate_batch,
    table_c6_parameters,
    task0_loss,
)
from methods.cl.exemplar_free import FineTune, LwF, soft_cross_entropy
from methods.cl.incremental import (
    AdamSchedule,
    IncrementalResult,
    average_incremental_accuracy,
    class_splits,
    evaluate_seen,
    old_task_factor,
    train_incremental,
)

FAST = AdamSchedule(lr=5e-3)


def templates(n_classes: int, per_class: int, seed: int, side: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy copies of one fixed random 3 x side x side template per class (separable, rotation-distinguishable)."""
    base = torch.randn(n_classes, 3, side, side, generator=torch.Generator().manual_seed(1234))
    noise = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return base[labels] + 0.3 * torch.randn(len(labels), 3, side, side, generator=noise), labels


def tiny_etag(n_classes: int = 6, seed: int = 0, generator_epochs: int = 2, **switches) -> ETag:
    """A width-4, one-block-per-stage eTag (or, with ``switches``, an ablation variant) with a small generator."""
    torch.manual_seed(seed)
    copies = SELF_SUPERVISION[switches.get("self_supervision", "rotation")][1]
    net = AuxiliaryResNet(n_classes, width=4, blocks=(1, 1, 1, 1), transforms=copies)
    return ETag(net, generator=torch.Generator().manual_seed(seed), generator_epochs=generator_epochs, optim=FAST,
                generator_lr=1e-3, synthetic_batch=16, hidden=16, latent=8, **switches)


# -- protocol ------------------------------------------------------------------------------------------------------

def test_class_splits_first_task_then_equal_tasks():
    assert class_splits(10, 4, 3) == [(0, 1, 2, 3), (4, 5), (6, 7), (8, 9)]
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert class_splits(10, 4, 3, order) == [(9, 8, 7, 6), (5, 4), (3, 2), (1, 0)]
    equal = class_splits(100, 25, 3)
    assert [len(task) for task in equal] == [25] * 4 and sorted(sum(equal, ())) == list(range(100))
    assert [len(task) for task in class_splits(100, 50, 25)] == [50] + [2] * 25
    assert class_splits(5, 5, 0) == [(0, 1, 2, 3, 4)]
    with pytest.raises(ValueError, match="equal tasks"):
        class_splits(10, 4, 4)
    with pytest.raises(ValueError, match="permutation"):
        class_splits(4, 2, 1, [0, 1, 1, 2])
    with pytest.raises(ValueError, match="first task"):
        class_splits(4, 0, 2)


def test_old_task_factor_matches_the_code_on_the_paper_splits():
    # The code: F = nb_cl_fg // per_task + t - 1 at task t.
    for first, n_tasks in [(50, 5), (50, 10), (50, 25), (25, 3), (10, 9)]:
        splits = class_splits(100, first, n_tasks)
        per_task = (100 - first) // n_tasks
        for t in range(1, n_tasks + 1):
            n_old = sum(len(task) for task in splits[:t])
            assert old_task_factor(n_old, len(splits[t])) == first // per_task + t - 1
    assert old_task_factor(50, 10) == 5 and old_task_factor(25, 25) == 1
    learner = tiny_etag()
    for t, classes in enumerate(class_splits(6, 2, 2)):
        learner.begin_task(t, classes)
        assert learner.factor == [0, 1, 2][t]
        assert learner.old_classes == tuple(range(2 * t))


def test_average_incremental_accuracy_and_forgetting_by_hand():
    assert average_incremental_accuracy([80.0, 60.0, 40.0]) == pytest.approx(60.0)
    nan = np.nan
    result = IncrementalResult(np.array([90.0, 70.0, 50.0]),
                               np.array([[90.0, nan, nan], [60.0, 80.0, nan], [40.0, 70.0, 50.0]]), 1.0, 0.1)
    assert result.average_incremental_accuracy == pytest.approx(70.0)
    assert result.forgetting == pytest.approx(((90 - 40) + (80 - 70)) / 2)


def test_evaluate_seen_restricts_the_argmax_to_seen_classes():
    # Each "image" carries the logits the model outputs for it.
    logits = torch.tensor([[5.0, 0.0, 0.0, 9.0],   # class 0: best seen is 0, best overall the unseen 3
                           [0.0, 5.0, 1.0, 0.0],   # class 1: right
                           [0.0, 3.0, 2.0, 0.0],   # class 2: predicted 1
                           [0.0, 0.0, 0.0, 1.0]])  # class 3: not seen after step 1
    labels = torch.arange(4)
    splits = [(0, 1), (2,), (3,)]
    seen, per_task = evaluate_seen(lambda x: x, logits, labels, splits, 1)
    assert seen == pytest.approx(100 * 2 / 3)
    np.testing.assert_allclose(per_task, [100.0, 0.0, np.nan])
    seen_all, _ = evaluate_seen(lambda x: x, logits, labels, splits, 1, restrict_to_seen=False)
    assert seen_all == pytest.approx(100 / 3)


# -- network and generator -----------------------------------------------------------------------------------------

def test_rotate_batch_pixels_and_labels():
    x = torch.arange(8.0).view(2, 1, 2, 2)  # image 0: [[0, 1], [2, 3]]
    x4, y4 = rotate_batch(x, torch.tensor([3, 5]))
    assert x4.shape == (8, 1, 2, 2)
    assert torch.equal(x4[:2], x)
    assert torch.equal(x4[2, 0], torch.tensor([[1.0, 3.0], [0.0, 2.0]]))  # 90 degrees counter-clockwise
    assert torch.equal(x4[4, 0], torch.tensor([[3.0, 2.0], [1.0, 0.0]]))  # 180 degrees
    assert torch.equal(x4[6, 0], torch.tensor([[2.0, 0.0], [3.0, 1.0]]))  # 270 degrees
    assert y4.tolist() == [12, 20, 13, 21, 14, 22, 15, 23]
    with pytest.raises(ValueError, match="square"):
        rotate_batch(torch.zeros(1, 1, 2, 3), torch.zeros(1, dtype=torch.long))


def test_auxiliary_resnet_outputs():
    net = AuxiliaryResNet(5, width=4)
    logits, features, aux = net(torch.randn(3, 3, 16, 16))
    assert logits.shape == (3, 5) and features.shape == (3, 32)
    assert len(aux) == 4 and all(a.shape == (3, 20) for a in aux)
    net.eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(net.classify(net.features(x)), net(x)[0], atol=1e-6)


def test_parameter_counts_match_table_c6():
    net = AuxiliaryResNet(100)  # width 64, CIFAR stem
    assert count_parameters(net.backbone) == 11_220_132  # Joint/Fine: 11.22 M
    assert round(count_parameters(net.backbone) / 1e6, 2) == 11.22
    total = table_c6_parameters(net, FeatureCVAE(512, 100))
    assert total == 43_203_044 and round(total / 1e6, 2) == 43.20  # eTag: 43.20 M
    assert count_parameters(net) == 51_388_388  # with the fourth head the code trains


def test_feature_cvae_shapes():
    cvae = FeatureCVAE(512, 100)
    encoder = [m for m in cvae.encoder if isinstance(m, nn.Linear)]
    decoder = [m for m in cvae.decoder if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in encoder] == [(612, 512), (512, 512)]
    assert (cvae.mu.in_features, cvae.mu.out_features) == (512, 200) == (cvae.logvar.in_features,
                                                                          cvae.logvar.out_features)
    assert [(m.in_features, m.out_features) for m in decoder] == [(300, 512), (512, 512), (512, 512)]
    assert isinstance(cvae.decoder[-1], nn.ReLU) and sum(isinstance(m, nn.ReLU) for m in cvae.decoder) == 3
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 7, 99, 7])
    fake = cvae.generate(labels, generator)
    assert fake.shape == (4, 512) and (fake >= 0).all()
    recon, mu, logvar = cvae(torch.rand(4, 512), labels, generator)
    assert recon.shape == (4, 512) and mu.shape == logvar.shape == (4, 200)


# -- losses --------------------------------------------------------------------------------------------------------

def test_task0_loss_sums_main_and_auxiliary_ce():
    logits, labels = torch.randn(3, 5), torch.tensor([0, 4, 2])
    aux = [torch.randn(12, 20) for _ in range(4)]
    rotated_labels = rotate_batch(torch.zeros(3, 1, 2, 2), labels)[1]
    terms = task0_loss(logits, labels, aux, rotated_labels)
    expected_aux = sum(F.cross_entropy(a, rotated_labels) for a in aux)
    assert torch.allclose(terms["aux"], expected_aux)
    assert torch.allclose(terms["total"], F.cross_entropy(logits, labels) + expected_aux)


def test_kd_uses_tau_squared_and_only_the_first_three_heads():
    torch.manual_seed(0)
    aux = [torch.randn(8, 12) for _ in range(4)]
    old = [torch.randn(8, 12) for _ in range(4)]
    tau = 3.0
    by_hand = sum((F.softmax(o / tau, 1) * (F.log_softmax(o / tau, 1) - F.log_softmax(a / tau, 1))).sum(1).mean()
                  for a, o in zip(aux[:3], old[:3])) * tau ** 2
    assert torch.allclose(aux_distillation(aux, old, tau), by_hand)
    plain = F.kl_div(F.log_softmax(aux[0] / tau, 1), F.softmax(old[0] / tau, 1), reduction="batchmean")
    assert torch.allclose(distill_kl(aux[0], old[0], tau), 9 * plain)
    moved = aux[:3] + [aux[3] + 10 * torch.randn(8, 12)]
    assert torch.equal(aux_distillation(moved, old, tau), aux_distillation(aux, old, tau))
    assert not torch.allclose(aux_distillation([aux[0] + 1 * torch.randn(8, 12)] + aux[1:], old, tau),
                              aux_distillation(aux, old, tau))


def test_feature_distance_is_unsquared():
    old = torch.zeros(4, 6)
    new = old.clone()
    new[1, :2] = torch.tensor([3.0, 4.0])
    assert feature_distance(new, old).item() == pytest.approx(5.0)
    assert feature_distance(2 * new, old).item() == pytest.approx(10.0)  # linear, not quadratic


def test_incremental_loss_weights_by_old_task_factor():
    torch.manual_seed(1)
    logits, labels = torch.randn(4, 6), torch.tensor([4, 5, 4, 5])
    synthetic, synthetic_labels = torch.randn(16, 6), torch.randint(0, 4, (16,))
    aux = [torch.randn(16, 24) for _ in range(4)]
    aux_old = [torch.randn(16, 24) for _ in range(4)]
    features, old_features = torch.randn(16, 8), torch.randn(16, 8)
    factor, tradeoff = 3.0, 0.5
    terms = incremental_loss(logits, labels, synthetic, synthetic_labels, aux, aux_old, features, old_features,
                             factor=factor, tradeoff=tradeoff)
    assert torch.allclose(terms["current"], F.cross_entropy(logits, labels) / 4)
    assert torch.allclose(terms["old"], F.cross_entropy(synthetic, synthetic_labels) * 3 / 4)
    assert torch.allclose(terms["kd"], tradeoff * factor * aux_distillation(aux, aux_old, 3.0))
    assert torch.allclose(terms["feature"], tradeoff * factor * torch.linalg.norm(features - old_features))
    parts = terms["current"] + terms["old"] + terms["kd"] + terms["feature"]
    assert torch.allclose(terms["total"], parts)


def test_generator_distillation_vanishes_for_the_same_generator():
    torch.manual_seed(2)
    cvae = FeatureCVAE(8, 5, hidden=16, latent=4)
    previous = copy.deepcopy(cvae)
    features, labels = torch.rand(6, 8), torch.tensor([3, 4, 3, 4, 3, 4])
    recon, mu, logvar = cvae(features, labels)
    old_labels = torch.tensor([0, 1, 2, 0])
    z = cvae.sample_latent(4)
    head = nn.Linear(8, 5)

    def loss(prev):
        synthetic = cvae.decode(z, old_labels)
        return generator_loss(features, recon, mu, logvar, head(recon), labels, factor=1.5, synthetic=synthetic,
                              synthetic_logits=head(synthetic), synthetic_labels=old_labels,
                              synthetic_previous=prev.decode(z, old_labels))

    same = loss(previous)
    assert same["distill"].item() == 0.0
    with torch.no_grad():
        for parameter in previous.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    moved = loss(previous)
    expected = 1e-3 * 1.5 * ((cvae.decode(z, old_labels) - previous.decode(z, old_labels)) ** 2).sum()
    assert moved["distill"].item() > 0 and torch.allclose(moved["distill"], expected)
    assert torch.allclose(moved["reconstruction"], ((recon - features) ** 2).sum() / 6)
    assert torch.allclose(moved["current"], F.cross_entropy(head(recon), labels) / 2.5)
    assert torch.allclose(moved["total"], sum(v for k, v in moved.items() if k != "total"))
    first = generator_loss(features, recon, mu, logvar, head(recon), labels, factor=0.0)
    assert first["old"].item() == first["distill"].item() == 0.0
    assert torch.allclose(first["current"], F.cross_entropy(head(recon), labels))


# -- the learners --------------------------------------------------------------------------------------------------

def _bn_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in net.state_dict().items()
            if "running" in name or "num_batches" in name}


def test_batch_norm_statistics_are_frozen_after_the_first_task():
    learner = tiny_etag()
    x, y = templates(4, 8, seed=0)
    learner.begin_task(0, (0, 1))
    before_first = _bn_state(learner.net)
    learner.train_step(x[y < 2], y[y < 2])
    assert any(not torch.equal(before_first[k], v) for k, v in _bn_state(learner.net).items())
    learner.end_epoch(0)
    learner.begin_task(1, (2, 3))
    before = _bn_state(learner.net)
    weights = [p.detach().clone() for p in learner.net.parameters()]
    terms = learner.train_step(x[y >= 2], y[y >= 2])
    assert set(terms) == {"current", "old", "kd", "feature", "total"}
    assert all(torch.equal(before[k], v) for k, v in _bn_state(learner.net).items())
    assert any(not torch.equal(w, p) for w, p in zip(weights, learner.net.parameters()))
    assert not learner.net.training


def _found_inputs(obj, shape, seen=None) -> int:
    """Tensors reachable from ``obj`` (attributes, containers, module state) whose trailing shape is an input's."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return int(obj.dim() >= len(shape) and tuple(obj.shape[-len(shape):]) == shape)
    if isinstance(obj, nn.Module):
        return sum(_found_inputs(v, shape, seen) for v in obj.state_dict().values())
    if isinstance(obj, dict):
        return sum(_found_inputs(v, shape, seen) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_found_inputs(v, shape, seen) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return sum(_found_inputs(v, shape, seen) for v in vars(obj).values())
    return 0


def test_etag_losses_decrease_and_no_exemplar_is_stored():
    x, y = templates(4, 12, seed=0)
    tx, ty = templates(4, 6, seed=1)
    learner = tiny_etag(n_classes=4, generator_epochs=4)
    result = train_incremental(learner, x, y, tx, ty, class_splits(4, 2, 1), epochs=5, batch_size=8)
    for task, phase in [(0, "network"), (0, "generator"), (1, "network")]:
        totals = [h["total"] for h in learner.history if h["task"] == task and h["phase"] == phase]
        assert totals[-1] < totals[0], (task, phase, totals)
    assert not [h for h in learner.history if h["task"] == 1 and h["phase"] == "generator"]  # not after the last
    assert learner.stored_exemplars == 0 and not hasattr(learner, "buffer")
    assert _found_inputs(learner, tuple(x.shape[1:])) == 0
    assert result.seen_accuracy[0] > 50


def test_fine_tune_ignores_unseen_logits_and_lwf_distills_old_ones():
    net = ResNet(4, width=4, blocks=(1, 1))
    learner = FineTune(net, generator=torch.Generator().manual_seed(0))
    learner.begin_task(0, (2, 0))
    logits, labels = torch.randn(3, 4), torch.tensor([0, 2, 2])
    shifted = logits.clone()
    shifted[:, [1, 3]] += 5.0
    assert torch.allclose(learner.current_loss(logits, labels), learner.current_loss(shifted, labels))
    assert torch.allclose(learner.current_loss(logits, labels), F.cross_entropy(logits[:, [2, 0]],
                                                                                torch.tensor([1, 0, 0])))
    old, new = torch.randn(5, 3), torch.randn(5, 3)
    kl = F.kl_div(F.log_softmax(new / 2, 1), F.softmax(old / 2, 1), reduction="batchmean")
    entropy = -(F.softmax(old / 2, 1) * F.log_softmax(old / 2, 1)).sum(1).mean()
    assert torch.allclose(soft_cross_entropy(new, old, 2.0), kl + entropy)
    lwf = LwF(ResNet(4, width=4, blocks=(1, 1)), generator=torch.Generator().manual_seed(0))
    x, y = templates(4, 4, seed=0)
    lwf.begin_task(0, (0, 1))
    assert set(lwf.train_step(x[y < 2], y[y < 2])) == {"current", "total"}
    lwf.begin_task(1, (2, 3))
    assert set(lwf.train_step(x[y >= 2], y[y >= 2])) == {"current", "distill", "total"}


@pytest.mark.parametrize("kind", ["etag", "finetune", "lwf"])
def test_three_task_run(kind):
    x, y = templates(6, 10, seed=0)
    tx, ty = templates(6, 5, seed=1)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    if kind == "etag":
        learner = tiny_etag(generator_epochs=1)
    else:
        net = ResNet(6, width=4, blocks=(1, 1, 1, 1))
        learner = (FineTune if kind == "finetune" else LwF)(net, generator=generator, optim=FAST)
    splits = class_splits(6, 2, 2, order=[3, 0, 5, 1, 4, 2])
    result = train_incremental(learner, x, y, tx, ty, splits, epochs=2, batch_size=8,
                               augment=Augmentation(1, True))
    assert result.seen_accuracy.shape == (3,) and result.task_accuracy.shape == (3, 3)
    assert np.isnan(result.task_accuracy[0, 1:]).all() and not np.isnan(result.task_accuracy[2]).any()
    assert 0 <= result.average_incremental_accuracy <= 100 and np.isfinite(result.forgetting)
    assert result.train_seconds > 0 and result.test_seconds > 0
    assert all(np.isfinite(h["total"]) for h in learner.history)
    assert learner.stored_exemplars == 0


def test_seeded_etag_runs_are_identical():
    def run():
        x, y = templates(4, 6, seed=0)
        learner = tiny_etag(n_classes=4, seed=3, generator_epochs=1)
        result = train_incremental(learner, x, y, x, y, class_splits(4, 2, 1), epochs=1, batch_size=8,
                                   augment=Augmentation(1, True))
        return result.task_accuracy, [p.detach().clone() for p in learner.net.parameters()]

    first, second = run(), run()
    np.testing.assert_array_equal(first[0], second[0])
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1]))


# -- ablation switches (appendix Tables C.1, C.2, C.4) -----------------------------------------------------------

def test_jigsaw_and_channel_permutation_batches():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    x4, y4 = jigsaw_batch(x, torch.tensor([2]))
    tiles = [x[0, 0, :2, :2], x[0, 0, :2, 2:], x[0, 0, 2:, :2], x[0, 0, 2:, 2:]]
    assert torch.equal(x4[0], x[0]) and y4.tolist() == [8, 9, 10, 11]
    assert torch.equal(x4[1, 0, :2, 2:], tiles[0]) and torch.equal(x4[1, 0, :2, :2], tiles[3])  # shifted by one
    assert torch.equal(x4[2, 0, 2:, :2], tiles[0]) and torch.equal(x4[3, 0, 2:, 2:], tiles[0])
    rgb = torch.randn(2, 3, 4, 4)
    x6, y6 = channel_permutation_batch(rgb, torch.tensor([0, 1]))
    assert len(CHANNEL_ORDERS) == 6 and x6.shape == (12, 3, 4, 4) and torch.equal(x6[:2], rgb)
    assert torch.equal(x6[2 * 5], rgb[0][list(CHANNEL_ORDERS[5])]) and y6.tolist()[::2] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="even"):
        jigsaw_batch(torch.zeros(1, 1, 3, 3), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="3 channels"):
        channel_permutation_batch(torch.zeros(1, 1, 4, 4), torch.zeros(1, dtype=torch.long))


def _input_rows(learner: ETag, x: torch.Tensor, y: torch.Tensor) -> tuple[list[int], dict[str, torch.Tensor]]:
    """Rows of every batch the current network's stem saw in one training step (the old network, a copy made
    before the hook, is not counted), and the step's loss terms."""
    seen = []
    hook = learner.net.backbone.conv1.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    terms = learner.train_step(x, y)
    hook.remove()
    return seen, terms


def test_without_self_supervision_no_batch_is_expanded_and_the_heads_predict_the_class():
    x, y = templates(4, 4, seed=0)
    plain, rotated = tiny_etag(4, self_supervision="none"), tiny_etag(4)
    assert all(h.fc.out_features == 4 for h in plain.net.aux_heads)
    assert all(h.fc.out_features == 16 for h in rotated.net.aux_heads)
    first = y < 2
    for learner, rows in ((plain, 8), (rotated, 32)):
        learner.begin_task(0, (0, 1))
        assert _input_rows(learner, x[first], y[first])[0] == [rows]
    # The auxiliary term is the heads' CE on the plain batch's classes: no rotation term.
    plain.net.train()
    _, _, aux = plain.net(x[first])
    expected = sum(F.cross_entropy(head, y[first]) for head in aux)
    assert torch.allclose(plain.losses(x[first], y[first])["aux"], expected, atol=1e-5)
    plain.end_epoch(0)
    plain.end_task(lambda: iter([(x[first], y[first])]), last=False)
    plain.begin_task(1, (2, 3))
    rows, terms = _input_rows(plain, x[~first], y[~first])
    assert rows == [8] and set(terms) == {"current", "old", "kd", "feature", "total"}


def test_naive_kd_is_the_plain_logit_kd_of_the_main_classifier():
    x, y = templates(4, 4, seed=0)
    learner = tiny_etag(4, distillation="logit")
    first = y < 2
    learner.begin_task(0, (0, 1))
    learner.train_step(x[first], y[first])
    learner.end_epoch(0)
    learner.end_task(lambda: iter([(x[first], y[first])]), last=False)
    learner.begin_task(1, (2, 3))
    new = x[~first]
    state = learner.generator.get_state()
    terms = learner.losses(new, y[~first])
    assert set(terms) == {"current", "old", "kd", "total"}  # no feature distance, no auxiliary KD
    old = [0, 1]
    logits = learner.net.classify(learner.net.features(new))
    old_logits = learner.old_net.classify(learner.old_net.features(new))
    expected = learner.factor * distill_kl(logits[:, old], old_logits[:, old], 3.0)
    assert torch.allclose(terms["kd"], expected, atol=1e-6)
    learner.generator.set_state(state)
    learner.net.zero_grad(set_to_none=True)
    rows, _ = _input_rows(learner, new, y[~first])
    assert rows == [8]  # the plain batch: no rotation
    assert all(p.grad is None for p in learner.net.aux_heads.parameters())


def _generator_total(learner: ETag, x: torch.Tensor, y: torch.Tensor, previous, classifier_scale: float) -> dict:
    """The generator's loss terms with the classifier's weights scaled, from the same draws."""
    fc = learner.net.backbone.fc
    saved = fc.weight.detach().clone()
    state = learner.generator.get_state()
    with torch.no_grad():
        fc.weight.mul_(classifier_scale)
    terms = learner.generator_losses(x, y, previous)
    with torch.no_grad():
        fc.weight.copy_(saved)
    learner.generator.set_state(state)
    return terms


@pytest.mark.parametrize("generation", ["task", "naive"])
def test_naive_generation_drops_exactly_the_classifier_terms(generation):
    x, y = templates(4, 4, seed=0)
    learner = tiny_etag(4, generation=generation)
    learner.begin_task(0, (0, 1))
    learner.end_task(lambda: iter([(x[y < 2], y[y < 2])]), last=False)
    learner.begin_task(1, (2, 3))
    previous = copy.deepcopy(learner.cvae)
    with torch.no_grad():
        for p in learner.cvae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    one, other = (_generator_total(learner, x[y >= 2], y[y >= 2], previous, s) for s in (1.0, 3.0))
    assert one["distill"] > 0 and one["reconstruction"] > 0  # distilled from G_{t-1} either way
    if generation == "naive":
        assert one["current"] == 0 and one["old"] == 0
        assert torch.equal(one["total"], other["total"])  # the classifier takes no part
    else:
        assert one["current"] > 0 and one["old"] > 0 and not torch.equal(one["total"], other["total"])


def test_prototype_generation_replays_class_means_with_the_first_tasks_radius():
    x, y = templates(4, 6, seed=0)
    learner = tiny_etag(4, generation="prototype")
    assert learner.cvae is None
    first = y < 2
    learner.begin_task(0, (0, 1))
    learner.end_task(lambda: iter([(x[first], y[first])]), last=False)
    learner.net.eval()
    with torch.no_grad():
        features = learner.net.features(x[first])
    for c in (0, 1):
        assert torch.allclose(learner.prototypes[c], features[y[first] == c].mean(0), atol=1e-5)
    spread = torch.stack([features[y[first] == c].var(0, unbiased=False).mean() for c in (0, 1)]).mean().sqrt()
    assert learner.radius == pytest.approx(float(spread), rel=1e-5)
    assert torch.equal(learner.prototypes[2:], torch.zeros_like(learner.prototypes[2:]))
    learner.begin_task(1, (2, 3))
    labels = torch.zeros(2000, dtype=torch.long)
    replayed = learner.replay(labels)
    assert torch.allclose(replayed.mean(0), learner.prototypes[0], atol=5 * learner.radius / 2000 ** 0.5)
    assert float(replayed.std(0).mean()) == pytest.approx(learner.radius, rel=0.1)
    assert set(learner.train_step(x[~first], y[~first])) == {"current", "old", "kd", "feature", "total"}


def test_switches_are_checked_and_build_sizes_the_heads():
    with pytest.raises(ValueError, match="unknown distillation"):
        tiny_etag(4, distillation="hint")
    with pytest.raises(ValueError, match="transforms=6"):
        ETag(AuxiliaryResNet(4, width=2, blocks=(1, 1)), generator=torch.Generator(), generator_epochs=1,
             self_supervision="colorperm")
    learner = build(4, 2, 3, generator=torch.Generator(), optim=FAST, generator_epochs=1, self_supervision="colorperm",
                    hidden=8, latent=4)
    assert learner.net.transforms == 6 and learner.net.aux_heads[0].fc.out_features == 24
