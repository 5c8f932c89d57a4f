"""Incremental detection (EGOR): the GFL detector's training pass, NMS, and detector inversion.

- :class:`GflStep`: forward, GFL loss (QFL + GIoU + DFL with ATSS assignment) and backward of the CPU-sized
  GFL detector (``gfl_detector(kind="small")``) on a fixed batch of seeded images with three boxes each.
- :class:`Nms`: greedy NMS (``methods.detection.boxes.nms``) over clustered boxes at the IoU threshold of
  GFL's inference (0.6).
- :class:`Inversion`: EGOR's generation of old-class images from the frozen detector (``invert``) for one
  batch, at a few iterations of the paper's schedule (the cost is linear in them).
"""

import torch

from benchmarks.common import DEVICES, synchronize, torch_setup
from methods.detection.boxes import nms
from methods.detection.detector import Targets, gfl_detector, gfl_loss
from methods.detection.inversion import InversionConfig, invert

CLASSES = 8
WIDTH = 8
SIDE = 128


def _boxes(n: int, side: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` seeded boxes (n, 4) inside a ``side`` square, each 0.1-0.5 of the side."""
    size = side * (0.1 + 0.4 * torch.rand((n, 2), generator=generator))
    corner = (side - size) * torch.rand((n, 2), generator=generator)
    return torch.cat([corner, corner + size], 1)


class GflStep:
    """Forward + GFL loss + backward of a batch of (batch, 3, SIDE, SIDE) images."""

    params = ([2, 8], DEVICES)
    param_names = ["batch", "device"]
    version = "1"

    def setup(self, batch, device):
        device, generator = torch_setup(device)
        self.model = gfl_detector(CLASSES, "small", width=WIDTH).to(device).train()
        self.images = torch.rand((batch, 3, SIDE, SIDE), generator=generator).to(device)
        self.targets = [Targets(_boxes(3, SIDE, generator).to(device),
                                torch.randint(CLASSES, (3,), generator=generator).to(device)) for _ in range(batch)]
        self.device = device

    def time_forward_backward(self, batch, device):
        self.model.zero_grad(set_to_none=True)
        losses, _ = gfl_loss(self.model(self.images), self.targets, self.model.reg_max)
        sum(losses.values()).backward()
        synchronize(self.device)


class Nms:
    """NMS over ``boxes`` candidates: 50 objects, each with ``boxes / 50`` jittered duplicates."""

    params = ([1000, 2000], DEVICES)
    param_names = ["boxes", "device"]
    version = "1"

    def setup(self, boxes, device):
        device, generator = torch_setup(device)
        centres = _boxes(50, 640.0, generator).repeat_interleave(boxes // 50, 0)
        self.boxes = (centres + 8.0 * torch.randn(centres.shape, generator=generator)).to(device)
        self.scores = torch.rand(len(self.boxes), generator=generator).to(device)
        self.device = device

    def time_nms(self, boxes, device):
        nms(self.boxes, self.scores, 0.6)
        synchronize(self.device)


class Inversion:
    """``invert`` of one batch of old-class targets (one box each) at 64 x 64 pixels, ``iterations`` steps."""

    params = ([2, 8], DEVICES)
    param_names = ["iterations", "device"]
    version = "1"

    def setup(self, iterations, device):
        device, generator = torch_setup(device)
        self.detector = gfl_detector(CLASSES, "small", width=WIDTH).to(device).eval()
        self.config = InversionConfig(iterations=iterations, resolution=64, jitter=4)
        self.labels = torch.arange(4, device=device) % CLASSES
        self.boxes = _boxes(4, 64.0, generator).to(device)

    def time_invert(self, iterations, device):
        invert(self.detector, self.labels, self.boxes, self.config, torch.Generator().manual_seed(5))
