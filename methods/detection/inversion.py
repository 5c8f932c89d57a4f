"""Detector inversion: old-class images synthesised from the frozen old detector alone (EGOR's generation).

DeepInversion-style pixel optimisation (Yin et al., CVPR 2020; DIODE for detectors), with
the public code's settings (docs/papers/egor.md):

- targets: one box per image, of a given old class; its longer side is 0.6-0.8 of the
  image, its aspect ratio drawn from that class's trimmed (5-95 %) 50-bin histogram of
  training boxes, its position uniform (:class:`AspectRatioSampler`);
- pixels start from N(0, 1) clamped to [0, 1] and are optimised by Adam (lr 0.2,
  betas 0, 0) with cosine annealing to 0, under random jitter (+-20 px at 160 px, scaled
  with the resolution), flip, brightness (sigma 0.2) and erasing;
- loss = 10 x the detector's GFL loss for the target box (QFL + GIoU + DFL)
  + 0.1 x sum over BatchNorm layers of ``||mu_batch - mu_run||_2 + ||var_batch - var_run||_2``
  + 0.3 x that term for the first BatchNorm layer + 1.0 x total variation (L1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from methods.detection.detector import GFLDetector, Targets, gfl_loss


@dataclass(frozen=True)
class InversionConfig:
    """Weights and schedule of the inversion; defaults are the paper's."""

    iterations: int = 2000
    resolution: int = 160
    lr: float = 0.2
    jitter: int = 20
    flip: bool = True
    brightness: float = 0.2
    erase_probability: float = 0.5
    task_weight: float = 10.0
    bn_weight: float = 0.1
    first_bn_weight: float = 0.3
    tv_l1_weight: float = 1.0


class AspectRatioSampler:
    """Target boxes for inversion from the per-class aspect ratios (width / height) of training boxes.

    Parameters
    ----------
    ratios : dict of int to array
        Aspect ratios of each class's training boxes.
    bins : int
        Histogram bins over the trimmed range (50 in the paper).
    trim : (float, float)
        Percentiles kept (5 and 95).
    """

    def __init__(self, ratios: dict[int, np.ndarray], bins: int = 50, trim: tuple[float, float] = (5, 95)):
        self.histograms = {}
        for label, values in ratios.items():
            values = np.asarray(values, dtype=float)
            values = values[np.isfinite(values) & (values > 0)]
            if values.size == 0:
                values = np.ones(1)
            low, high = np.percentile(values, trim)
            counts, edges = np.histogram(values[(values >= low) & (values <= high)], bins=bins,
                                         range=(low, high if high > low else low + 1e-3))
            self.histograms[label] = (counts / max(counts.sum(), 1), edges)

    def sample(self, label: int, size: int, rng: np.random.Generator, side: tuple[float, float] = (0.6, 0.8)):
        """One box ``[x1, y1, x2, y2]`` in a ``size x size`` image: longer side ``U(side) * size``."""
        probabilities, edges = self.histograms[label]
        index = rng.choice(len(probabilities), p=probabilities) if probabilities.sum() > 0 else 0
        ratio = rng.uniform(edges[index], edges[index + 1])
        longer = rng.uniform(*side) * size
        width, height = (longer, longer / ratio) if ratio >= 1 else (longer * ratio, longer)
        x1 = rng.uniform(0, size - width)
        y1 = rng.uniform(0, size - height)
        return np.array([x1, y1, x1 + width, y1 + height], dtype=np.float32)


class BatchNormStatistics:
    """Forward hooks on every ``BatchNorm2d`` of a module, measuring how far the batch's
    per-channel mean and variance are from the layer's running statistics.

    Use as a context manager; after a forward pass, ``losses`` holds one
    ``||mu - mu_run||_2 + ||var - var_run||_2`` per layer in forward order.
    """

    def __init__(self, module: nn.Module):
        self.layers = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
        self.losses: list[torch.Tensor] = []
        self._handles = []

    def _hook(self, layer, inputs, _output):
        x = inputs[0]
        mean = x.mean(dim=(0, 2, 3))
        var = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1).var(dim=1, unbiased=False)
        self.losses.append(torch.linalg.vector_norm(mean - layer.running_mean)
                           + torch.linalg.vector_norm(var - layer.running_var))

    def __enter__(self):
        self._handles = [layer.register_forward_hook(self._hook) for layer in self.layers]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        return False


