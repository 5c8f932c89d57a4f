"""E2Net's working network: a once-for-all (OFA) style ResNet whose subnets share its weights.

As docs/papers/e2net.md describes it (the authors' ``ofa/ofa_resnets.py``): a 3x3
stride-1 stem without max-pooling, four stages of widths ``width * (1, 2, 4, 8)`` with two
residual blocks each (strides 1/2/2/2, a 1x1 convolution + BN shortcut where the shape
changes), global average pooling and a linear head. Two dimensions are elastic:

- the **expand ratio** of each block: its middle channels are ``round(out * ratio)`` of its
  active output channels ``out`` (OFA's rule);
- the **width multiplier** of each stage: the stage's output channels, ``round(stage_width * mult)``;
  the stem follows stage 1's multiplier, so the identity shortcut of stage 1's first block fits.

A subnet takes the *first* channels of every layer (weights, BN affine parameters and
running statistics alike); :meth:`ElasticResNet.sort_channels` first moves the important
middle channels to the front, as OFA does before every search.

Choices (ours): channel counts are ``max(1, round(base * ratio))`` with Python's rounding,
without OFA's rounding to multiples of 8 (which would merge most choices at CIFAR widths);
stage output channels are not sorted. ``block="bottleneck"`` (the default) is the
1x1 -> 3x3 -> 1x1 block the public code names; ``block="basic"`` is what the public code's
``DynamicResNetBottleneckBlock`` really computes (its third convolution is commented out:
3x3 in -> mid, stride here, then 3x3 mid -> out), whose full network is the reduced
ResNet-18 of :mod:`methods.cl.backbones` (11,173,962 parameters with a 10-way head at width 64).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

CIFAR10_CHOICES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
"""Expand ratios and width multipliers of Seq-CIFAR-10 (``e2n_utils.get_net``)."""

CIFAR100_CHOICES = (1.0, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15,
                    0.1, 0.05)
"""Expand ratios and width multipliers of Seq-CIFAR-100 and Seq-TinyImageNet."""

BLOCK_KERNELS = {"bottleneck": (1, 3, 1), "basic": (3, 3)}
"""Kernel sizes of a block's convolutions; the stride sits on the first 3x3."""


def scaled(channels: int, ratio: float) -> int:
    """``max(1, round(channels * ratio))``: the active channels of an elastic layer."""
    return max(1, round(channels * ratio))


@dataclass(frozen=True)
class SubnetConfig:
    """One subnet of an :class:`ElasticResNet`: indices into its ascending choice tuples.

    Attributes
    ----------
    expand : tuple of int
        Per block (8 for the default net), an index into ``net.expand_ratios``.
    width : tuple of int
        Per stage (4), an index into ``net.width_mults``; index 0 is the narrowest.
    """

    expand: tuple[int, ...]
    width: tuple[int, ...]


class ResidualBlock(nn.Module):
    """Convolution + BN chain (ReLU between) with a residual shortcut and a final ReLU.

    Parameters
    ----------
    channels : tuple of int
        ``(in, mid, ..., out)``: the input channels and the output channels of each convolution.
    kernels : tuple of int
        Kernel size of each convolution (``BLOCK_KERNELS``); the first 3x3 carries the stride.
    stride : int
    projection : bool
        A 1x1 convolution + BN shortcut instead of the identity.
    """

    def __init__(self, channels: tuple[int, ...], kernels: tuple[int, ...], stride: int, projection: bool):
        super().__init__()
        strided = kernels.index(3)
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, k, stride if index == strided else 1, k // 2, bias=False)
            for index, (c_in, c_out, k) in enumerate(zip(channels[:-1], channels[1:], kernels)))
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in channels[1:])
        self.shortcut = (nn.Sequential(nn.Conv2d(channels[0], channels[-1], 1, stride, bias=False),
                                       nn.BatchNorm2d(channels[-1])) if projection else None)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for index, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            out = bn(conv(out))
            out = F.relu(out) if index < len(self.convs) - 1 else out
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def _sliced_conv(x: torch.Tensor, conv: nn.Conv2d, out_channels: int) -> torch.Tensor:
    """``conv`` restricted to its first ``out_channels`` filters and the first ``x.shape[1]`` inputs."""
    return F.conv2d(x, conv.weight[:out_channels, :x.shape[1]], None, conv.stride, conv.padding)


