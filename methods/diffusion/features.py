"""Feature extractors for the sample-quality metrics of :mod:`methods.diffusion.metrics`.

Both extractors take images (N, C, H, W) in [-1, 1], C = 1 or 3, and return an
:class:`ExtractedFeatures` triple: pooled features (FID, precision/recall), spatial features
(sFID) and logits (IS).

- :class:`InceptionFeatures` is Inception-v3 (Szegedy et al. 2016), the network of every
  published FID/sFID/IS. Its weights are the caller's to load (``load_state_dict``); with random
  weights it only checks shapes.
- :class:`ProxyClassifier` is a small CNN that the suite trains on the real data set
  (:func:`train_proxy`) for an offline *proxy* FID. Proxy numbers rank models on one data set;
  they are never comparable with papers' FID, sFID or IS.

Inception-v3 is written out here rather than taken from torchvision: torchvision's wheels on
PyPI are built against CUDA torch and do not import beside the CPU torch this suite runs on.
The parameter names follow torchvision's ``Inception3`` (``Conv2d_1a_3x3.conv.weight``,
``Mixed_5b.branch1x1.bn.running_mean``, ..., ``fc.weight``; no auxiliary classifier), which are also
the names in pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``, so either state dict loads.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention
from torch import nn


class ExtractedFeatures(NamedTuple):
    """What an extractor gives for a batch of N images."""

    pool: torch.Tensor
    """Pooled features (N, d): FID and precision/recall."""
    spatial: torch.Tensor
    """Flattened spatial features (N, c * h * w): sFID."""
    logits: torch.Tensor
    """Class logits (N, K): Inception Score."""


def _rgb(images: torch.Tensor) -> torch.Tensor:
    """Repeat a grayscale batch (N, 1, H, W) to three channels; RGB passes through."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class _ConvBN(nn.Sequential):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU, torchvision's ``BasicConv2d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.relu = nn.ReLU()


def _pool3x3(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The 3x3 stride-1 pooling in front of a block's pool branch.

    ``"avg"``: torchvision (zero padding counted); ``"avg_valid"``: padding not counted, as
    TensorFlow's graph and pytorch-fid's FID blocks; ``"max"``: pytorch-fid's last block (the
    2015 graph max-pools there).
    """
    if kind == "max":
        return F.max_pool2d(x, 3, stride=1, padding=1)
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=kind == "avg")


class _InceptionA(nn.Module):
    """35x35 block (Mixed_5b-d): 1x1, 5x5, double 3x3 and pool branches -> 224 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = _ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = _ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(in_channels, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_pool3x3(x, self.pool))], 1)


class _InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): stride-2 3x3, double 3x3 and max-pool branches -> 768 channels."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = _ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class _InceptionC(nn.Module):
    """17x17 block (Mixed_6b-e) with factorised 7x7 convolutions (1x7 then 7x1) -> 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int, pool: str):
        super().__init__()
        c7, row, col = channels_7x7, dict(padding=(0, 3)), dict(padding=(3, 0))
        self.pool = pool
        self.branch1x1 = _ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = _ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, (1, 7), **row)
        self.branch7x7_3 = _ConvBN(c7, 192, (7, 1), **col)
        self.branch7x7dbl_1 = _ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, (7, 1), **col)
        self.branch7x7dbl_3 = _ConvBN(c7, c7, (1, 7), **row)
        self.branch7x7dbl_4 = _ConvBN(c7, c7, (7, 1), **col)
        self.branch7x7dbl_5 = _ConvBN(c7, 192, (1, 7), **row)
        self.branch_pool = _ConvBN(in_channels, 192, 1)

    def forward(self, x):
        double = x
        for index in range(1, 6):
            double = getattr(self, f"branch7x7dbl_{index}")(double)
        return torch.cat([self.branch1x1(x), self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))), double,
                          self.branch_pool(_pool3x3(x, self.pool))], 1)


class _InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a): 3x3 and 7x7x3 stride-2 branches and a max pool -> 1280 channels."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = _ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        tower = x
        for index in range(1, 5):
            tower = getattr(self, f"branch7x7x3_{index}")(tower)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), tower, F.max_pool2d(x, 3, stride=2)], 1)


class _InceptionE(nn.Module):
    """8x8 block (Mixed_7b-c) with split 1x3 / 3x1 outputs -> 2048 channels."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = _ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = _ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(in_channels, 192, 1)

    def forward(self, x):
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(single), self.branch3x3_2b(single),
                          self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
                          self.branch_pool(_pool3x3(x, self.pool))], 1)


