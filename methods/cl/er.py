"""Fine-tuning (SGD), Experience Replay (ER) and ER-ACE, the rehearsal learners of the CLFD table.

Every learner trains a :class:`~methods.cl.model.ContinualNet` with plain SGD (momentum 0,
weight decay 0, as mammoth's ``--optim_mom 0 --optim_wd 0``) on the current batch plus,
for the rehearsal methods, a minibatch drawn from a reservoir buffer of stored encodings.

Choice (ours, following CLFD's ``er_clfd``): the replay minibatch goes through its own
forward pass instead of being concatenated with the current batch as in upstream
mammoth ER; batch-norm statistics therefore see the two batches separately.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.buffer import ReservoirBuffer
from methods.cl.model import ContinualNet
from methods.cl.streams import random_crop_flip

# A task's training data, one shuffled pass per call: ``(inputs, labels, raw_inputs)`` batches (augmented
# images, int64 labels, the same images without augmentation).
TaskBatches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation in image pixels: crop padding and horizontal flip."""

    padding: int = 0
    flip: bool = False


class Learner:
    """Fine-tuning: cross-entropy on the current batch only (the lower bound, "SGD" in the tables).

    Parameters
    ----------
    net : ContinualNet
    lr : float
        SGD learning rate.
    generator : torch.Generator
        CPU generator for buffer draws, replay augmentation and reservoir sampling.
    buffer : ReservoirBuffer, optional
        Needed by the rehearsal subclasses.
    minibatch : int
        Replay minibatch size (mammoth's ``--minibatch_size``; 32 in CLFD).
    augment : Augmentation
        Applied to replayed encodings, with the padding divided by ``net.downsample``.
    """

    name = "sgd"
    uses_buffer = False

    def __init__(self, net: ContinualNet, *, lr: float, generator: torch.Generator,
                 buffer: ReservoirBuffer | None = None, minibatch: int = 32, augment: Augmentation = Augmentation()):
        if self.uses_buffer and buffer is None:
            raise ValueError(f"{self.name} needs a replay buffer")
        self.net = net
        self.lr = lr
        self.generator = generator
        self.buffer = buffer
        self.minibatch = minibatch
        self.augment = augment
        self.optimizer = torch.optim.SGD(net.parameters(), lr=lr)
        self.task = -1
        self.seen_classes: list[int] = []

    def begin_task(self, task: int, classes: tuple[int, ...], n_epochs: int) -> None:
        self.task = task
        self.seen_classes = sorted(set(self.seen_classes) | set(classes))
        self.net.begin_task(task, classes, n_epochs)

    def begin_epoch(self, epoch: int) -> None:
        self.net.begin_epoch(epoch)

    def end_epoch(self, epoch: int) -> None:
        self.net.end_epoch(epoch)

    def warm_up(self, batches: TaskBatches) -> None:
        """Before a task's epochs, after :meth:`begin_task`: a method's preparatory passes over the task
        (LwF's head warm-up). ``batches()`` yields one shuffled pass of ``(inputs, labels, raw_inputs)``.
        Nothing here."""

    def end_task(self, batches: TaskBatches) -> None:
        """After a task's last epoch: a method's consolidation (oEWC's Fisher, SI's importance); ``batches``
        as in :meth:`warm_up`. Nothing here."""

    def eval_net(self) -> ContinualNet:
        """The network evaluated after each task: the working one here (CLS-ER evaluates its stable model)."""
        return self.net

    def replay(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A buffer minibatch, augmented in the stored representation's space."""
        encoded, labels, logits = self.buffer.sample(self.minibatch, generator=self.generator)
        encoded = random_crop_flip(encoded, self.augment.padding // self.net.downsample, self.augment.flip,
                                   self.net.replay_fill(), self.generator)
        return encoded, labels, logits

    def current_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    def replay_loss(self) -> torch.Tensor | None:
        return None

    def extra_loss(self, encoded: torch.Tensor) -> torch.Tensor | None:
        """A method's additional term on the current encoded batch (E2Net's subnet distillation); none here."""
        return None

    def admits(self) -> bool:
        """Whether this step's batch is offered to the buffer (E2Net gates it); always here."""
        return True

    def storage_bytes(self) -> int:
        """Bytes the method keeps besides the working network: the buffer's stored examples (E2Net adds its teacher)."""
        return 0 if self.buffer is None else self.buffer.nbytes

    def observe(self, inputs: torch.Tensor, labels: torch.Tensor, raw_inputs: torch.Tensor) -> float:
        """One SGD step on an augmented batch ``(B, C, H, W)``; returns the loss.

        ``raw_inputs`` are the same images without augmentation: what the buffer stores.
        """
        self.net.train()
        self.net.observe_inputs(raw_inputs, labels)
        self.optimizer.zero_grad(set_to_none=True)
        encoded = self.net.encode(inputs)
        logits = self.net.classify(encoded, labels)
        loss = self.current_loss(logits, labels)
        extra = self.extra_loss(encoded)
        if extra is not None:
            loss = loss + extra
        if self.buffer is not None and not self.buffer.is_empty():
            extra = self.replay_loss()
            if extra is not None:
                loss = loss + extra
        loss.backward()
        self.optimizer.step()
        if self.buffer is not None and self.net.stores_replay() and self.admits():
            with torch.no_grad():
                self.buffer.add(self.net.encode(raw_inputs).detach(), labels, logits.detach(),
                                generator=self.generator)
        return float(loss.detach())


class ER(Learner):
    """Experience Replay (Riemer et al. 2019; mammoth ``er``): CE on current + CE on a replay minibatch."""

    name = "er"
    uses_buffer = True

    def replay_loss(self) -> torch.Tensor:
        encoded, labels, _ = self.replay()
        return F.cross_entropy(self.net.classify(encoded), labels)


class ERACE(ER):
    """ER with Asymmetric Cross-Entropy (Caccia et al. 2022; mammoth ``er_ace``).

    From the second task on, the current batch's CE only sees the classes present in the
    batch and those from the highest seen class on (mammoth's mask); replay uses full CE.
    """

    name = "er_ace"

    def current_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.task > 0:
            mask = torch.zeros_like(logits, dtype=torch.bool)
            mask[:, labels.unique()] = True
            mask[:, max(self.seen_classes):] = True  # mammoth keeps the classes from the highest seen one on
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        return F.cross_entropy(logits, labels)
