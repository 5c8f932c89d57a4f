"""Class-incremental learning without task ids: class splits, the training loop, evaluation and metrics.

The protocol of eTag (docs/papers/etag.md) and of the exemplar-free
literature it follows (Hou et al. 2019; FACIL, Masana et al. 2022): a first task of
``first`` classes, then ``n_tasks`` equal tasks over the remaining classes; after each
task the learner is scored on the test rows of every class seen so far, with no task id.

- :func:`class_splits` builds the splits; :func:`old_task_factor` is eTag's weight ``F``
  of old against new classes.
- :class:`IncrementalLearner` is the small interface :func:`train_incremental` drives:
  ``begin_task`` / ``train_step`` (one optimizer step on one batch) / ``end_epoch`` /
  ``end_task`` (e.g. eTag's generator training) / ``logits``, and ``training_set`` (what a
  task's epochs draw from: the task's rows, plus stored exemplars for the methods that keep
  them, :mod:`methods.cl.exemplars`). Its base class holds the
  optimizer all learners share (:class:`AdamSchedule`, eTag's settings), so fine-tuning,
  LwF and eTag are compared under the same optimization.
- :func:`evaluate_seen` and :func:`average_incremental_accuracy` are the metrics;
  forgetting is :func:`methods.cl.metrics.forgetting` (max minus final, FACIL's form) on
  the per-task matrix.

Choice (ours, stated as the brief asks): the prediction is the argmax over the logits of
the classes seen so far (the single head masked to seen classes, which equals FACIL's
argmax over the heads grown so far). eTag's public ``eTag_eval.py`` takes the argmax over
all ``num_class`` logits instead; ``restrict_to_seen=False`` gives that.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from methods.cl.er import Augmentation
from methods.cl.metrics import forgetting
from methods.cl.streams import random_crop_flip

Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]
"""A zero-argument callable that yields one epoch of (inputs, labels) batches of the current task."""


def class_splits(n_classes: int, first: int, n_tasks: int, order: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Classes of each task: a first task of ``first`` classes, then ``n_tasks`` equal tasks over the rest.

    Parameters
    ----------
    n_classes : int
        Classes in the dataset (100 for CIFAR-100).
    first : int
        Classes of the first task (eTag's ``-nb_cl_fg``; 50 in its main setting).
        ``first == n_classes // (n_tasks + 1)`` gives ``n_tasks + 1`` equal tasks.
    n_tasks : int
        Tasks after the first (eTag's ``-num_task``); 0 is one task of all classes (joint).
    order : sequence of int, optional
        A permutation of ``range(n_classes)``: the learning order (eTag: a seed-dependent
        permutation). Default ``0, 1, ...``.

    Returns
    -------
    list of tuple of int
        ``n_tasks + 1`` tuples of class ids.
    """
    if not 0 < first <= n_classes:
        raise ValueError(f"the first task needs between 1 and {n_classes} classes, got {first}")
    if n_tasks < 0:
        raise ValueError(f"n_tasks must be >= 0, got {n_tasks}")
    rest = n_classes - first
    if (n_tasks == 0 and rest) or (n_tasks > 0 and (rest == 0 or rest % n_tasks)):
        raise ValueError(f"the {rest} classes after the first task do not split into {n_tasks} equal tasks")
    order = list(range(n_classes)) if order is None else [int(c) for c in order]
    if sorted(order) != list(range(n_classes)):
        raise ValueError(f"order must be a permutation of range({n_classes})")
    step = rest // n_tasks if n_tasks else 0
    return [tuple(order[:first])] + [tuple(order[first + i * step:first + (i + 1) * step]) for i in range(n_tasks)]


def old_task_factor(n_old: int, n_new: int) -> float:
    """eTag's ``F`` (``old_task_factor``): old classes per new class, ``n_old / n_new``.

    The public code computes ``first // per_task + t - 1`` at task ``t`` (docs/papers/etag.md),
    which equals ``n_old / n_new`` whenever ``first`` is a multiple of the per-task count,
    as in every split of the paper (50 + 5/10/25 tasks; equal tasks give ``F = t``). For
    other splits we keep the ratio exact (ours) rather than floor it, so that the weights
    ``1/(F+1)`` and ``F/(F+1)`` are the new and old shares of the seen classes.
    """
    if n_new <= 0:
        raise ValueError("a task needs at least one new class")
    return n_old / n_new


