"""LwF as the CLFD table runs it (mammoth's ``lwf``): a warmed-up head and distillation on past classes.

Learning without Forgetting (Li & Hoiem 2016) in mammoth's form, on a
:class:`~methods.cl.model.PlainNet` with plain SGD:

- before each task after the first, the head alone is trained for the task's number of epochs
  on the new classes (features computed with the network in eval mode, cross-entropy over the
  new classes' logits only), which leaves the past classes' logits unchanged; the network is
  then frozen as the old model;
- each step minimises ``CE(seen-class logits, y) + alpha * soft_CE_T(new past-class logits,
  old model's past-class logits)`` (Li & Hoiem's Eq. 2 with ``T = 2``; :func:`soft_cross_entropy`,
  which eTag's exemplar-free LwF uses too). mammoth's "smoothed softmax" ``p^(1/T) / sum p^(1/T)``
  of the softmax ``p`` is the softmax of the logits divided by ``T``, so this is the same term.
  The old model's targets are its logits on the non-augmented inputs (mammoth records them once
  per task with the network in eval mode; the frozen old model gives the same numbers).

It differs from :class:`methods.cl.exemplar_free.LwF` (FACIL's, for eTag's tables) in the head
warm-up, the targets on non-augmented inputs and the optimiser (SGD with weight decay, not Adam).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.er import Learner, TaskBatches
from methods.cl.exemplar_free import soft_cross_entropy
from methods.cl.incremental import frozen_copy


class WarmupLwF(Learner):
    """mammoth's LwF (see the module docstring).

    Parameters
    ----------
    net : PlainNet
        Its ``backbone`` must have ``features(x) -> (N, d)`` and a linear head ``fc``
        (:class:`~methods.cl.backbones.ResNet`).
    alpha : float
        Weight of the distillation term (mammoth's best arguments: 3.0 on Seq-CIFAR-10, 1.0 on
        Seq-Tiny-ImageNet).
    temperature : float
        ``T`` (2).
    weight_decay : float
        SGD weight decay of the main optimiser (5e-4 in mammoth's best arguments; the head warm-up has none).
    **kwargs
        As :class:`~methods.cl.er.Learner`.
    """

    name = "lwf"

    def __init__(self, net, *, alpha: float, temperature: float = 2.0, weight_decay: float = 0.0, **kwargs):
        super().__init__(net, **kwargs)
        backbone = getattr(net, "backbone", None)
        if not (hasattr(backbone, "features") and isinstance(getattr(backbone, "fc", None), torch.nn.Linear)):
            raise ValueError("WarmupLwF needs a network whose backbone has features() and a linear head fc")
        if temperature <= 0:
            raise ValueError(f"the temperature must be > 0, not {temperature}")
        self.alpha = alpha
        self.temperature = temperature
        self.optimizer = torch.optim.SGD(net.parameters(), lr=self.lr, weight_decay=weight_decay)
        self.old_net: torch.nn.Module | None = None
        self.past = torch.zeros(0, dtype=torch.long)
        self.targets: torch.Tensor | None = None
        self.n_epochs = 1
        self.task_classes: tuple[int, ...] = ()

    def begin_task(self, task: int, classes: tuple[int, ...], n_epochs: int) -> None:
        self.past = torch.tensor(self.seen_classes, dtype=torch.long, device=self.net.black.device)
        super().begin_task(task, classes, n_epochs)
        self.n_epochs, self.task_classes = n_epochs, tuple(classes)
        device = self.net.black.device
        self.seen_mask = torch.zeros(self.net.backbone.fc.out_features, dtype=torch.bool, device=device)
        self.seen_mask[torch.tensor(self.seen_classes, device=device)] = True

    def warm_up(self, batches: TaskBatches) -> None:
        """Train the head on the new classes for the task's epochs (not before the first task), then keep
        a frozen copy of the network as the old model."""
        if self.task == 0:
            return
        backbone = self.net.backbone
        device = self.net.black.device
        new = torch.tensor(self.task_classes, device=device)
        position = torch.full((backbone.fc.out_features,), -1, dtype=torch.long, device=device)
        position[new] = torch.arange(len(new), device=device)
        head_optimizer = torch.optim.SGD(backbone.fc.parameters(), lr=self.lr)
        self.net.eval()
        for _ in range(self.n_epochs):
            for inputs, labels, _ in batches():
                with torch.no_grad():
                    features = backbone.features(self.net.encode(inputs))
                head_optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(backbone.fc(features)[:, new], position[labels]).backward()
                head_optimizer.step()
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        self.old_net = frozen_copy(self.net)

    def observe(self, inputs: torch.Tensor, labels: torch.Tensor, raw_inputs: torch.Tensor) -> float:
        """One step; the old model's past-class logits on ``raw_inputs`` are this step's distillation targets."""
        self.targets = None
        if self.old_net is not None:
            with torch.no_grad():
                self.targets = self.old_net(raw_inputs)[:, self.past]
        return super().observe(inputs, labels, raw_inputs)

    def current_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CE over the seen classes' logits, plus ``alpha`` x the distillation when an old model exists."""
        seen = logits.masked_fill(~self.seen_mask, torch.finfo(logits.dtype).min)
        loss = F.cross_entropy(seen, labels)
        if self.targets is not None:
            loss = loss + self.alpha * soft_cross_entropy(logits[:, self.past], self.targets, self.temperature)
        return loss

    def storage_bytes(self) -> int:
        """The old model's parameters and buffers, besides the working network."""
        if self.old_net is None:
            return super().storage_bytes()
        tensors = [*self.old_net.parameters(), *self.old_net.buffers()]
        return super().storage_bytes() + sum(t.numel() * t.element_size() for t in tensors)
