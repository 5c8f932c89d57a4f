"""Sequential datasets as task streams, with the standard augmentation and normalisation.

A *sequential* dataset (mammoth's ``seq-*``) splits the classes of an image dataset into
tasks of equal size, learned one after the other. This module works on tensors only: the
harness loads the images, :func:`to_tensor` and :func:`split_tasks` turn them into a
stream, and :func:`random_crop_flip` is the training augmentation (mammoth's
``RandomCrop(side, padding)`` + ``RandomHorizontalFlip``) written with torch ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class StreamSpec:
    """The protocol of one sequential dataset (mammoth's ``datasets/seq_*.py``).

    Attributes
    ----------
    n_tasks, classes_per_task : int
    side : int
        Image side in pixels after :func:`to_tensor` (MNIST is zero-padded 28 -> 32, ours,
        so that every stream shares the 32x32 ResNet input).
    mean, std : tuple of float
        Per-channel normalisation on [0, 1] pixels.
    crop_padding : int
        Zero padding of the random crop in pixels (0: no crop).
    flip : bool
        Random horizontal flip.
    """

    n_tasks: int
    classes_per_task: int
    side: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool

    @property
    def n_classes(self) -> int:
        return self.n_tasks * self.classes_per_task

    @property
    def channels(self) -> int:
        return len(self.mean)


STREAMS = {
    # Seq-MNIST without augmentation (a flipped digit is another digit); 32x32 by padding (ours).
    "seq-mnist": StreamSpec(5, 2, 32, (0.1307,), (0.3081,), 0, False),
    "seq-cifar10": StreamSpec(5, 2, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615), 4, True),
    "seq-cifar100": StreamSpec(10, 10, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 4, True),
    "seq-tinyimg": StreamSpec(10, 20, 64, (0.4802, 0.4480, 0.3975), (0.2770, 0.2691, 0.2821), 4, True),
}


@dataclass(frozen=True)
class Task:
    """One task of a stream: its classes and the rows of the train and test sets it owns."""

    classes: tuple[int, ...]
    train_rows: torch.Tensor
    test_rows: torch.Tensor


def to_tensor(images: np.ndarray, spec: StreamSpec) -> torch.Tensor:
    """uint8 images -> normalised float32 ``(N, C, side, side)``.

    Parameters
    ----------
    images : np.ndarray
        uint8 ``(N, H, W)`` grayscale or ``(N, H, W, 3)`` RGB with ``H, W <= spec.side``;
        smaller images are zero-padded (black) symmetrically to ``spec.side``.
    spec : StreamSpec
    """
    pixels = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    pixels = pixels.unsqueeze(1) if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2)
    if pixels.shape[1] != spec.channels:
        raise ValueError(f"images have {pixels.shape[1]} channels, the stream expects {spec.channels}")
    pad_h, pad_w = spec.side - pixels.shape[2], spec.side - pixels.shape[3]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"images of {tuple(pixels.shape[2:])} do not fit the stream's {spec.side}x{spec.side}")
    pixels = torch.nn.functional.pad(pixels, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    mean = pixels.new_tensor(spec.mean).view(1, -1, 1, 1)
    std = pixels.new_tensor(spec.std).view(1, -1, 1, 1)
    return ((pixels - mean) / std).contiguous()


def black_level(spec: StreamSpec) -> torch.Tensor:
    """The normalised value of a black pixel per channel, ``(C,)``: the crop's padding fill."""
    return -torch.tensor(spec.mean) / torch.tensor(spec.std)


def split_tasks(train_labels: torch.Tensor, test_labels: torch.Tensor, spec: StreamSpec,
                class_order: list[int] | None = None) -> list[Task]:
    """Split labelled sets into ``spec.n_tasks`` tasks of ``spec.classes_per_task`` classes.

    Parameters
    ----------
    train_labels, test_labels : torch.Tensor
        int64 ``(N,)`` class labels in ``[0, spec.n_classes)``.
    class_order : list of int, optional
        Classes in learning order; default ``0, 1, ...`` (mammoth's fixed order).
    """
    order = list(range(spec.n_classes)) if class_order is None else list(class_order)
    tasks = []
    for index in range(spec.n_tasks):
        classes = tuple(order[index * spec.classes_per_task:(index + 1) * spec.classes_per_task])
        chosen = torch.tensor(classes)
        tasks.append(Task(classes, torch.isin(train_labels, chosen).nonzero().flatten(),
                          torch.isin(test_labels, chosen).nonzero().flatten()))
    return tasks


def random_crop_flip(batch: torch.Tensor, padding: int, flip: bool, fill: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """Per-sample random crop (after padding with ``fill``) and horizontal flip.

    Parameters
    ----------
    batch : torch.Tensor
        ``(N, C, H, W)``, on any device.
    padding : int
        Pixels added on each side before cropping back to ``H x W``; 0 disables the crop.
    flip : bool
        Flip each sample left-right with probability 1/2.
    fill : torch.Tensor
        ``(C,)`` value of the padded border (a black pixel for images; for CLFD's feature
        buffer, the encoding of a black image).
    generator : torch.Generator
        CPU generator that draws the offsets and flips.

    Returns
    -------
    torch.Tensor
        ``(N, C, H, W)``, a new tensor.
    """
    n, channels, height, width = batch.shape
    out = batch
    if padding > 0:
        padded = fill.to(batch).view(1, channels, 1, 1).expand(n, channels, height + 2 * padding,
                                                               width + 2 * padding).clone()
        padded[:, :, padding:padding + height, padding:padding + width] = batch
        offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).tolist()
        out = torch.stack([padded[i, :, top:top + height, left:left + width] for i, (top, left) in enumerate(offsets)])
    if flip:
        flipped = (torch.rand(n, generator=generator) < 0.5).to(batch.device)
        out = torch.where(flipped.view(n, 1, 1, 1), out.flip(-1), out)
    return out if out is not batch else batch.clone()