def _sliced_bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``bn`` on the first ``x.shape[1]`` channels: sliced affine parameters and running statistics.

    In training mode the running statistics of those channels are updated in place (the
    slices are views), as OFA's ``DynamicBatchNorm2d`` does.
    """
    k = x.shape[1]
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
    return F.batch_norm(x, bn.running_mean[:k], bn.running_var[:k], bn.weight[:k], bn.bias[:k],
                        bn.training or not bn.track_running_stats, bn.momentum, bn.eps)


class ElasticBlock(ResidualBlock):
    """A :class:`ResidualBlock` at maximal size that runs only its first ``active`` channels.

    Attributes
    ----------
    active : tuple of int
        Output channels of each convolution in the active subnet (the last one is the block's
        output); the input channels are those of the incoming tensor.
    """

    def __init__(self, channels: tuple[int, ...], kernels: tuple[int, ...], stride: int, projection: bool):
        super().__init__(channels, kernels, stride, projection)
        self.active = tuple(channels[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for index, (conv, bn, width) in enumerate(zip(self.convs, self.bns, self.active)):
            out = _sliced_bn(_sliced_conv(out, conv, width), bn)
            out = F.relu(out) if index < len(self.convs) - 1 else out
        if self.shortcut is not None:
            conv, bn = self.shortcut
            x = _sliced_bn(_sliced_conv(x, conv, self.active[-1]), bn)
        return F.relu(out + x)

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Order each middle layer's channels by the L1 norm of the weights that read them (OFA).

        The filters of convolution ``i``, its BN entries and the input slices of convolution
        ``i + 1`` move together, so the block computes the same function. The L1 norm over
        the next convolution's filters does not depend on their order, so the middle layers
        can be sorted one after the other.
        """
        for index in range(len(self.convs) - 1):
            conv, bn, reader = self.convs[index], self.bns[index], self.convs[index + 1]
            order = torch.argsort(reader.weight.abs().sum(dim=(0, 2, 3)), descending=True, stable=True)
            for tensor in (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var):
                tensor.copy_(tensor[order])
            reader.weight.copy_(reader.weight[:, order])


class SubnetResNet(nn.Module):
    """A plain ResNet built by :meth:`ElasticResNet.extract`: stem, residual blocks, pool, linear head.

    Parameters
    ----------
    stem : nn.Sequential
        Conv 3x3 -> BN -> ReLU.
    blocks : nn.Sequential
        :class:`ResidualBlock` modules.
    fc : nn.Linear
    """

    def __init__(self, stem: nn.Sequential, blocks: nn.Sequential, fc: nn.Linear):
        super().__init__()
        self.stem = stem
        self.blocks = blocks
        self.fc = fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def _copy_conv(target: nn.Conv2d, source: nn.Conv2d) -> None:
    target.weight.copy_(source.weight[:target.out_channels, :target.in_channels])


def _copy_bn(target: nn.BatchNorm2d, source: nn.BatchNorm2d) -> None:
    k = target.num_features
    target.momentum, target.eps = source.momentum, source.eps
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(target, name).copy_(getattr(source, name)[:k])
    target.num_batches_tracked.copy_(source.num_batches_tracked)