def average_incremental_accuracy(accuracies: Sequence[float]) -> float:
    """A of Hou et al. (2019): the mean over steps (the first included) of the accuracy on all seen classes.

    Parameters
    ----------
    accuracies : sequence of float
        Accuracy (%) on the test rows of all classes seen after each step, ``(T,)``.
    """
    values = np.asarray(accuracies, dtype=float)
    if values.size == 0:
        raise ValueError("no step to average")
    return float(values.mean())


@torch.no_grad()
def evaluate_seen(logits_fn: Callable[[torch.Tensor], torch.Tensor], test_x: torch.Tensor, test_y: torch.Tensor,
                  splits: Sequence[Sequence[int]], step: int, *, batch_size: int = 256,
                  restrict_to_seen: bool = True) -> tuple[float, np.ndarray]:
    """Accuracy (%) after ``step`` on all seen classes, and on each task's classes, without task ids.

    Parameters
    ----------
    logits_fn : callable
        ``(N, C, H, W)`` test inputs (on ``test_x``'s device) -> ``(N, n_classes)`` logits
        (:meth:`IncrementalLearner.logits` moves them to the network's device).
    test_x, test_y : torch.Tensor
        Test inputs and int64 labels ``(N,)``, on one device.
    splits : sequence of sequence of int
        The classes of each task (:func:`class_splits`).
    step : int
        Index of the last task trained; tasks ``0..step`` are seen.
    restrict_to_seen : bool
        Argmax over the seen classes' logits (default) or over all logits (eTag's public eval).

    Returns
    -------
    seen : float
        Accuracy on every test row of a seen class: the per-step accuracy that A averages.
    per_task : np.ndarray
        ``(len(splits),)`` accuracy on each seen task's rows, NaN for tasks after ``step``.
    """
    seen_classes = torch.tensor([c for task in splits[:step + 1] for c in task], device=test_y.device)
    rows = torch.isin(test_y, seen_classes).nonzero().flatten()
    predictions = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        logits = logits_fn(test_x[batch])
        if restrict_to_seen:
            chosen = seen_classes.to(logits.device)
            predictions.append(chosen[logits[:, chosen].argmax(1)].to(test_y.device))
        else:
            predictions.append(logits.argmax(1).to(test_y.device))
    labels = test_y[rows]
    hits = torch.cat(predictions) == labels if predictions else torch.zeros(0, dtype=torch.bool)
    per_task = np.full(len(splits), np.nan)
    for index, task in enumerate(splits[:step + 1]):
        own = torch.isin(labels, torch.tensor(list(task), device=labels.device))
        per_task[index] = 100.0 * float(hits[own].float().mean()) if own.any() else np.nan
    return 100.0 * float(hits.float().mean()) if len(hits) else float("nan"), per_task


@dataclass(frozen=True)
class AdamSchedule:
    """The feature extractor's optimizer of eTag (docs/papers/etag.md), shared by every learner here.

    Adam with L2 weight decay, the learning rate multiplied by ``decay`` every
    ``decay_step`` epochs (``StepLR``), gradients clipped to norm ``clip_norm``; a fresh
    optimizer and schedule at each task, as eTag's ``train_task``.

    Attributes
    ----------
    lr : float
        1e-3 (eTag's backbone learning rate).
    weight_decay : float
        2e-4.
    decay_step : int
        Epochs between decays: 30 (``scripts/run.sh``; the code's default of 200 is a defect).
    decay : float
        0.1.
    clip_norm : float
        1e4 (in effect a guard against blow-ups only).
    """

    lr: float = 1e-3
    weight_decay: float = 2e-4
    decay_step: int = 30
    decay: float = 0.1
    clip_norm: float = 1e4

    def build(self, parameters) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
        optimizer = torch.optim.Adam(parameters, lr=self.lr, weight_decay=self.weight_decay)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, self.decay_step, self.decay)


