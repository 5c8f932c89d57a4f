"""What a rehearsal learner trains: a network split into an input encoder and a classifier.

Replay methods store *encoded* examples. For a plain network the encoding is the image
itself; CLFD stores the output of its frozen frequency encoder instead (a quarter of the
image's size). :class:`ContinualNet` makes that split explicit, and carries the hooks a
learner calls at task and epoch boundaries, so a frequency-domain network plugs into ER,
DER++ and ER-ACE without changing their losses.
"""

from __future__ import annotations

import torch
from torch import nn


class ContinualNet(nn.Module):
    """Input -> stored representation (``encode``) -> logits (``classify``).

    Parameters
    ----------
    black : torch.Tensor
        ``(C,)`` normalised value of a black pixel; the encoding of a black image is the
        padding fill of replay-time crops (:meth:`replay_fill`).

    Attributes
    ----------
    downsample : int
        Input side / stored side; replay crops pad ``padding // downsample`` (CLFD: 2).
    """

    downsample = 1

    def __init__(self, black: torch.Tensor):
        super().__init__()
        self.register_buffer("black", black.detach().clone().float())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` normalised images -> the representation the buffer stores."""
        return x

    def classify(self, encoded: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Representation -> ``(N, K)`` logits; ``labels`` marks current-task training samples."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.encode(x))

    @torch.no_grad()
    def replay_fill(self) -> torch.Tensor:
        """``(C',)`` value of the stored representation of a black image."""
        side = 2 * self.downsample
        image = self.black.view(1, -1, 1, 1).expand(1, -1, side, side)
        return self.encode(image)[0, :, 0, 0]

    def stores_replay(self) -> bool:
        """Whether the buffer may receive encodings now (CLFD: only once its encoder is frozen)."""
        return True

    def begin_task(self, task: int, classes: tuple[int, ...], n_epochs: int) -> None:
        """Called before the first epoch of each task."""

    def begin_epoch(self, epoch: int) -> None:
        """Called before each epoch of the current task."""

    def end_epoch(self, epoch: int) -> None:
        """Called after each epoch of the current task."""

    def observe_inputs(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Called with every non-augmented current-task batch before its training step."""


class PlainNet(ContinualNet):
    """A backbone with ``features``/``classify`` (e.g. :class:`~methods.cl.backbones.ResNet`) on raw images."""

    def __init__(self, backbone: nn.Module, black: torch.Tensor):
        super().__init__(black)
        self.backbone = backbone

    def classify(self, encoded: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.backbone(encoded)