class ElasticResNet(nn.Module):
    """The elastic working network of E2Net (an OFA ResNet); training uses the maximal subnet.

    Parameters
    ----------
    num_classes : int
        Size of the linear head (not elastic).
    width : int
        Base width; stages have ``width * (1, 2, 4, 8)`` output channels at multiplier 1
        (64 in the paper's code).
    in_channels : int
        Channels of the input tensor.
    expand_ratios, width_mults : tuple of float
        The choices of the elastic dimensions (:data:`CIFAR10_CHOICES`, :data:`CIFAR100_CHOICES`),
        in any order; stored sorted ascending, as the public code sorts them.
    block : {"bottleneck", "basic"}
        1x1 -> 3x3 -> 1x1 (as the public code names it) or 3x3 -> 3x3 (what it computes).
    blocks : tuple of int
        Residual blocks per stage; ``(2, 2, 2, 2)`` in the paper's code.

    Notes
    -----
    ``features(x)`` maps ``(N, in_channels, H, W)`` to the pooled ``(N, c)`` vector of the
    active subnet (``c`` its last stage's channels), ``classify(f)`` maps that to
    ``(N, num_classes)`` logits through the first ``c`` columns of the head, like
    :class:`~methods.cl.backbones.ResNet`, so :class:`~methods.cl.model.PlainNet` takes it.
    """

    def __init__(self, num_classes: int, width: int = 64, in_channels: int = 3,
                 expand_ratios: tuple[float, ...] = CIFAR10_CHOICES, width_mults: tuple[float, ...] = CIFAR10_CHOICES,
                 block: str = "bottleneck", blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        if block not in BLOCK_KERNELS:
            raise ValueError(f"block must be one of {sorted(BLOCK_KERNELS)}, got {block!r}")
        self.num_classes = num_classes
        self.width = width
        self.in_channels = in_channels
        self.expand_ratios = tuple(sorted(expand_ratios))
        self.width_mults = tuple(sorted(width_mults))
        self.kernels = BLOCK_KERNELS[block]
        self.stage_widths = tuple(width * 2 ** index for index in range(len(blocks)))
        self.block_stages = tuple(stage for stage, count in enumerate(blocks) for _ in range(count))
        stem = scaled(width, self.width_mults[-1])
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        layers, previous = [], stem
        for index, stage in enumerate(self.block_stages):
            out = scaled(self.stage_widths[stage], self.width_mults[-1])
            mid = scaled(out, self.expand_ratios[-1])
            stride = 2 if stage > 0 and (index == 0 or self.block_stages[index - 1] != stage) else 1
            layers.append(ElasticBlock((previous, *[mid] * (len(self.kernels) - 1), out), self.kernels, stride,
                                       projection=stride != 1 or previous != out))
            previous = out
        self.blocks = nn.ModuleList(layers)
        self.feature_dim = previous
        self.fc = nn.Linear(previous, num_classes)
        self.stem_active = stem
        self.active_config = self.max_config()
        self.full_parameters = self.parameter_count(self.active_config)

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def n_stages(self) -> int:
        return len(self.stage_widths)

    def max_config(self) -> SubnetConfig:
        """The maximal subnet: the largest expand ratio and width multiplier everywhere."""
        return SubnetConfig((len(self.expand_ratios) - 1,) * self.n_blocks,
                            (len(self.width_mults) - 1,) * self.n_stages)

    def plan(self, config: SubnetConfig) -> tuple[int, list[tuple[int, ...]]]:
        """Channels of the subnet ``config``.

        Returns
        -------
        stem : int
            Output channels of the stem.
        blocks : list of tuple of int
            Per block, ``(in, mid, ..., out)`` as in :class:`ResidualBlock`.
        """
        if len(config.expand) != self.n_blocks or len(config.width) != self.n_stages:
            raise ValueError(f"config needs {self.n_blocks} expand and {self.n_stages} width indices, got {config}")
        if not all(0 <= e < len(self.expand_ratios) for e in config.expand) or \
                not all(0 <= w < len(self.width_mults) for w in config.width):
            raise ValueError(f"config indices out of range: {config}")
        stem = scaled(self.width, self.width_mults[config.width[0]])
        plans, previous = [], stem
        for stage, expand in zip(self.block_stages, config.expand):
            out = scaled(self.stage_widths[stage], self.width_mults[config.width[stage]])
            mid = scaled(out, self.expand_ratios[expand])
            plans.append((previous, *[mid] * (len(self.kernels) - 1), out))
            previous = out
        return stem, plans

    def parameter_count(self, config: SubnetConfig) -> int:
        """Parameters (scalars) of the subnet ``config``, head included; BN running statistics excluded."""
        stem, plans = self.plan(config)
        total = 9 * self.in_channels * stem + 2 * stem
        for block, channels in zip(self.blocks, plans):
            total += sum(k * k * c_in * c_out + 2 * c_out
                         for c_in, c_out, k in zip(channels[:-1], channels[1:], self.kernels))
            if block.shortcut is not None:
                total += channels[0] * channels[-1] + 2 * channels[-1]
        return total + plans[-1][-1] * self.num_classes + self.num_classes

    def occupancy(self, config: SubnetConfig) -> float:
        """Subnet parameters / full-network parameters, in (0, 1] (E2Net's "occupancy")."""
        return self.parameter_count(config) / self.full_parameters

    def set_active(self, config: SubnetConfig) -> None:
        """Run only the subnet ``config`` from now on (until the next :meth:`set_active`/:meth:`set_max`)."""
        stem, plans = self.plan(config)
        self.stem_active = stem
        for block, channels in zip(self.blocks, plans):
            block.active = tuple(channels[1:])
        self.active_config = config

    def set_max(self) -> None:
        """Run the maximal network (the one that trains)."""
        self.set_active(self.max_config())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(_sliced_bn(_sliced_conv(x, self.conv1, self.stem_active), self.bn1))
        for block in self.blocks:
            out = block(out)
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.fc.weight[:, :features.shape[1]], self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Sort every block's middle channels by importance; the full network's function is unchanged.

        The public code's ``re_organize_middle_weights``, run before each search so that the
        first channels a subnet keeps are the most important ones. Optimizer state (none for
        the plain SGD of these learners) is not permuted.
        """
        for block in self.blocks:
            block.sort_channels()

    @torch.no_grad()
    def extract(self, config: SubnetConfig) -> SubnetResNet:
        """A standalone copy of the subnet ``config``: copied sliced weights, no shared storage.

        Its output equals this network's with ``config`` active (in eval mode, or in training
        mode up to the running statistics it updates); it keeps the training mode of a new module.
        """
        stem_channels, plans = self.plan(config)
        stem = nn.Sequential(nn.Conv2d(self.in_channels, stem_channels, 3, 1, 1, bias=False),
                             nn.BatchNorm2d(stem_channels), nn.ReLU())
        blocks = [ResidualBlock(channels, self.kernels, block.stride, block.shortcut is not None)
                  for block, channels in zip(self.blocks, plans)]
        subnet = SubnetResNet(stem, nn.Sequential(*blocks), nn.Linear(plans[-1][-1], self.num_classes))
        subnet.to(device=self.fc.weight.device, dtype=self.fc.weight.dtype)
        _copy_conv(stem[0], self.conv1)
        _copy_bn(stem[1], self.bn1)
        for target, source in zip(blocks, self.blocks):
            for small, large in zip(target.convs, source.convs):
                _copy_conv(small, large)
            for small, large in zip(target.bns, source.bns):
                _copy_bn(small, large)
            if target.shortcut is not None:
                _copy_conv(target.shortcut[0], source.shortcut[0])
                _copy_bn(target.shortcut[1], source.shortcut[1])
        subnet.fc.weight.copy_(self.fc.weight[:, :plans[-1][-1]])
        subnet.fc.bias.copy_(self.fc.bias)
        return subnet
