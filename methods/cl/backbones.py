"""The reduced ResNet-18 of rehearsal papers (mammoth's ``backbone/ResNet18.py``) and narrower ones.

The "reduced" ResNet-18 (Lopez-Paz & Ranzato 2017; mammoth) keeps BasicBlock [2, 2, 2, 2]
but uses a 3x3 stride-1 stem without max-pooling, so 32x32 inputs keep their resolution
in the first stage. ``width=64`` is the network of the CLFD/DER++ tables (11.2 M
parameters with a 10-way head); ``width=20`` is GEM's reduced variant, which we use at
quick scale on the CPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """Reduced ResNet: 3x3 stem, four stages of widths ``width * (1, 2, 4, 8)``, global average pool.

    Parameters
    ----------
    num_classes : int
        Size of the linear head; 0 builds a feature extractor without a head.
    width : int
        Base width (64 for the reduced ResNet-18 of the papers).
    in_channels : int
        Channels of the input tensor.
    blocks : tuple of int
        BasicBlocks per stage; (2, 2, 2, 2) is ResNet-18.

    Notes
    -----
    ``features(x)`` maps ``(N, in_channels, H, W)`` to the pooled ``(N, 8 * width)``
    vector, ``classify(f)`` maps that to ``(N, num_classes)`` logits.
    """

    def __init__(self, num_classes: int, width: int = 64, in_channels: int = 3, blocks=(2, 2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, in_planes = [], width
        for index, count in enumerate(blocks):
            planes = width * 2 ** index
            layers = []
            for block in range(count):
                layers.append(BasicBlock(in_planes, planes, stride=2 if index > 0 and block == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.feature_dim = in_planes
        self.fc = nn.Linear(in_planes, num_classes) if num_classes else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(F.relu(self.bn1(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def resnet18(num_classes: int, width: int = 64, in_channels: int = 3) -> ResNet:
    """The reduced ResNet-18 (BasicBlock [2, 2, 2, 2]) of mammoth, CLFD and DER++."""
    return ResNet(num_classes, width, in_channels)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (scalars) of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