def total_variation_l1(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, over the horizontal, vertical
    and both diagonal directions (DeepInversion's TV-L1), of ``images (B, C, H, W)``."""
    return ((images[..., :, :-1] - images[..., :, 1:]).abs().mean()
            + (images[..., :-1, :] - images[..., 1:, :]).abs().mean()
            + (images[..., 1:, :-1] - images[..., :-1, 1:]).abs().mean()
            + (images[..., :-1, :-1] - images[..., 1:, 1:]).abs().mean())


def _augment(images: torch.Tensor, boxes: torch.Tensor, config: InversionConfig, generator: torch.Generator):
    """Jitter (roll), flip, brightness and erasing of a batch; the boxes move with the pixels.

    The random draws come from ``generator`` (on the CPU, so a seed gives the same draws on any
    device) and are moved to the images' device.
    """
    size = images.shape[-1]
    jitter = max(1, round(config.jitter * size / 160))
    dx, dy = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=generator))
    images = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
    boxes = (boxes + boxes.new_tensor([dx, dy, dx, dy])).clamp(0, size)
    if config.flip and torch.rand((), generator=generator) < 0.5:
        images = images.flip(-1)
        boxes = torch.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], dim=1)
    if config.brightness > 0:
        noise = torch.randn(images.shape[0], 1, 1, 1, generator=generator).to(images)
        images = images * (1 + config.brightness * noise)
    if torch.rand((), generator=generator) < config.erase_probability:
        side = int(size * float(torch.empty(()).uniform_(0.1, 0.3, generator=generator)))
        y, x = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=generator))
        mask = torch.ones_like(images[:1, :1])
        mask[..., y:y + side, x:x + side] = 0
        images = images * mask
    return images, boxes


def invert(detector: GFLDetector, labels: torch.Tensor, boxes: torch.Tensor, config: InversionConfig,
           generator: torch.Generator) -> tuple[torch.Tensor, list[float]]:
    """Synthesise one image per target from the frozen ``detector``.

    Parameters
    ----------
    detector : GFLDetector
        The old detector; put in eval mode and left unchanged.
    labels : (B,) long tensor
        Target class of each image.
    boxes : (B, 4) tensor
        Target box of each image, pixels of a ``config.resolution`` square.
    config : InversionConfig
    generator : torch.Generator
        Seeds the initial pixels and the augmentations.

    Returns
    -------
    images : (B, 3, R, R) tensor in [0, 1]
    history : list of float
        The total loss every iteration.
    """
    detector.eval()
    parameters_required = [p.requires_grad for p in detector.parameters()]
    detector.requires_grad_(False)
    size = config.resolution
    device = next(detector.parameters()).device  # the draws stay on the CPU generator, as on any device
    pixels = torch.randn(len(labels), 3, size, size, generator=generator).clamp(0, 1).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([pixels], lr=config.lr, betas=(0.0, 0.0))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / config.iterations)))
    history = []
    try:
        with BatchNormStatistics(detector) as statistics:
            for _ in range(config.iterations):
                statistics.losses.clear()
                inputs, target_boxes = _augment(pixels, boxes, config, generator)
                output = detector(inputs)
                targets = [Targets(target_boxes[i:i + 1], labels[i:i + 1]) for i in range(len(labels))]
                task = sum(gfl_loss(output, targets, detector.reg_max)[0].values())
                bn = torch.stack(statistics.losses) if statistics.losses else pixels.new_zeros(1)
                loss = (config.task_weight * task + config.bn_weight * bn.sum() + config.first_bn_weight * bn[0]
                        + config.tv_l1_weight * total_variation_l1(inputs))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                with torch.no_grad():
                    pixels.clamp_(0, 1)
                history.append(float(loss.detach()))
    finally:
        for parameter, required in zip(detector.parameters(), parameters_required, strict=True):
            parameter.requires_grad_(required)
    return pixels.detach(), history


def crop_objects(images: torch.Tensor, boxes: torch.Tensor) -> list[torch.Tensor]:
    """The target box of each image cut out: a list of ``(3, h, w)`` tensors (at least 1 x 1)."""
    crops = []
    for image, box in zip(images, boxes, strict=True):
        x1, y1 = int(box[0].floor()), int(box[1].floor())
        x2, y2 = max(int(box[2].ceil()), x1 + 1), max(int(box[3].ceil()), y1 + 1)
        crops.append(image[:, y1:y2, x1:x2].clone())
    return crops
