"""A frozen convolutional extractor with a feature-level model on top: the CIFAR protocol of BI-R and GC.

On CIFAR-100, brain-inspired replay (van de Ven, Siegelmann & Tolias 2020) and the generative
classifier (van de Ven, Li & Tolias 2021) both pre-train their convolutional layers, freeze them,
and learn every task with fully-connected models on the frozen layers' output. Their
pre-training uses CIFAR-10, which this suite's class-incremental harness does not provide; here
(our deviation, docs/papers/etag.md) the extractor is pre-trained on the **first task** instead:

- task 0: the ResNet and its own linear head train with cross-entropy over the first task's
  classes for the loop's epochs (the shared :class:`~methods.cl.incremental.AdamSchedule`, as
  fine-tuning's first task);
- end of task 0: the extractor is frozen (``requires_grad`` off, batch norm in eval mode) and the
  feature-level model trains on the first task's features for as many epochs as the extractor
  did (its own optimizer, from the same schedule);
- task ``t > 0``: every step of the loop trains the feature-level model on the frozen features of
  the batch; the extractor never changes again.

Subclasses implement :meth:`FrozenFeatureLearner.begin_features` (the feature model's optimizer
for a task) and :meth:`FrozenFeatureLearner.feature_losses`; their ``net`` is a
:class:`FrozenFeatureNet`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from methods.cl.backbones import ResNet
from methods.cl.exemplar_free import FineTune
from methods.cl.incremental import AdamSchedule, Batches


class FrozenFeatureNet(nn.Module):
    """A ResNet extractor and a feature-level model: ``forward(x) = model(backbone.features(x))``.

    Parameters
    ----------
    backbone : ResNet
        ``features`` maps ``(N, C, H, W)`` to ``(N, d)``; its ``fc`` head serves the first task's
        pre-training only.
    model : nn.Module
        Maps ``(N, d)`` features to ``(N, n_classes)`` class scores.
    """

    def __init__(self, backbone: ResNet, model: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.backbone.features(x))


class FrozenFeatureLearner(FineTune):
    """Pre-train the extractor on task 0, freeze it, train :attr:`FrozenFeatureNet.model` on its features.

    Attributes
    ----------
    frozen : bool
        Whether the extractor is frozen (from the end of the first task's epochs on).
    first_epochs : int
        Epochs the loop ran in the first task; the feature model trains as many on its features.
    """

    def __init__(self, net: FrozenFeatureNet, *, generator: torch.Generator, optim: AdamSchedule | None = None):
        super().__init__(net, generator=generator, optim=optim)
        self.frozen = False
        self.first_epochs = 0

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        if self.frozen:
            self.begin_features()

    def begin_features(self) -> None:
        """Set :attr:`optimizer` and :attr:`scheduler` for the feature model's training in this task."""
        raise NotImplementedError

    def feature_losses(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss terms of one batch of frozen features ``(B, d)`` and labels ``(B,)``, with ``"total"``."""
        raise NotImplementedError

    @torch.no_grad()
    def extract(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, d)`` features of the frozen extractor (eval mode)."""
        self.net.backbone.eval()
        return self.net.backbone.features(inputs)

    def losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Before freezing: CE of the backbone's own head over the seen classes; after: :meth:`feature_losses`."""
        if not self.frozen:
            self.net.train()
            current = self.current_loss(self.net.backbone(inputs), labels)
            return {"current": current, "total": current}
        self.net.model.train()
        return self.feature_losses(self.extract(inputs), labels)

    def end_epoch(self, epoch: int) -> None:
        if not self.frozen:
            self.first_epochs += 1
        self.close_epoch("features" if self.frozen else "network", epoch)
        self.scheduler.step()

    def end_task(self, batches: Batches, last: bool) -> None:
        """After the first task's epochs: freeze the extractor and train the feature model as many epochs."""
        if self.frozen:
            return
        self.net.backbone.requires_grad_(False)
        self.net.backbone.eval()
        self.frozen = True
        self.begin_features()
        for epoch in range(self.first_epochs):
            for inputs, labels in batches():
                self.train_step(inputs, labels)
            self.end_epoch(epoch)
