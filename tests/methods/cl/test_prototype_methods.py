"""PASS, IL2A and SSRE: the mechanism each paper defines, checked on tiny networks and data."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import ResNet, count_parameters
from methods.cl.etag import rotate_batch
from methods.cl.incremental import AdamSchedule, class_splits, train_incremental
from methods.cl.prototype_methods import (
    IL2A,
    PASS,
    SSRE,
    PrototypeNet,
    ReparamConv,
    build_il2a,
    build_pass,
    build_ssre,
    class_mixup,
    class_statistics,
    distillation_mask,
    pair_index,
    prototype_radius,
    reparam_convs,
    reparameterisable,
    semantic_shift,
)

FAST = AdamSchedule(lr=5e-3)


def blobs(n_classes: int, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable 3 x 8 x 8 images: class c is a fixed random pattern (seed 99) plus 0.3 noise."""
    patterns = torch.randn(n_classes, 3, 8, 8, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    noise = torch.randn(len(labels), 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return patterns[labels] + 0.3 * noise, labels


def tiny_net(n_classes: int, outputs_per_class: int = 1, reparam: bool = False, seed: int = 0) -> PrototypeNet:
    torch.manual_seed(seed)
    backbone = ResNet(0, width=4, blocks=(1, 1, 1, 1))
    return PrototypeNet(reparameterisable(backbone) if reparam else backbone, n_classes, outputs_per_class)


def tiny(kind: str, n_classes: int = 4, seed: int = 0, **hyper):
    generator = torch.Generator().manual_seed(seed)
    if kind == "pass":
        return PASS(tiny_net(n_classes, 4, seed=seed), generator=generator, optim=FAST, **hyper)
    if kind == "il2a":
        return IL2A(tiny_net(n_classes, seed=seed), generator=generator, optim=FAST, **hyper)
    return SSRE(tiny_net(n_classes, reparam=True, seed=seed), generator=generator, optim=FAST, **hyper)


def one_epoch(x: torch.Tensor, y: torch.Tensor, batch: int = 8):
    """A ``batches`` callable of the training loop without shuffling or augmentation."""
    return lambda: iter([(x[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)])


def train_task(learner, task: int, classes, x, y, steps: int = 3, last: bool = False) -> list[dict]:
    rows = torch.isin(y, torch.tensor(classes))
    learner.begin_task(task, classes)
    terms = [learner.train_step(x[rows][:8], y[rows][:8]) for _ in range(steps)]
    learner.end_task(one_epoch(x[rows], y[rows]), last=last)
    return terms


# -- shared prototype machinery -----------------------------------------------------------------------------------

def test_class_statistics_and_pass_radius_by_hand():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 5)) * np.array([1, 2, 3, 0.5, 1])
    labels = np.repeat([4, 1, 7], 10)
    stats = class_statistics(torch.tensor(features), torch.tensor(labels), covariance=True)
    assert stats.classes.tolist() == [1, 4, 7]
    for row, c in enumerate([1, 4, 7]):
        own = features[labels == c]
        np.testing.assert_allclose(stats.means[row], own.mean(0))
        np.testing.assert_allclose(stats.covariances[row], np.cov(own.T))
        np.testing.assert_allclose(stats.variances[row], np.trace(np.cov(own.T)) / 5)
    expected = np.sqrt(np.mean([np.trace(np.cov(features[labels == c].T)) / 5 for c in (1, 4, 7)]))
    assert prototype_radius(stats.variances) == pytest.approx(expected)
    with pytest.raises(ValueError, match="two feature vectors"):
        class_statistics(torch.randn(3, 2), torch.tensor([0, 0, 1]))


def test_pass_prototypes_are_class_means_and_the_radius_is_fixed_after_the_first_task():
    x, y = blobs(4, 6, seed=0)
    learner = tiny("pass")
    train_task(learner, 0, (0, 1), x, y)
    learner.net.eval()
    with torch.no_grad():
        features = learner.net.features(x)
    first = features[y < 2]
    for row, c in enumerate((0, 1)):
        torch.testing.assert_close(learner.statistics.means[row], features[y == c].mean(0))
    variance = np.mean([np.trace(np.cov(first[y[y < 2] == c].numpy().T)) / first.shape[1] for c in (0, 1)])
    assert learner.radius == pytest.approx(np.sqrt(variance), rel=1e-5)
    radius, old_means = learner.radius, learner.statistics.means.clone()
    train_task(learner, 1, (2, 3), x, y)
    assert learner.radius == radius  # r is the first task's
    assert learner.statistics.classes.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(learner.statistics.means[:2], old_means)  # old prototypes are not recomputed
    learner.net.eval()
    with torch.no_grad():
        torch.testing.assert_close(learner.statistics.means[3], learner.net.features(x[y == 3]).mean(0))
    assert learner.stored_exemplars == 0


def test_pass_rotation_head_has_4k_outputs_and_inference_uses_only_the_original_logits():
    learner = tiny("pass", n_classes=5)
    assert learner.net.fc.out_features == 20
    x, _ = blobs(5, 2, seed=1)
    before = learner.logits(x)
    learner.net.eval()
    with torch.no_grad():
        torch.testing.assert_close(before, learner.net.head(learner.net.features(x))[:, 0::4])
        rotated_rows = torch.arange(20) % 4 != 0
        learner.net.fc.weight[rotated_rows] += 5.0
        learner.net.fc.bias[rotated_rows] -= 3.0
    torch.testing.assert_close(learner.logits(x), before)
    assert before.shape == (10, 5)


def test_pass_loss_is_the_joint_class_rotation_cross_entropy():
    learner = tiny("pass", n_classes=5)
    learner.begin_task(0, (3, 1))
    x, y = blobs(5, 2, seed=2)
    x, y = x[(y == 3) | (y == 1)], y[(y == 3) | (y == 1)]
    torch.manual_seed(0)
    terms = learner.losses(x, y)
    rotated, joint = rotate_batch(x, y)
    torch.manual_seed(0)
    logits = learner.net.head(learner.net.features(rotated))
    columns = [4 * c + k for c in (3, 1) for k in range(4)]
    positions = torch.tensor([columns.index(int(j)) for j in joint])
    torch.testing.assert_close(terms["current"], F.cross_entropy(logits[:, columns] / 0.1, positions))
    assert set(terms) == {"current", "total"}


def test_pass_prototype_augmentation_draws_old_means_plus_radius_noise():
    x, y = blobs(4, 6, seed=0)
    learner = tiny("pass")
    train_task(learner, 0, (0, 1), x, y)
    learner.begin_task(1, (2, 3))
    prototypes, labels, rows = learner.sample_prototypes(6000)
    assert set(labels.tolist()) == {0, 1}
    for row, c in enumerate((0, 1)):
        own = prototypes[labels == c] - learner.statistics.means[row]
        assert own.mean(0).abs().max() < 0.1 * learner.radius
        assert own.std() == pytest.approx(learner.radius, rel=0.05)
    terms = learner.train_step(x[y >= 2][:8], y[y >= 2][:8])
    assert terms["proto"] > 0 and terms["distill"] >= 0 and set(terms) == {"current", "proto", "distill", "total"}


# -- IL2A ----------------------------------------------------------------------------------------------------------

def test_semantic_shift_equals_the_closed_form_by_hand():
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    covariance = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    # class 0: v_1 = (-1, 2): v S v = 2 - 2 + 4 = 4; v_2 = (0, 1): 1. class 2: v_0 = (0, -1): 1; v_1 = (-1, 1): 2.
    shift = semantic_shift(weight, covariance.expand(2, 2, 2), torch.tensor([0, 2]), strength=2.5)
    torch.testing.assert_close(shift, torch.tensor([[0.0, 5.0, 1.25], [1.25, 2.5, 0.0]]))


def test_semantic_augmentation_bounds_the_expected_cross_entropy():
    # ISDA: CE of the shifted logits >= E over f ~ N(mu, lambda Sigma) of CE(W f + b) (Jensen), estimated by sampling.
    generator = torch.Generator().manual_seed(0)
    weight, bias, mu = torch.randn(4, 3, generator=generator), torch.randn(4, generator=generator), torch.randn(3)
    root = torch.randn(3, 3, generator=generator)
    covariance, strength, target = root @ root.T, 0.8, torch.tensor([2])
    shift = semantic_shift(weight, covariance[None], target, strength)[0]
    bound = F.cross_entropy(weight @ mu + bias + shift, target[0])
    samples = torch.distributions.MultivariateNormal(mu, strength * covariance).sample((20000,))
    expected = F.cross_entropy(samples @ weight.T + bias, target.expand(20000))
    at_mean = F.cross_entropy(weight @ mu + bias, target[0])
    assert at_mean < expected < bound


def test_pair_index_is_a_bijection_onto_the_auxiliary_classes():
    n = 6
    pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
    first, second = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    index = pair_index(first, second)
    assert torch.equal(index, pair_index(second, first))
    assert sorted(set(index.tolist())) == list(range(n * (n - 1) // 2))


def test_class_mixup_mixes_only_different_classes_into_their_auxiliary_class():
    positions = torch.tensor([0, 1, 2, 0, 1, 2, 2, 0])
    inputs = torch.eye(8).view(8, 8, 1, 1)  # image i is the i-th unit vector: a mix reveals its two parents
    mixed, labels = class_mixup(inputs, positions, torch.Generator().manual_seed(3))
    assert 0 < len(mixed) <= 4 * 8 and labels.shape == (len(mixed),)
    for image, label in zip(mixed.flatten(1), labels):
        parents = image.nonzero().flatten()
        weights = image[parents]
        assert len(parents) == 2 and positions[parents[0]] != positions[parents[1]]
        assert weights.sum() == pytest.approx(1.0) and ((weights >= 0.4) & (weights <= 0.6)).all()
        assert label == pair_index(positions[parents[0]], positions[parents[1]])
    assert len(class_mixup(inputs[:3], torch.zeros(3, dtype=torch.long), torch.Generator())[0]) == 0


def test_il2a_trains_auxiliary_classes_and_replays_semantically_augmented_prototypes():
    x, y = blobs(5, 6, seed=0)
    learner = tiny("il2a", n_classes=5)
    terms = train_task(learner, 0, (0, 1, 2), x, y)
    assert learner.mix_head.out_features == 3 and set(terms[0]) == {"current", "total"}
    assert learner.statistics.covariances.shape == (3, 16 * 2, 16 * 2)
    assert learner.logits(x).shape == (30, 5)  # the auxiliary head is not part of inference
    learner.begin_task(1, (3, 4))
    assert learner.mix_head.out_features == 1
    assert any(p is learner.mix_head.weight for group in learner.optimizer.param_groups for p in group["params"])
    terms = learner.train_step(x[y >= 3][:8], y[y >= 3][:8])
    assert terms["proto"] > 0 and terms["distill"] > 0
    # The prototype term uses the shifted logits: without the covariances' shift (ratio 0) it is smaller.
    generator_state = learner.generator.get_state()
    shifted = learner.losses(x[y >= 3][:8], y[y >= 3][:8])["proto"]
    learner.generator.set_state(generator_state)
    learner.ratio = 0.0
    assert learner.losses(x[y >= 3][:8], y[y >= 3][:8])["proto"] < shifted


# -- SSRE ----------------------------------------------------------------------------------------------------------

def test_reparameterised_network_equals_the_two_branch_network():
    net = tiny_net(3, reparam=True, seed=1)
    for module in net.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    size = count_parameters(net)
    layers = reparam_convs(net)
    assert len(layers) == 8 and any(layer.conv.stride == (2, 2) for layer in layers)
    x, _ = blobs(3, 4, seed=5)
    net.eval()
    with torch.no_grad():
        plain = net(x)
        for layer in layers:
            layer.expand()
        torch.testing.assert_close(net(x), plain)  # a zero side branch changes nothing
        for layer in layers:
            layer.adapter.weight.normal_(0, 0.3)
        two_branch = net(x)
        assert (two_branch - plain).abs().max() > 1e-2
        for layer in layers:
            layer.merge()
        merged = net(x)
    assert all(layer.adapter is None for layer in layers) and count_parameters(net) == size
    assert (merged - two_branch).abs().max() < 1e-5


def test_reparam_conv_refuses_other_kernels():
    with pytest.raises(ValueError, match="3x3"):
        ReparamConv(torch.nn.Conv2d(2, 2, 1))


def test_ssre_trains_only_the_side_branch_and_the_head_after_the_first_task():
    x, y = blobs(4, 6, seed=0)
    learner = tiny("ssre")
    train_task(learner, 0, (0, 1), x, y)
    learner.begin_task(1, (2, 3))
    trainable = {name for name, p in learner.net.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in learner.net.named_parameters() if ".adapter." in n} | {"fc.weight", "fc.bias"}
    state = learner.net.state_dict()
    main = {n: v.clone() for n, v in state.items() if ".adapter." not in n and not n.startswith("fc")}
    learner.train_step(x[y >= 2][:8], y[y >= 2][:8])
    after = learner.net.state_dict()
    assert all(torch.equal(after[n], v) for n, v in main.items())  # weights and batch-norm statistics frozen
    assert any(after[n].abs().sum() > 0 for n in after if ".adapter." in n)
    learner.end_task(one_epoch(x[y >= 2], y[y >= 2]), last=True)
    assert all(layer.adapter is None for layer in reparam_convs(learner.net))
    assert all(p.requires_grad for p in learner.net.parameters())


def test_prototype_selection_picks_exactly_the_samples_above_the_threshold():
    prototypes = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    features = torch.tensor([[2.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    # max cosine: 1, 0.707, 0.949, 0, 0.707
    assert distillation_mask(features, prototypes, 0.8).tolist() == [1, 0, 1, 0, 0]
    assert distillation_mask(features, prototypes, 0.7).tolist() == [1, 1, 1, 0, 1]
    torch.testing.assert_close(distillation_mask(features, prototypes, None),
                               torch.tensor([1.0, 0.5**0.5, 3 / 10**0.5, 0.0, 0.5**0.5]))


@pytest.mark.parametrize("threshold, distilled", [(1.0, False), (-1.0, True)])
def test_ssre_distills_only_the_selected_samples(threshold, distilled):
    x, y = blobs(4, 6, seed=0)
    learner = tiny("ssre", threshold=threshold)
    train_task(learner, 0, (0, 1), x, y)
    learner.begin_task(1, (2, 3))
    for layer in reparam_convs(learner.net):  # make the new features differ from the old ones
        layer.adapter.weight.data.normal_(0, 0.3)
    terms = learner.losses(x[y >= 2][:8], y[y >= 2][:8])
    assert float(terms["selected"]) == float(distilled)
    assert (terms["distill"] > 0) == distilled and (terms["current"] > 0) != distilled
    assert terms["proto"] > 0


# -- whole runs ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, keeps_old", [("pass", True), ("il2a", False), ("ssre", True)])
def test_two_task_run_learns_the_new_task_with_prototype_and_distillation_terms(kind, keeps_old):
    x, y = blobs(4, 12, seed=0)
    tx, ty = blobs(4, 6, seed=1)
    learner = tiny(kind)
    learner.optim = AdamSchedule(lr=2e-3)
    splits = class_splits(4, 2, 1, order=[2, 0, 3, 1])
    result = train_incremental(learner, x, y, tx, ty, splits, epochs=10, batch_size=8)
    old, new = result.task_accuracy[1]
    assert result.seen_accuracy[1] > 25  # chance over the four seen classes
    if keeps_old:  # IL2A's old-task accuracy on this tiny problem varies from 0 to 100% with the seed
        assert new > 50 and old > 50
    task1 = [h for h in learner.history if h["task"] == 1]
    assert task1 and all(h["proto"] > 0 for h in task1)
    if kind == "ssre":  # only the samples near an old prototype are distilled (none, in this run)
        assert all((h["distill"] > 0) == (h["selected"] > 0) for h in task1)
    else:
        assert all(h["distill"] > 0 for h in task1)
    assert all("proto" not in h and "distill" not in h for h in learner.history if h["task"] == 0)
    assert learner.stored_exemplars == 0


@pytest.mark.parametrize("build, outputs", [(build_pass, 40), (build_il2a, 10), (build_ssre, 10)])
def test_builders_give_resnet18_learners_with_k_class_inference(build, outputs):
    learner = build(10, 4, 1, generator=torch.Generator().manual_seed(0), optim=FAST)
    assert learner.net.fc.out_features == outputs
    assert learner.logits(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert len(learner.net.backbone.stages) == 4 and all(len(stage) == 2 for stage in learner.net.backbone.stages)
    with pytest.raises(TypeError):
        build(10, 4, 1, generator=torch.Generator(), no_such_hyper=1.0)
