"""LwF's distillation against fine-tuning: where it acts, and why both collapse alike on one-class tasks.

The quick scale of ``etag/table_b2`` (5 + 5 x 1 MNIST classes) gives fine-tuning and LwF the same
numbers. These tests pin the mechanism down on tiny problems:

- the distillation term changes the gradient (it pulls the old-class logits back towards the old
  model's, and vanishes exactly where the network still equals the old model);
- with two classes per task it changes the predictions: LwF's argmax over the old classes keeps the old
  model's where fine-tuning's drifts;
- its loss does not depend on the newest class's logit (a softmax over the old classes' logits only),
  so on a one-class task nothing holds that logit back while the cross-entropy raises it: both learners
  end up predicting the newest class for every row, and their seen-class accuracy is the same
  ``100 / N`` whatever the distillation did to the old classes.
"""

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.exemplar_free import FineTune, LwF, soft_cross_entropy
from methods.cl.incremental import AdamSchedule

FAST = AdamSchedule(lr=1e-2, weight_decay=0.0)
SIDE = 6


def blobs(n_classes: int, per_class: int, seed: int, shared: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy copies of one fixed random ``(1, SIDE, SIDE)`` template per class: ``(N, 1, S, S)``, ``(N,)``.

    ``shared``: the templates are one common image plus half-size class-specific parts (as digits share
    their background and strokes), so that what a network learns of one class carries to every input.
    """
    draws = torch.Generator().manual_seed(99)
    if shared:
        base = torch.randn(1, 1, SIDE, SIDE, generator=draws) + 0.5 * torch.randn(n_classes, 1, SIDE, SIDE,
                                                                                  generator=draws)
    else:
        base = torch.randn(n_classes, 1, SIDE, SIDE, generator=draws)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    noise = torch.randn(len(labels), 1, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))
    return base[labels] + (0.3 if shared else 0.5) * noise, labels


def mlp(n_classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 32), nn.ReLU(), nn.Linear(32, n_classes))


def train_task(learner: FineTune, index: int, classes: tuple[int, ...], x: torch.Tensor, y: torch.Tensor,
               steps: int) -> None:
    """Task ``index``: ``steps`` full-batch steps on the rows of ``classes``."""
    learner.begin_task(index, classes)
    rows = torch.isin(y, torch.tensor(classes))
    for _ in range(steps):
        learner.train_step(x[rows], y[rows])


def train(learner: FineTune, tasks: list[tuple[int, ...]], x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """Each task of ``tasks`` in turn (:func:`train_task`)."""
    for index, classes in enumerate(tasks):
        train_task(learner, index, classes, x, y, steps)


def pair(tasks, x, y, steps=150):
    """A fine-tuning and an LwF learner from the same initial network, trained on ``tasks``."""
    learners = [kind(mlp(int(y.max()) + 1, seed=0), generator=torch.Generator().manual_seed(0), optim=FAST)
                for kind in (FineTune, LwF)]
    for learner in learners:
        train(learner, tasks, x, y, steps)
    return learners


def accuracy_among(learner: FineTune, classes: tuple[int, ...], x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy (%) on the rows of ``classes``, the argmax taken over those classes' logits only."""
    chosen = torch.tensor(classes)
    rows = torch.isin(y, chosen)
    predicted = chosen[learner.logits(x[rows])[:, chosen].argmax(1)]
    return 100.0 * float((predicted == y[rows]).float().mean())


def test_distillation_changes_the_gradient_and_vanishes_where_the_network_equals_the_old_one():
    x, y = blobs(4, 8, seed=0)
    lwf = LwF(mlp(4, seed=0), generator=torch.Generator().manual_seed(0), optim=FAST)
    train(lwf, [(0, 1)], x, y, steps=50)
    lwf.begin_task(1, (2, 3))
    rows = y >= 2

    def gradient(term: str) -> torch.Tensor:
        lwf.net.zero_grad()
        lwf.losses(x[rows], y[rows])[term].backward()
        return torch.cat([p.grad.flatten() for p in lwf.net.parameters()])

    # At the start of the task the network is the old model: soft CE's gradient p_new - p_old is zero.
    assert gradient("distill").abs().max() < 1e-6
    for _ in range(20):
        lwf.train_step(x[rows], y[rows])
    distill, current, total = gradient("distill"), gradient("current"), gradient("total")
    assert distill.norm() > 1e-3 * current.norm()
    assert torch.allclose(total, current + distill, atol=1e-6)
    # It pulls the old-class logits back towards the old model's: one step along -gradient lowers it.
    before = lwf.losses(x[rows], y[rows])["distill"].item()
    sizes = [p.numel() for p in lwf.net.parameters()]
    with torch.no_grad():
        for parameter, step in zip(lwf.net.parameters(), torch.split(distill, sizes)):
            parameter -= 1e-2 * step.view_as(parameter)
    assert lwf.losses(x[rows], y[rows])["distill"].item() < before


def test_distillation_keeps_the_old_models_predictions_among_the_old_classes():
    """After a two-class task, LwF's argmax over the old classes still agrees with the old model's on almost
    every row (its soft targets); fine-tuning's drifts on a fifth of them."""
    x, y = blobs(4, 12, seed=0)
    test_x, _ = blobs(4, 40, seed=1)
    agreement, divergence = {}, {}
    for kind in (FineTune, LwF):
        learner = kind(mlp(4, seed=0), generator=torch.Generator().manual_seed(0), optim=FAST)
        train(learner, [(0, 1)], x, y, steps=150)
        old = learner.logits(test_x)[:, :2]
        train_task(learner, 1, (2, 3), x, y, steps=150)
        new = learner.logits(test_x)[:, :2]
        agreement[kind] = float((new.argmax(1) == old.argmax(1)).float().mean())
        divergence[kind] = float(F.kl_div(new.log_softmax(1), old.softmax(1), reduction="batchmean"))
    assert agreement[LwF] >= 0.95 and agreement[FineTune] <= 0.9, agreement
    assert divergence[LwF] < divergence[FineTune] / 10, divergence


def test_the_distillation_ignores_the_newest_logit_so_a_one_class_task_collapses_both_alike():
    old_logits, logits = torch.randn(6, 3), torch.randn(6, 4, requires_grad=True)
    soft_cross_entropy(logits[:, :3], old_logits, 2.0).backward()
    assert torch.equal(logits.grad[:, 3], torch.zeros(6))  # no pull on the new class's logit
    current = F.cross_entropy(logits, torch.full((6,), 3))
    assert torch.autograd.grad(current, logits)[0][:, 3].max() < 0  # the CE raises it

    x, y = blobs(4, 12, seed=0, shared=True)
    test_x, test_y = blobs(4, 12, seed=1, shared=True)
    finetune, lwf = pair([(0, 1, 2), (3,)], x, y, steps=100)
    for learner in (finetune, lwf):
        predicted = learner.logits(test_x).argmax(1)
        assert (predicted == 3).all()  # every row: the newest class, so 25% of the seen rows right
    # ... while the distillation did act on the old classes, which only the seen-class argmax hides.
    assert accuracy_among(lwf, (0, 1, 2), test_x, test_y) >= accuracy_among(finetune, (0, 1, 2), test_x, test_y) + 20


def test_the_first_task_is_the_same_for_both_learners():
    """Until there is an old model, LwF is fine-tuning step for step: their first task's networks are equal."""
    x, y = blobs(4, 8, seed=0)
    finetune, lwf = pair([(0, 1)], x, y, steps=20)
    assert all(torch.equal(a, b) for a, b in zip(finetune.net.parameters(), lwf.net.parameters()))