class IncrementalLearner:
    """A class-incremental learner: the hooks :func:`train_incremental` calls, and the shared optimizer step.

    Subclasses implement :meth:`losses` (the loss terms of one batch, with a ``"total"``
    entry; it also sets the train/eval mode it needs) and, where needed, extend
    :meth:`begin_task` and :meth:`end_task`. No learner here stores training inputs:
    :attr:`stored_exemplars` is 0 by construction (exemplar-free).

    Parameters
    ----------
    net : nn.Module
        The network, on the target device.
    generator : torch.Generator
        CPU generator for shuffling, augmentation and every draw a learner makes.
    optim : AdamSchedule, optional
        Optimizer of ``net``, default ``AdamSchedule()`` (eTag's); the same for every
        learner (a fair comparison).

    Attributes
    ----------
    task : int
        Index of the current task (-1 before the first).
    classes, old_classes : tuple of int
        Classes of the current task, and of the tasks before it.
    history : list of dict
        One entry per epoch: ``task``, ``phase``, ``epoch`` and the mean of each loss term.
    """

    stored_exemplars = 0

    def __init__(self, net: nn.Module, *, generator: torch.Generator, optim: AdamSchedule | None = None):
        self.net = net
        self.generator = generator
        self.optim = AdamSchedule() if optim is None else optim
        self.task = -1
        self.classes: tuple[int, ...] = ()
        self.old_classes: tuple[int, ...] = ()
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.StepLR | None = None
        self.history: list[dict] = []
        self._sums: dict[str, torch.Tensor] = {}
        self._steps = 0

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def seen_classes(self) -> tuple[int, ...]:
        return self.old_classes + self.classes

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        """Called before the first epoch of each task, with the task's classes."""
        self.old_classes = self.seen_classes
        self.classes = tuple(int(c) for c in classes)
        self.task = task
        self.optimizer, self.scheduler = self.optim.build(self.net.parameters())

    def training_set(self, task_x: torch.Tensor, task_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the task's epochs draw their batches from, given the task's un-augmented rows: those rows.

        Learners that store exemplars add them (:class:`methods.cl.exemplars.ExemplarLearner`).
        """
        return task_x, task_y

    def losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss terms of one batch ``(B, C, H, W)``, ``(B,)``; ``"total"`` is minimized."""
        raise NotImplementedError

    def train_step(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimizer step on a (possibly augmented) current-task batch; returns the detached loss terms."""
        terms = self.losses(inputs, labels)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), self.optim.clip_norm)
        self.optimizer.step()
        return self.record({name: value.detach() for name, value in terms.items()})

    def record(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add a step's loss terms to the running epoch sums (kept as tensors: no device sync per step)."""
        for name, value in terms.items():
            self._sums[name] = self._sums.get(name, 0.0) + value
        self._steps += 1
        return terms

    def close_epoch(self, phase: str, epoch: int) -> None:
        """Append the epoch's mean loss terms to :attr:`history` and reset the sums."""
        means = {name: float(total) / max(self._steps, 1) for name, total in self._sums.items()}
        self.history.append({"task": self.task, "phase": phase, "epoch": epoch, **means})
        self._sums, self._steps = {}, 0

    def end_epoch(self, epoch: int) -> None:
        """Called after each training epoch: steps the learning-rate schedule."""
        self.close_epoch("network", epoch)
        self.scheduler.step()

    def end_task(self, batches: Batches, last: bool) -> None:
        """Called after the last epoch of each task; ``batches()`` yields one more epoch of the task's data."""

    @torch.no_grad()
    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` (any device) -> ``(N, n_classes)`` logits in eval mode, on the network's device."""
        self.net.eval()
        return self.net(inputs.to(self.device))


@dataclass
class IncrementalResult:
    """What :func:`train_incremental` measures.

    Attributes
    ----------
    seen_accuracy : np.ndarray
        ``(T,)`` accuracy (%) on all classes seen after each step.
    task_accuracy : np.ndarray
        ``(T, T)``: row ``i`` is the accuracy (%) on each task's classes after step ``i``,
        NaN for tasks not yet seen.
    train_seconds, test_seconds : float
        Wall time of training (every hook, generator training included) and of the
        evaluations, summed over the steps (the paper's Table C.5 reports both).
    """

    seen_accuracy: np.ndarray
    task_accuracy: np.ndarray
    train_seconds: float
    test_seconds: float

    @property
    def average_incremental_accuracy(self) -> float:
        return average_incremental_accuracy(self.seen_accuracy)

    @property
    def forgetting(self) -> float:
        """FACIL's average forgetting: mean over old tasks of best earlier minus final accuracy."""
        return forgetting(self.task_accuracy)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` in eval mode with gradients off: the "old model" of distillation methods."""
    frozen = copy.deepcopy(module).eval()
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    return frozen


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _epoch(learner: IncrementalLearner, train_x: torch.Tensor, train_y: torch.Tensor, rows: torch.Tensor,
           batch_size: int, augment: Augmentation, fill: torch.Tensor,
           drop_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled epoch over ``rows``: augmented inputs and labels on the learner's device."""
    device = learner.device
    order = rows[torch.randperm(len(rows), generator=learner.generator).to(rows.device)]
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for first in range(0, stop, batch_size):
        batch = order[first:first + batch_size]
        inputs, labels = train_x[batch].to(device), train_y[batch].to(device)
        if augment.padding or augment.flip:
            inputs = random_crop_flip(inputs, augment.padding, augment.flip, fill, learner.generator)
        yield inputs, labels


def train_incremental(learner: IncrementalLearner, train_x: torch.Tensor, train_y: torch.Tensor,
                      test_x: torch.Tensor, test_y: torch.Tensor, splits: Sequence[Sequence[int]], *, epochs: int,
                      batch_size: int, augment: Augmentation | None = None, fill: torch.Tensor | None = None,
                      drop_last: bool = False, eval_batch_size: int = 256,
                      restrict_to_seen: bool = True) -> IncrementalResult:
    """Train ``learner`` on the tasks of ``splits`` in order, evaluating on all seen classes after each.

    Parameters
    ----------
    learner : IncrementalLearner
    train_x, test_x : torch.Tensor
        Normalised images ``(N, C, H, W)`` (any device; batches move to the learner's).
    train_y, test_y : torch.Tensor
        int64 labels ``(N,)``.
    splits : sequence of sequence of int
        The classes of each task (:func:`class_splits`).
    epochs : int
        Epochs of the network per task (eTag: 100 on CIFAR-100; no default, the public
        code's default of 1 is a defect).
    batch_size : int
        128 in eTag.
    augment : Augmentation, optional
        Random crop padding and flip of training batches (CIFAR: padding 4, flip); also
        applied to the batches a learner's ``end_task`` draws. Default: none.
    fill : torch.Tensor, optional
        ``(C,)`` value of the crop padding (``black_level(spec)``); default zeros.
    drop_last : bool
        Drop each epoch's last incomplete batch (eTag's loaders do).
    eval_batch_size : int
    restrict_to_seen : bool
        See :func:`evaluate_seen`.

    Returns
    -------
    IncrementalResult
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    device = learner.device
    augment = Augmentation() if augment is None else augment
    fill = torch.zeros(train_x.shape[1], device=train_x.device) if fill is None else fill
    seen, matrix, train_seconds, test_seconds = [], [], 0.0, 0.0
    for index, classes in enumerate(splits):
        rows = torch.isin(train_y, torch.tensor(list(classes), device=train_y.device)).nonzero().flatten()
        task_x, task_y = learner.training_set(train_x[rows], train_y[rows])
        task_rows = torch.arange(len(task_y), device=task_y.device)

        def batches(task_x=task_x, task_y=task_y, task_rows=task_rows):
            return _epoch(learner, task_x, task_y, task_rows, batch_size, augment, fill, drop_last)

        _synchronize(device)
        start = time.perf_counter()
        learner.begin_task(index, classes)
        for epoch in range(epochs):
            for inputs, labels in batches():
                learner.train_step(inputs, labels)
            learner.end_epoch(epoch)
        learner.end_task(batches, last=index == len(splits) - 1)
        _synchronize(device)
        middle = time.perf_counter()
        accuracy, per_task = evaluate_seen(learner.logits, test_x, test_y, splits, index,
                                           batch_size=eval_batch_size, restrict_to_seen=restrict_to_seen)
        _synchronize(device)
        train_seconds += middle - start
        test_seconds += time.perf_counter() - middle
        seen.append(accuracy)
        matrix.append(per_task)
    return IncrementalResult(np.array(seen), np.stack(matrix), train_seconds, test_seconds)
