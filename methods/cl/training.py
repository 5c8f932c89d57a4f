"""The continual-learning loop: tasks in order, epochs per task, evaluation after each task.

:func:`train_stream` runs a learner over a task stream and returns the class-IL and
task-IL accuracy matrices and the training wall time; :func:`joint_tasks` merges a stream
into one task for the JOINT upper bound. The device is the one the tensors live on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from methods.cl.er import Learner
from methods.cl.model import ContinualNet
from methods.cl.streams import Task, random_crop_flip


@dataclass
class StreamResult:
    """Accuracy matrices (``(T_trained, T)``, %, NaN for unseen tasks) and training time (s)."""

    class_il: np.ndarray
    task_il: np.ndarray
    train_seconds: float


def joint_tasks(tasks: list[Task]) -> list[Task]:
    """One task holding every class and row of ``tasks`` (JOINT: i.i.d. training on the union)."""
    return [Task(tuple(c for task in tasks for c in task.classes),
                 torch.cat([task.train_rows for task in tasks]), torch.cat([task.test_rows for task in tasks]))]


@torch.no_grad()
def evaluate(net: ContinualNet, inputs: torch.Tensor, labels: torch.Tensor, tasks: list[Task], upto: int,
             batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Class-IL and task-IL accuracy (%) on each task's test rows, NaN for tasks after ``upto``.

    Class-IL takes the argmax over all logits; task-IL masks the logits of the other
    tasks' classes (mammoth's ``mask_classes``).
    """
    net.eval()
    device = net.black.device
    class_il = np.full(len(tasks), np.nan)
    task_il = np.full(len(tasks), np.nan)
    for index, task in enumerate(tasks[:upto + 1]):
        own = torch.tensor(task.classes, device=device)
        hits_cil = hits_til = 0
        for start in range(0, len(task.test_rows), batch_size):
            rows = task.test_rows[start:start + batch_size]
            x, y = inputs[rows].to(device), labels[rows].to(device)
            logits = net(x)
            hits_cil += int((logits.argmax(1) == y).sum())
            masked = torch.full_like(logits, float("-inf"))
            masked[:, own] = logits[:, own]
            hits_til += int((masked.argmax(1) == y).sum())
        class_il[index] = 100.0 * hits_cil / max(len(task.test_rows), 1)
        task_il[index] = 100.0 * hits_til / max(len(task.test_rows), 1)
    return class_il, task_il


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_stream(learner: Learner, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, tasks: list[Task], *, n_epochs: int, batch_size: int,
                 stream_augment: bool = True, eval_tasks: list[Task] | None = None) -> StreamResult:
    """Train ``learner`` on ``tasks`` in order and evaluate after each task.

    Parameters
    ----------
    learner : Learner
        Holds the network (on the target device), buffer, optimizer and generator.
    train_x, test_x : torch.Tensor
        Normalised images ``(N, C, H, W)`` (any device; batches move to the network's).
    train_y, test_y : torch.Tensor
        int64 labels ``(N,)``.
    tasks : list of Task
        The stream to train on (``joint_tasks(...)`` for JOINT).
    n_epochs : int
        Epochs per task (the protocol's value; CLFD's public code forced 2, see docs/papers/clfd.md).
    batch_size : int
    stream_augment : bool
        Random crop and flip of current batches with ``learner.augment`` (CLFD's cloud
        protocol: on; its edge protocol: off). Replay augmentation follows ``learner.augment``.
    eval_tasks : list of Task, optional
        The tasks whose test sets are scored (default ``tasks``); for JOINT, the original
        stream, scored once at the end.

    Returns
    -------
    StreamResult
        Row ``i`` of each matrix is the accuracy after training task ``i``, of ``learner.eval_net()``
        (the working network, or CLS-ER's stable model). The time counts training steps and the
        learner's task hooks (``warm_up``, ``end_task``), not evaluation.
    """
    net = learner.net
    device = net.black.device
    eval_tasks = tasks if eval_tasks is None else eval_tasks
    fill = net.black
    augment = learner.augment
    rows_cil, rows_til, seconds = [], [], 0.0
    for index, task in enumerate(tasks):

        def batches(task=task):
            """One pass over the task in a fresh random order: ``(inputs, labels, raw)`` batches."""
            order = task.train_rows[torch.randperm(len(task.train_rows), generator=learner.generator)]
            for first in range(0, len(order), batch_size):
                rows = order[first:first + batch_size]
                raw, labels = train_x[rows].to(device), train_y[rows].to(device)
                inputs = (random_crop_flip(raw, augment.padding, augment.flip, fill, learner.generator)
                          if stream_augment else raw)
                yield inputs, labels, raw

        _synchronize(device)
        start = time.perf_counter()
        learner.begin_task(index, task.classes, n_epochs)
        learner.warm_up(batches)
        for epoch in range(n_epochs):
            learner.begin_epoch(epoch)
            for inputs, labels, raw in batches():
                learner.observe(inputs, labels, raw)
            learner.end_epoch(epoch)
        learner.end_task(batches)
        _synchronize(device)
        seconds += time.perf_counter() - start
        upto = len(eval_tasks) - 1 if len(tasks) == 1 else index
        class_il, task_il = evaluate(learner.eval_net(), test_x, test_y, eval_tasks, upto)
        rows_cil.append(class_il)
        rows_til.append(task_il)
    return StreamResult(np.stack(rows_cil), np.stack(rows_til), seconds)