class InceptionFeatures(nn.Module):
    """Inception-v3 as the FID / sFID / IS feature extractor (weights loaded by the caller).

    Input: images (N, C, H, W) in [-1, 1], C = 1 (repeated to RGB) or 3, resized to 299x299 by
    bilinear interpolation (``align_corners=False``, as pytorch-fid) unless already that size.
    [-1, 1] is the input range of the 2015 TensorFlow weights and of torchvision's weights after
    their ``transform_input``. Output (:class:`ExtractedFeatures`):

    - ``pool`` (N, 2048): the global average pool after Mixed_7c (TF ``pool_3``), for FID;
    - ``spatial`` (N, 7 * 17 * 17 = 2023): the first 7 channels of Mixed_6d's 1x1 branch
      (TF ``mixed_6/conv``; TF counts ``mixed`` = Mixed_5b, so ``mixed_6`` = Mixed_6d), flattened,
      for sFID as in Nash et al. 2021 and the ADM evaluator;
    - ``logits`` (N, num_classes): the final linear layer on ``pool``, for IS.

    Published numbers use the 2015 TensorFlow weights: pytorch-fid's
    ``pt_inception-2015-12-05-6726825d.pth`` (1008 classes; ``fid_blocks=True``) or torch-fidelity's
    conversion of the same graph. ``fid_blocks`` reproduces how that graph differs from
    torchvision's Inception-v3 (pytorch-fid's ``FIDInceptionA/C/E_1/E_2``): the pool branches of
    Mixed_5b-d, Mixed_6b-e and Mixed_7b average without counting the padding, and Mixed_7c's pool
    branch max-pools. torchvision's ImageNet weights (``num_classes=1000, fid_blocks=False``, after
    dropping their ``AuxLogits.*`` entries) give different, non-comparable values. Other known
    sources of disagreement between FID tools are the resize (torch-fidelity imitates TF1's
    bilinear resize, clean-fid uses PIL bicubic) and JPEG/PNG quantisation of the samples, so
    record which tool a reference value came from.

    The module is created in eval mode with gradients off (BatchNorm uses its running statistics).
    """

    spatial_channels = 7  # sFID's first 7 channels of mixed_6/conv

    def __init__(self, num_classes: int = 1008, fid_blocks: bool = True):
        super().__init__()
        avg = "avg_valid" if fid_blocks else "avg"
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _InceptionA(192, 32, avg)
        self.Mixed_5c = _InceptionA(256, 64, avg)
        self.Mixed_5d = _InceptionA(288, 64, avg)
        self.Mixed_6a = _InceptionB(288)
        self.Mixed_6b = _InceptionC(768, 128, avg)
        self.Mixed_6c = _InceptionC(768, 160, avg)
        self.Mixed_6d = _InceptionC(768, 160, avg)
        self.Mixed_6e = _InceptionC(768, 192, avg)
        self.Mixed_7a = _InceptionD(768)
        self.Mixed_7b = _InceptionE(1280, avg)
        self.Mixed_7c = _InceptionE(2048, "max" if fid_blocks else "avg")
        self.fc = nn.Linear(2048, num_classes)
        self.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> ExtractedFeatures:
        """Pool (N, 2048), spatial (N, 2023) and logits (N, num_classes) of images (N, C, H, W) in [-1, 1]."""
        x = _rgb(images)
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c):
            x = block(x)
        # The 1x1 branch again, outside the block's concatenation: a 768 -> 192 1x1 conv at 17x17.
        spatial = self.Mixed_6d.branch1x1(x)[:, :self.spatial_channels].flatten(1)
        for block in (self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        pool = x.mean(dim=(2, 3))
        return ExtractedFeatures(pool, spatial, self.fc(pool))

    extract = forward


class ProxyClassifier(nn.Module):
    """A small CNN whose features give a proxy FID / sFID / IS; never comparable with papers.

    Trained by :func:`train_proxy` on the real data set (e.g. MNIST, offline), it replaces
    Inception-v3, whose weights are a download. Layout for an input (N, C, H, W) in [-1, 1] with H
    and W divisible by 4 (e.g. 32x32 grayscale digits):

    - ``conv1`` C -> w, 3x3, ReLU, 2x2 max pool -> (N, w, H/2, W/2);
    - ``conv2`` w -> 2w, 3x3, ReLU, 2x2 max pool -> (N, 2w, H/4, W/4);
    - ``conv3`` 2w -> 4w, 3x3, ReLU, global average pool -> ``features`` (N, 4w);
    - ``head`` 4w -> num_classes -> ``logits``.

    ``spatial`` is the first ``spatial_channels`` channels of the ``conv2`` map, flattened
    (N, spatial_channels * H/4 * W/4), the analogue of sFID's first 7 channels of a mid-level
    Inception map. With w = 32 on 32x32 images: features (N, 128), spatial (N, 4 * 8 * 8 = 256).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, spatial_channels: int = 4):
        super().__init__()
        self.spatial_channels = spatial_channels
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1)
        self.head = nn.Linear(4 * width, num_classes)

    def _maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The conv2 map (N, 2w, H/4, W/4) and the pooled conv3 features (N, 4w)."""
        mid = F.max_pool2d(F.relu(self.conv2(F.max_pool2d(F.relu(self.conv1(x)), 2))), 2)
        return mid, F.relu(self.conv3(mid)).mean(dim=(2, 3))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (N, 4w) for the proxy FID and precision/recall."""
        return self._maps(x)[1]

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial features (N, spatial_channels * H/4 * W/4) for the proxy sFID."""
        return self._maps(x)[0][:, :self.spatial_channels].flatten(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes) for the proxy IS."""
        return self.head(self.features(x))

    forward = logits

    def extract(self, x: torch.Tensor) -> ExtractedFeatures:
        """All three in one pass, as :meth:`InceptionFeatures.forward`."""
        mid, pooled = self._maps(x)
        return ExtractedFeatures(pooled, mid[:, :self.spatial_channels].flatten(1), self.head(pooled))


def train_proxy(classifier: ProxyClassifier, images: torch.Tensor, labels: torch.Tensor, *, epochs: int,
                batch_size: int, lr: float, generator: torch.Generator) -> list[float]:
    """Train ``classifier`` in place on labelled real images by Adam on cross-entropy.

    Parameters
    ----------
    classifier : ProxyClassifier
        Trained in place (its initial weights are the caller's: seed before building it).
    images : torch.Tensor
        (N, C, H, W) in [-1, 1], on the classifier's device.
    labels : torch.Tensor
        (N,) int64 class indices on the same device.
    epochs, batch_size : int
        Passes over the data, each in a fresh random order, and rows per step.
    lr : float
        Adam learning rate.
    generator : torch.Generator
        Source of the batch order (drawn on its own device); the run is deterministic given it.

    Returns
    -------
    list of float
        Mean training loss of each epoch. The classifier is left in eval mode.
    """
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    classifier.train()
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator, device=generator.device).to(images.device)
        total = 0.0
        for start in range(0, len(images), batch_size):
            rows = order[start:start + batch_size]
            loss = F.cross_entropy(classifier(images[rows]), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        losses.append(total / len(images))
    classifier.eval()
    return losses
