"""Exemplar-free class-incremental baselines of eTag's tables: fine-tuning and LwF.

Both train a single-head network over all classes (e.g. :func:`~methods.cl.backbones.resnet18`,
``forward(x) -> (N, n_classes)`` logits) behind the same
:class:`~methods.cl.incremental.IncrementalLearner` interface as :class:`~methods.cl.etag.ETag`,
with the same optimizer (:class:`~methods.cl.incremental.AdamSchedule`: Adam, lr 1e-3, weight
decay 2e-4, x0.1 every 30 epochs, clipping at 1e4), so that only the losses differ from eTag.
:func:`build_finetune` and :func:`build_lwf` build them on a fresh ResNet-18 with eTag's
initialisation (:func:`~methods.cl.etag.torchvision_init_`).

Choice (FACIL's, whose settings the paper's comparisons follow; docs/papers/etag.md): the
cross-entropy is taken over the logits of the classes seen so far, as FACIL's growing
heads; logits of classes not yet seen take no part in training. Batch norm trains as usual
(train mode) in every task.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.backbones import resnet18
from methods.cl.etag import torchvision_init_
from methods.cl.incremental import AdamSchedule, IncrementalLearner, frozen_copy


class FineTune(IncrementalLearner):
    """Fine-tuning ("Fine", the lower bound): cross-entropy on the current task's data only."""

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        self.seen_index = torch.tensor(self.seen_classes, device=self.device)
        lookup = torch.full((int(self.seen_index.max()) + 1,), -1, dtype=torch.long, device=self.device)
        lookup[self.seen_index] = torch.arange(len(self.seen_index), device=self.device)
        self.position = lookup

    def current_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CE over the seen classes' logits ``(B, K)``, labels ``(B,)`` mapped to their positions."""
        return F.cross_entropy(logits[:, self.seen_index], self.position[labels])

    def losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.net.train()
        current = self.current_loss(self.net(inputs), labels)
        return {"current": current, "total": current}


def soft_cross_entropy(logits: torch.Tensor, old_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """LwF's distillation: ``-sum softmax(old / T) * log_softmax(new / T)``, averaged over the batch.

    Li & Hoiem (2016), Eq. 2 with ``T = 2``, as FACIL's ``lwf.cross_entropy`` (no ``T^2``
    factor). It differs from the KL divergence by the old model's entropy, a constant, so
    the gradients are the same.
    """
    return -(F.softmax(old_logits / temperature, 1) * F.log_softmax(logits / temperature, 1)).sum(1).mean()


class LwF(FineTune):
    """Learning without Forgetting (Li & Hoiem 2016), class-incremental with one head (FACIL's ``lwf``).

    ``CE(seen-class logits, y) + lamb * soft_CE_T(new old-class logits, frozen old model's
    old-class logits)`` on the current batch, the old model being the network at the end of
    the previous task.

    Parameters
    ----------
    net : nn.Module
    generator : torch.Generator
    optim : AdamSchedule, optional
        Default ``AdamSchedule()``, eTag's settings.
    lamb : float
        Weight of the distillation term: 1 (FACIL's default).
    temperature : float
        2 (Li & Hoiem; FACIL).
    """

    def __init__(self, net: nn.Module, *, generator: torch.Generator, optim: AdamSchedule | None = None,
                 lamb: float = 1.0, temperature: float = 2.0):
        super().__init__(net, generator=generator, optim=optim)
        self.lamb = lamb
        self.temperature = temperature
        self.old_net: nn.Module | None = None

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        self.old_net = None
        if task > 0:
            self.old_net = frozen_copy(self.net)
            self.old_index = torch.tensor(self.old_classes, device=self.device)

    def losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.net.train()
        logits = self.net(inputs)
        current = self.current_loss(logits, labels)
        if self.old_net is None:
            return {"current": current, "total": current}
        with torch.no_grad():
            old_logits = self.old_net(inputs)[:, self.old_index]
        distill = self.lamb * soft_cross_entropy(logits[:, self.old_index], old_logits, self.temperature)
        return {"current": current, "distill": distill, "total": current + distill}


def build_finetune(n_classes: int, width: int, channels: int, *, generator: torch.Generator,
                   optim: AdamSchedule | None = None) -> FineTune:
    """Fine-tuning on a fresh ResNet-18 (``n_classes`` outputs, base ``width``, ``channels`` inputs), eTag's init."""
    return FineTune(torchvision_init_(resnet18(n_classes, width, channels)), generator=generator, optim=optim)


def build_lwf(n_classes: int, width: int, channels: int, *, generator: torch.Generator,
              optim: AdamSchedule | None = None, **hyper) -> LwF:
    """LwF on a fresh ResNet-18 as :func:`build_finetune`; ``hyper``: ``lamb``, ``temperature``."""
    return LwF(torchvision_init_(resnet18(n_classes, width, channels)), generator=generator, optim=optim, **hyper)
