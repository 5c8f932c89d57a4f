"""The CLFD table's baselines: oEWC, SI, mammoth's LwF and CLS-ER (also on CLFD's network).

Each test checks the mechanism its paper defines against numbers computed here by hand.
"""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl import (
    CLSER,
    SI,
    Augmentation,
    Learner,
    OnlineEWC,
    PlainNet,
    ReservoirBuffer,
    WarmupLwF,
    consistency_targets,
    evaluate,
    split_tasks,
    train_stream,
)
from tests.methods.cl.test_clfd import _clfd_net
from tests.methods.cl.test_core import TINY, _tiny_net, quadrant_images

BLACK = torch.zeros(3)


def _linear_net(classes: int = 3, seed: int = 0) -> PlainNet:
    """A bias-free linear classifier on 3 x 2 x 2 images: logits = W x, W of shape (classes, 12)."""
    torch.manual_seed(seed)
    return PlainNet(nn.Sequential(nn.Flatten(), nn.Linear(12, classes, bias=False)), BLACK)


def _batches(x, y):
    return lambda: iter([(x[:3], y[:3], x[:3]), (x[3:], y[3:], x[3:])])


def _hand_fisher(weight: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean_n p(y_n|x_n) ((e_y - p) x^T)^2``: the probability-weighted squared gradient of
    ``log p(y|x) = log softmax(Wx)_y``."""
    flat = x.flatten(1)
    probs = F.softmax(flat @ weight.T, 1)
    grads = (F.one_hot(y, weight.shape[0]).float() - probs)[:, :, None] * flat[:, None, :]
    return (probs[torch.arange(len(y)), y][:, None, None] * grads ** 2).mean(0)


def test_oewc_fisher_decays_by_gamma_and_its_penalty_pulls_back():
    net = _linear_net()
    weight = net.backbone[1].weight
    x, y = torch.randn(5, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    learner = OnlineEWC(net, lamb=2.0, gamma=0.5, lr=0.1, generator=torch.Generator().manual_seed(0))
    assert float(learner.penalty()) == 0.0  # no penalty during the first task
    first = _hand_fisher(weight.detach(), x, y)
    learner.end_task(_batches(x, y))
    torch.testing.assert_close(learner.importance[0], first)
    torch.testing.assert_close(learner.anchor[0], weight.detach())
    with torch.no_grad():
        weight.add_(0.3 * torch.randn_like(weight))
    x2 = torch.randn(5, 3, 2, 2)
    second = _hand_fisher(weight.detach(), x2, y)
    learner.end_task(_batches(x2, y))
    torch.testing.assert_close(learner.importance[0], 0.5 * first + second)  # F <- gamma F + F_t
    # The penalty's gradient is 2 lambda F (theta - theta*) (mammoth's penalty has no 1/2) ...
    delta = 0.2 * torch.randn_like(weight)
    with torch.no_grad():
        weight.copy_(learner.anchor[0] + delta)
    (grad,) = torch.autograd.grad(learner.strength * learner.penalty(), [weight])
    torch.testing.assert_close(grad, 2 * 2.0 * learner.importance[0] * delta)
    # ... so a step moves theta back towards theta*, by lr times that gradient, beyond fine-tuning's step.
    tuned = copy.deepcopy(net)
    Learner(tuned, lr=0.1, generator=torch.Generator()).observe(x, y, x)
    learner.observe(x, y, x)
    pulled = weight.detach() - tuned.backbone[1].weight.detach()
    torch.testing.assert_close(pulled, -0.1 * grad)
    assert float((pulled * delta).sum()) < 0


class QuadraticSI(SI):
    """SI on the loss 0.5 ||W - target||^2 (plus SI's penalty), whose SGD path is known in closed form."""

    target: torch.Tensor

    def current_loss(self, logits, labels):
        return 0.5 * ((self.params[0] - self.target) ** 2).sum() + self.strength * self.penalty() + 0 * logits.sum()


def test_si_importance_is_the_path_integral_of_a_quadratic():
    net = _linear_net()
    start = net.backbone[1].weight.detach().clone()
    learner = QuadraticSI(net, c=0.5, xi=0.1, lr=0.2, generator=torch.Generator())
    learner.target = start + 0.8 * torch.rand_like(start) - 0.4  # |g| < 1: no clipping
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
    steps, eta = 3, 0.2
    for _ in range(steps):
        learner.observe(x, y, x)
    # theta_t = T + (1 - eta)^t d0, g_t = (1 - eta)^t d0, delta theta_t = -eta g_t,
    # so -g . delta theta = eta (1 - eta)^2t d0^2 per step.
    d0 = start - learner.target
    omega = eta * d0 ** 2 * sum((1 - eta) ** (2 * t) for t in range(steps))
    torch.testing.assert_close(learner.path[0], omega)
    moved = ((1 - eta) ** steps - 1) * d0
    torch.testing.assert_close(net.backbone[1].weight.detach() - start, moved)
    learner.end_task(lambda: iter(()))
    torch.testing.assert_close(learner.importance[0], omega / (moved ** 2 + 0.1))
    assert torch.all(learner.path[0] == 0)
    torch.testing.assert_close(learner.anchor[0], net.backbone[1].weight.detach())
    # Next task: the penalty's gradient is 2 c Omega (theta - theta*).
    delta = 0.1 * torch.randn_like(start)
    with torch.no_grad():
        net.backbone[1].weight.add_(delta)
    (grad,) = torch.autograd.grad(learner.strength * learner.penalty(), [net.backbone[1].weight])
    torch.testing.assert_close(grad, 2 * 0.5 * learner.importance[0] * delta)


def test_si_clips_each_gradient_entry_to_one():
    net = _linear_net()
    learner = QuadraticSI(net, c=0.5, xi=1.0, lr=0.1, generator=torch.Generator())
    learner.target = net.backbone[1].weight.detach() - 5.0  # g = 5 everywhere, clipped to 1
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
    before = net.backbone[1].weight.detach().clone()
    learner.observe(x, y, x)
    torch.testing.assert_close(net.backbone[1].weight.detach(), before - 0.1)
    torch.testing.assert_close(learner.path[0], torch.full_like(before, 0.1))


def _two_task_lwf(alpha: float):
    torch.manual_seed(0)
    x, y = quadrant_images(16, seed=0)
    tasks = split_tasks(y, y, TINY)
    net = _tiny_net()
    learner = WarmupLwF(net, alpha=alpha, temperature=2.0, weight_decay=5e-4, lr=0.1,
                        generator=torch.Generator().manual_seed(0), augment=Augmentation(1, True))
    return learner, x, y, tasks


def test_lwf_trains_seen_classes_warms_the_head_and_distils():
    learner, x, y, tasks = _two_task_lwf(alpha=3.0)
    net = learner.net
    fc = net.backbone.fc
    unseen_rows = fc.weight.detach()[2:].clone()
    train_stream(learner, x, y, x, y, tasks[:1], n_epochs=2, batch_size=8)
    # CE over the seen classes only: the unseen classes' rows change by weight decay alone (8 steps).
    torch.testing.assert_close(fc.weight.detach()[2:], unseen_rows * (1 - 0.1 * 5e-4) ** 8)
    # Task 1's warm-up trains the new classes' head rows only, features and past rows untouched.
    learner.begin_task(1, tasks[1].classes, 2)
    before = {name: t.detach().clone() for name, t in net.state_dict().items()}
    rows = tasks[1].train_rows
    learner.warm_up(lambda: iter([(x[rows[:8]], y[rows[:8]], x[rows[:8]]), (x[rows[8:]], y[rows[8:]], x[rows[8:]])]))
    after = net.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before if not n.startswith("backbone.fc"))
    assert torch.equal(before["backbone.fc.weight"][:2], after["backbone.fc.weight"][:2])
    assert not torch.equal(before["backbone.fc.weight"][2:], after["backbone.fc.weight"][2:])
    assert learner.old_net is not None and not learner.old_net.training
    # The step's loss is CE(seen) + alpha * soft CE at T = 2 on the past classes, targets on the raw inputs.
    twin = copy.deepcopy(learner)
    twin.alpha = 0.0
    batch, labels = x[rows[:8]], y[rows[:8]]
    shifted = batch.roll(1, dims=3)  # "augmented" inputs differ from the raw ones
    with torch.no_grad():
        targets = learner.old_net(batch)[:, :2]
    learner.observe(shifted, labels, batch)
    torch.testing.assert_close(learner.targets, targets)
    twin.observe(shifted, labels, batch)
    assert not torch.equal(net.backbone.conv1.weight, twin.net.backbone.conv1.weight)  # the term changes the step
    for _ in range(15):
        learner.observe(shifted, labels, batch)
        twin.observe(shifted, labels, batch)
    old_x = x[tasks[0].train_rows]
    with torch.no_grad():
        reference = F.softmax(learner.old_net(old_x)[:, :2] / 2, 1)
        drift = {name: F.kl_div(F.log_softmax(model.net.eval()(old_x)[:, :2] / 2, 1), reference,
                                reduction="batchmean").item() for name, model in (("lwf", learner), ("ft", twin))}
    assert drift["lwf"] < 0.5 * drift["ft"]  # the distillation keeps the past classes' predictions


def test_consistency_targets_take_the_memory_more_confident_in_the_true_class():
    stable = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    plastic = torch.tensor([[1.0, 0.0, 0.0], [0.0, 4.0, 0.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([0, 1, 2])
    chosen = consistency_targets(stable, plastic, labels)
    assert torch.equal(chosen, torch.stack([stable[0], plastic[1], plastic[2]]))  # a tie goes to plastic
    # Confidence is in the true class, not the top class: stable is sure of class 0, plastic less unsure of 1.
    chosen = consistency_targets(torch.tensor([[5.0, 0.0]]), torch.tensor([[1.0, 0.5]]), torch.tensor([1]))
    assert torch.equal(chosen, torch.tensor([[1.0, 0.5]]))


def _clser(net, generator, **rates):
    settings = {"plastic_rate": 1.0, "stable_rate": 0.0, "plastic_alpha": 0.9, "stable_alpha": 0.9, **rates}
    return CLSER(net, reg_weight=0.15, buffer=ReservoirBuffer(16), lr=0.1, generator=generator, minibatch=8,
                 augment=Augmentation(1, True), **settings)


def test_clser_memories_are_ema_with_warmup_and_stochastic_updates():
    net = _tiny_net()
    learner = _clser(net, torch.Generator().manual_seed(0))
    x, y = quadrant_images(4, seed=0)
    params = [[p.detach().clone() for p in net.parameters()]]
    for _ in range(2):
        learner.observe(x[:8], y[:8], x[:8])
        params.append([p.detach().clone() for p in net.parameters()])
    # step 1: a = min(1 - 1/2, 0.9) = 0.5; step 2: a = min(1 - 1/3, 0.9) = 2/3 (rate 1: every step).
    for memory, p0, p1, p2 in zip(learner.plastic.parameters(), *params, strict=True):
        torch.testing.assert_close(memory, 2 / 3 * (0.5 * p0 + 0.5 * p1) + 1 / 3 * p2)
    assert all(torch.equal(s, p) for s, p in zip(learner.stable.parameters(), params[0], strict=True))  # rate 0
    # Rates: each step draws plastic then stable from the learner's generator.
    learner.rates = {"plastic": 0.3, "stable": 0.7}
    replay = torch.Generator().set_state(learner.generator.get_state())
    draws = [learner.update_memories() for _ in range(300)]
    expected = [{"plastic": bool(torch.rand(1, generator=replay) < 0.3),
                 "stable": bool(torch.rand(1, generator=replay) < 0.7)} for _ in range(300)]
    assert draws == expected
    assert sum(d["plastic"] for d in draws) / 300 == pytest.approx(0.3, abs=0.08)
    assert sum(d["stable"] for d in draws) / 300 == pytest.approx(0.7, abs=0.08)


def test_clser_consistency_loss_and_stable_evaluation():
    torch.manual_seed(0)
    x, y = quadrant_images(16, seed=0)
    tasks = split_tasks(y, y, TINY)
    learner = _clser(_tiny_net(), torch.Generator().manual_seed(0), stable_rate=0.5)
    result = train_stream(learner, x, y, x, y, tasks, n_epochs=2, batch_size=8)
    assert learner.eval_net() is learner.stable
    class_il, _ = evaluate(learner.stable, x, y, tasks, 1)
    assert result.class_il[-1] == pytest.approx(class_il)  # the reported accuracies are the stable model's
    assert not all(torch.equal(s, w) for s, w in zip(learner.stable.parameters(), learner.net.parameters(),
                                                     strict=True))
    # The replay term: CE(f(x_b), y_b) + lambda MSE(f(x_b), logits of the more confident memory).
    for model in (learner.net, *learner.memories.values()):
        model.eval()  # fixed batch-norm statistics, so the two evaluations below see the same network
    state = learner.generator.get_state()
    loss = learner.replay_loss()
    learner.generator.set_state(state)
    encoded, labels, _ = learner.replay()
    logits = learner.net.classify(encoded)
    targets = consistency_targets(learner.stable.classify(encoded), learner.plastic.classify(encoded), labels)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels) + 0.15 * F.mse_loss(logits, targets))
    assert F.mse_loss(logits, targets) > 0


def test_clfd_wraps_clser_with_the_feature_buffer():
    torch.manual_seed(0)
    x, y = quadrant_images(16, seed=0)
    tasks = split_tasks(y, y, TINY)
    generator = torch.Generator().manual_seed(0)
    net = _clfd_net(generator)
    learner = CLSER(net, reg_weight=0.15, plastic_rate=0.9, stable_rate=0.5, plastic_alpha=0.999,
                    stable_alpha=0.999, buffer=ReservoirBuffer.from_bytes(4 * 3 * 8 * 8 * 4, (3, 4, 4)), lr=0.1,
                    generator=generator, minibatch=8, augment=Augmentation(2, False))
    initial = [p.detach().clone() for p in learner.stable.encoder.parameters()]
    result = train_stream(learner, x, y, x, y, tasks, n_epochs=2, batch_size=8)
    assert learner.buffer.examples.shape == (16, 3, 4, 4)  # frequency features, 4x the images' count
    assert net.frozen and not learner.stable.frozen  # only the working network's encoder is frozen ...
    assert any(not torch.equal(a, b) for a, b in zip(initial, learner.stable.encoder.parameters(), strict=True))
    assert result.class_il.shape == (2, 2) and learner.storage_bytes() > learner.buffer.nbytes
