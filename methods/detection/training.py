"""Training schedule and batching of the detectors (MMDetection's 1x schedule, in plain torch).

SGD (lr 0.01 for a batch of 16, scaled linearly with the batch; momentum 0.9, weight
decay 1e-4), a linear warm-up from 0.001 x lr over the first 500 iterations, and the
learning rate divided by 10 after 8/12 and 11/12 of the iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812


@dataclass(frozen=True)
class Schedule:
    iterations: int
    batch_size: int
    base_lr: float = 0.01
    base_batch: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iterations: int = 500
    warmup_ratio: float = 0.001
    decay_at: tuple[float, float] = (8 / 12, 11 / 12)

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / self.base_batch

    def factor(self, step: int) -> float:
        """Learning-rate multiplier at iteration ``step`` (0-based)."""
        warmup = min(self.warmup_iterations, max(self.iterations // 4, 1))
        scale = 1.0 if step >= warmup else self.warmup_ratio + (1 - self.warmup_ratio) * step / warmup
        return scale * 0.1 ** sum(step >= fraction * self.iterations for fraction in self.decay_at)


def optimizer_for(model: torch.nn.Module, schedule: Schedule):
    """SGD over the trainable parameters, with the schedule's LambdaLR."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=schedule.lr, momentum=schedule.momentum,
                                weight_decay=schedule.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)


def pad_batch(images: list[torch.Tensor], divisor: int, fill: torch.Tensor) -> torch.Tensor:
    """Stack ``(3, H_i, W_i)`` images into ``(B, 3, H, W)`` padded at the bottom and right to a
    multiple of ``divisor`` with the colour ``fill (3,)`` (the normaliser's mean, so padding is 0
    after normalisation, as MMDetection pads)."""
    height = -(-max(i.shape[1] for i in images) // divisor) * divisor
    width = -(-max(i.shape[2] for i in images) // divisor) * divisor
    batch = fill.view(1, 3, 1, 1).repeat(len(images), 1, height, width)
    for k, image in enumerate(images):
        batch[k, :, :image.shape[1], :image.shape[2]] = image
    return batch


def resize_keep_ratio(image: torch.Tensor, boxes: torch.Tensor, scale: tuple[int, int]):
    """Resize ``(3, H, W)`` so it fits ``scale = (long, short)`` (MMDetection's keep-ratio Resize to
    (1333, 800)); returns the image, boxes scaled alike, and the factor."""
    height, width = image.shape[-2:]
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    return resized, boxes * factor, factor
