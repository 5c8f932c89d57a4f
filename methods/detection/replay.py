"""EGOR's augmented replay: generated old-class objects mixed into new-task images.

Following the public code (docs/papers/egor.md): each training image receives up to 6
generated crops out of 7 tried, each blended as ``lambda * original + (1 - lambda) *
generated`` with ``lambda ~ Beta(2, 5)`` drawn once per image (the public script's call
site passes Beta(2, 2); the function's default is kept). A placement is re-drawn up to 40
times and rejected if its intersection exceeds 0.3 of an existing box's area or 0.1 of
the pasted box's area; an image with a box covering more than 75 % of both sides is left
alone. Pasted boxes become old-class annotations. Crops are pasted at their generated
size (scaled down only if larger than the image); positions are uniform over those that
keep the crop inside the image (the public script clips crops at the border instead, so
its pasted boxes can be cut), so every pasted box is valid. :class:`CropCycle` reuses
the generated crops cyclically with a fresh permutation each pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812


@dataclass(frozen=True)
class ReplayConfig:
    tries: int = 7
    max_pastes: int = 6
    attempts: int = 40
    existing_overlap: float = 0.3
    pasted_overlap: float = 0.1
    skip_cover: float = 0.75
    beta: tuple[float, float] = (2.0, 5.0)


class CropCycle:
    """Endless ``(crop (3, h, w), label)`` pairs from the generated crops, each pass in a new random order."""

    def __init__(self, crops: list[torch.Tensor], labels: list[int], generator: torch.Generator):
        if not crops:
            raise ValueError("no generated crop to replay")
        self.crops, self.labels, self.generator = crops, labels, generator

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        while True:
            for index in torch.randperm(len(self.crops), generator=self.generator).tolist():
                yield self.crops[index], self.labels[index]


def _first_fit(boxes: torch.Tensor, candidates: torch.Tensor, config: ReplayConfig) -> int | None:
    """Index of the first of ``candidates (N, 4)`` that overlaps no box of ``boxes (K, 4)`` too much, or None.

    Too much: an intersection above ``existing_overlap`` of the existing box's area or above
    ``pasted_overlap`` of the candidate's. Testing N i.i.d. draws at once and keeping the first
    that fits is the same as re-drawing until one fits, at most N times.
    """
    if boxes.numel() == 0:
        return 0
    wh = (torch.minimum(boxes[None, :, 2:], candidates[:, None, 2:])
          - torch.maximum(boxes[None, :, :2], candidates[:, None, :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]  # (N, K)
    existing = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None]
    pasted = ((candidates[:, 2] - candidates[:, 0]) * (candidates[:, 3] - candidates[:, 1]))[:, None]
    fits = ((inter <= config.existing_overlap * existing) & (inter <= config.pasted_overlap * pasted)).all(dim=1)
    index = fits.nonzero()
    return int(index[0]) if len(index) else None


def paste_objects(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                  crops: Iterator[tuple[torch.Tensor, int]], generator: torch.Generator,
                  config: ReplayConfig = ReplayConfig()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Blend generated objects into one image.

    Parameters
    ----------
    image : (3, H, W) tensor in [0, 1]
    boxes : (K, 4) tensor, pixels; labels : (K,) long tensor
        The image's own annotations.
    crops : iterator of (crop (3, h, w), label)
        Typically ``iter(CropCycle(...))``.

    Returns
    -------
    image, boxes, labels, n_pasted
        The blended image, the annotations with the pasted boxes appended, and how many were pasted.
    """
    height, width = image.shape[-2:]
    sides = (boxes[:, 2:] - boxes[:, :2]) if boxes.numel() else boxes.new_zeros((0, 2))
    if (sides[:, 0] > config.skip_cover * width).logical_and(sides[:, 1] > config.skip_cover * height).any():
        return image, boxes, labels, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31 - 1, (), generator=generator)))
        lam = float(torch.distributions.Beta(*config.beta).sample())
    image, boxes, labels = image.clone(), boxes.clone(), labels.clone()
    pasted = 0
    for _ in range(config.tries):
        crop, label = next(crops)
        h, w = crop.shape[-2:]
        if h > height or w > width:
            scale = min(height / h, width / w)
            h, w = max(1, int(h * scale)), max(1, int(w * scale))
            crop = F.interpolate(crop[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        xs = torch.randint(0, width - w + 1, (config.attempts,), generator=generator)
        ys = torch.randint(0, height - h + 1, (config.attempts,), generator=generator)
        candidates = torch.stack([xs, ys, xs + w, ys + h], dim=1).to(boxes.dtype)
        chosen = _first_fit(boxes, candidates, config)
        if chosen is not None:
            x, y = int(xs[chosen]), int(ys[chosen])
            image[:, y:y + h, x:x + w] = lam * image[:, y:y + h, x:x + w] + (1 - lam) * crop
            boxes = torch.cat([boxes, candidates[chosen][None]])
            labels = torch.cat([labels, torch.tensor([label], dtype=labels.dtype)])
            pasted += 1
        if pasted >= config.max_pastes:
            break
    return image, boxes, labels, pasted
