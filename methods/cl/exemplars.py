"""Exemplar memory by herding, for the class-incremental baselines that store training images.

eTag is exemplar-free, but some methods its appendix compares against keep a few images of
every old class and train on them beside the new task's data (DER, FOSTER, PodNet). They
share this memory:

- :func:`herding_order` is iCaRL's herding (Rebuffi et al., CVPR 2017, Alg. 4): on the
  L2-normalised features ``phi(x)`` of one class, with mean ``mu``, pick at step ``k`` the
  sample ``p_k = argmin_x || mu - (phi(x) + sum_{j<k} phi(p_j)) / k ||``. Each prefix of the
  order is the herding choice for a smaller memory, so a class shrinks by truncation.
- :class:`ExemplarMemory` holds the images, with either a fixed total budget shared equally
  by the seen classes (PyCIL's ``memory_size``, 2,000 on CIFAR-100) or a fixed count per class
  (PyCIL's ``fixed_memory``, PodNet's 20).
- :class:`ExemplarLearner` is an :class:`~methods.cl.incremental.IncrementalLearner` whose
  training set is the task's rows plus the memory (the loop trains on their union, as PyCIL
  concatenates its memory into the task's dataset) and whose memory is updated after each task.

Exemplars are stored un-augmented; the loop augments them with the task's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.incremental import Batches, IncrementalLearner

Features = Callable[[torch.Tensor], torch.Tensor]
"""``(N, C, H, W)`` images -> ``(N, D)`` features; called without gradients."""


def herding_order(features: torch.Tensor, m: int) -> torch.Tensor:
    """The first ``m`` samples of one class in iCaRL's herding order.

    Parameters
    ----------
    features : torch.Tensor
        ``(N, D)`` features of the class's samples (normalised here, row by row, to unit L2 norm).
    m : int
        Samples to choose, ``0 <= m <= N``.

    Returns
    -------
    torch.Tensor
        ``(m,)`` int64 row indices, distinct, in the order herding picks them.
    """
    n = features.shape[0]
    if not 0 <= m <= n:
        raise ValueError(f"cannot choose {m} of {n} samples")
    phi = F.normalize(features.double(), dim=1)
    mean = phi.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mean)
    available = torch.ones(n, dtype=torch.bool, device=phi.device)
    for k in range(1, m + 1):
        distance = (mean - (running + phi) / k).norm(dim=1)
        distance[~available] = float("inf")
        pick = int(distance.argmin())
        chosen.append(pick)
        running += phi[pick]
        available[pick] = False
    return torch.tensor(chosen, dtype=torch.long)


class ExemplarMemory:
    """Images of the seen classes kept by herding, with a total or a per-class budget.

    Parameters
    ----------
    budget : int, optional
        Images in all (each of ``n`` seen classes keeps ``budget // n``).
    per_class : int, optional
        Images per class. Exactly one of ``budget`` and ``per_class`` is given.

    Attributes
    ----------
    x : torch.Tensor
        ``(M, C, H, W)`` stored images, class by class, each in herding order.
    y : torch.Tensor
        ``(M,)`` int64 their labels.
    """

    def __init__(self, budget: int | None = None, per_class: int | None = None):
        if (budget is None) == (per_class is None):
            raise ValueError("give exactly one of budget and per_class")
        if (budget if budget is not None else per_class) < 1:
            raise ValueError("an exemplar memory needs room for at least one image")
        self.budget, self.per_class = budget, per_class
        self.x: torch.Tensor | None = None
        self.y = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.y)

    def quota(self, n_seen: int) -> int:
        """Images each class keeps once ``n_seen`` classes have been seen."""
        return self.per_class if self.per_class is not None else self.budget // max(n_seen, 1)

    @torch.no_grad()
    def update(self, task_x: torch.Tensor, task_y: torch.Tensor, features_fn: Features,
               seen_classes: Sequence[int]) -> None:
        """Shrink the stored classes to the new quota, then herd the task's new classes.

        Parameters
        ----------
        task_x, task_y : torch.Tensor
            The task's un-augmented images ``(N, C, H, W)`` and int64 labels ``(N,)``.
        features_fn : callable
            The features herding ranks the images by (the learner's current extractor).
        seen_classes : sequence of int
            Every class seen so far, the task's included.
        """
        quota = self.quota(len(seen_classes))
        keep = torch.cat([(self.y == c).nonzero().flatten()[:quota] for c in self.y.unique().tolist()]
                         or [torch.zeros(0, dtype=torch.long)])
        parts_x = [] if self.x is None else [self.x[keep]]
        parts_y = [self.y[keep]]
        for c in task_y.unique().tolist():
            rows = (task_y == c).nonzero().flatten()
            features = torch.cat([features_fn(task_x[rows[i:i + 256]]).cpu() for i in range(0, len(rows), 256)])
            chosen = rows.cpu()[herding_order(features, min(quota, len(rows)))]
            parts_x.append(task_x[chosen.to(task_x.device)])
            parts_y.append(torch.full((len(chosen),), c, dtype=torch.long))
        self.x, self.y = torch.cat(parts_x), torch.cat(parts_y)


class ExemplarLearner(IncrementalLearner):
    """A learner that trains on the task's rows plus an :class:`ExemplarMemory`, updated after each task.

    Subclasses implement :meth:`losses` and :meth:`exemplar_features` (the features herding
    uses, e.g. the extractor's pooled output). ``end_task`` of a subclass that extends it
    should call ``super().end_task`` after its own end-of-task training, so that herding
    sees the final extractor.
    """

    def __init__(self, net, *, memory: ExemplarMemory, **kwargs):
        super().__init__(net, **kwargs)
        self.memory = memory
        self._task_x: torch.Tensor | None = None
        self._task_y: torch.Tensor | None = None

    @property
    def stored_exemplars(self) -> int:
        return len(self.memory)

    def training_set(self, task_x: torch.Tensor, task_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The task's rows followed by the stored exemplars (on the task's device)."""
        self._task_x, self._task_y = task_x, task_y
        if not len(self.memory):
            return task_x, task_y
        return (torch.cat([task_x, self.memory.x.to(task_x.device)]),
                torch.cat([task_y, self.memory.y.to(task_y.device)]))

    def exemplar_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, D)`` features herding ranks the images by."""
        raise NotImplementedError

    @torch.no_grad()
    def _features_eval(self, inputs: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        return self.exemplar_features(inputs.to(self.device))

    def end_task(self, batches: Batches, last: bool) -> None:
        """Herd the task's classes into the memory (after the last task too: the record counts what is kept)."""
        self.memory.update(self._task_x, self._task_y.cpu(), self._features_eval, self.seen_classes)
