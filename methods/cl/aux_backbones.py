"""eTag's auxiliary-head network on other backbones (appendix Table C.3): VGG-11, TinyViT-5M and TinyViT-11M.

eTag's hierarchical embedding distillation needs a backbone cut into 4 stages: an auxiliary
classifier follows each stage and stacks fresh copies of the stages after it, a pooling and an
FC over ``transforms * num_classes`` (class, rotation) outputs (:class:`methods.cl.etag.AuxiliaryResNet`
for eTag's ResNet-18). Here that network is written once for any :class:`StagedBackbone` (a stem,
4 stages, a pooling to the feature vector and one linear classifier), as :class:`AuxiliaryNet`, and
two backbones are given in that form for 32 x 32 CIFAR images:

- :class:`VGG11`: VGG-11 with batch norm (torchvision's ``vgg11_bn`` layout: 8 convolutions of
  ``width * (1, 2, 4, 4, 8, 8, 8, 8)`` channels and 5 max-pools), CIFAR's form: one linear
  classifier on the ``8 * width`` (512) channels of the last, 1 x 1, map instead of the 3-layer
  4096-wide ImageNet classifier. The first convolution and its pool are the stem; each stage
  ends at one of the other 4 pooling layers.
- :class:`TinyViT` (Wu et al., ECCV 2022): a stride-4 convolutional patch embedding (the stem), a
  stage of MBConv blocks, then 3 stages of attention blocks, each opened by a patch merging; the
  feature vector is the layer-normalised mean over positions. ``TINYVIT_5M`` and ``TINYVIT_11M``
  are the paper's two smallest models.

``NETWORKS`` maps a backbone's name to ``network(n_classes, width, channels, transforms=...)``, the
callable :func:`methods.cl.etag.build` takes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.cl.etag import AuxiliaryHead, global_average_pool, torchvision_init_

STAGES = 4


class StagedBackbone(nn.Module, ABC):
    """A classifier cut into a stem, :data:`STAGES` stages, a pooling to a feature vector and one linear layer.

    Subclasses set their configuration, then call :meth:`assemble`; they provide :meth:`make_stage`,
    :meth:`make_extra_stage` and :meth:`make_pool`, each building new, initialised modules, so that
    an auxiliary head gets its own copies. Attributes: ``stem``, ``stages`` (``nn.ModuleList``),
    ``pool``, ``fc``, ``feature_dim`` (``d``) and ``nonnegative_features`` (whether every feature is
    ``>= 0``, which the generator's last ReLU needs).
    """

    nonnegative_features: bool

    def assemble(self, stem: nn.Module, feature_dim: int, num_classes: int) -> None:
        """Build the stages, the pooling and the ``feature_dim -> num_classes`` classifier after ``stem``."""
        self.stem = stem
        self.stages = nn.ModuleList(self.make_stage(index) for index in range(STAGES))
        self.pool = self.make_pool()
        self.feature_dim = feature_dim
        self.fc = nn.Linear(feature_dim, num_classes)

    @abstractmethod
    def make_stage(self, index: int) -> nn.Module:
        """A new stage ``index`` (0-based): the output map of stage ``index - 1`` (or the stem) in, its own out."""

    @abstractmethod
    def make_extra_stage(self) -> nn.Module:
        """A new stage of the last stage's width that keeps the resolution: the last auxiliary head's stack."""

    @abstractmethod
    def make_pool(self) -> nn.Module:
        """A new pooling, ``(N, C, H, W)`` -> ``(N, feature_dim)``."""

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(N, C, H, W)`` -> the output of each stage, ``[(N, C_i, H_i, W_i)] * 4``."""
        out, maps = self.stem(x), []
        for stage in self.stages:
            out = stage(out)
            maps.append(out)
        return maps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> the pooled ``(N, feature_dim)`` feature vector."""
        return self.pool(self.feature_maps(x)[-1])

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, feature_dim)`` -> ``(N, num_classes)`` logits."""
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


class AuxiliaryNet(nn.Module):
    """eTag's network on a :class:`StagedBackbone`: the backbone and one auxiliary classifier after each stage.

    Head ``i`` (after stage ``i``) stacks new copies of stages ``i+1 .. 3`` (architecture, not weights:
    each is built and initialised afresh, as :class:`~methods.cl.etag.AuxiliaryResNet`'s), a new pooling
    and an FC from ``feature_dim`` to ``transforms * num_classes``; the last head, with no stage after
    it, stacks :meth:`StagedBackbone.make_extra_stage`. The interface is
    :class:`~methods.cl.etag.AuxiliaryResNet`'s, so :class:`~methods.cl.etag.ETag` trains either:
    ``forward(x)`` maps ``(N, C, H, W)`` to ``(logits (N, num_classes), features (N, feature_dim),
    [aux (N, transforms * num_classes)] * 4)``.

    Parameters
    ----------
    backbone : StagedBackbone
        With its ``num_classes``-way classifier (all classes from the start).
    transforms : int
        Copies per image of the self-supervised task (4 rotations in eTag).
    """

    def __init__(self, backbone: StagedBackbone, transforms: int = 4):
        super().__init__()
        if transforms < 1:
            raise ValueError(f"transforms must be >= 1, got {transforms}")
        self.backbone = backbone
        self.num_classes = backbone.fc.out_features
        self.transforms = transforms
        self.feature_dim = backbone.feature_dim
        self.nonnegative_features = backbone.nonnegative_features
        heads = []
        for index in range(STAGES):
            stages = [backbone.make_stage(j) for j in range(index + 1, STAGES)] or [backbone.make_extra_stage()]
            heads.append(AuxiliaryHead(nn.Sequential(*stages), self.feature_dim, transforms * self.num_classes,
                                       pool=backbone.make_pool()))
        self.aux_heads = nn.ModuleList(heads)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone.feature_maps(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.backbone.classify(features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        maps = self.feature_maps(x)
        features = self.backbone.pool(maps[-1])
        return self.classify(features), features, [head(m) for head, m in zip(self.aux_heads, maps)]


# ---------------------------------------------------------------------------------------------- VGG-11

# Channels of VGG-11's convolutions in multiples of ``width``, one group per max-pool ("A" of Simonyan &
# Zisserman 2015): the stem, then the 4 stages.
VGG11_GROUPS = ((1,), (2,), (4, 4), (8, 8), (8, 8))


def vgg_block(in_channels: int, channels: Sequence[int], pool: bool = True) -> nn.Sequential:
    """3x3 convolutions (no bias), each with batch norm and ReLU, then a 2x2 max-pool if ``pool``; initialised."""
    layers = []
    for out in channels:
        layers += [nn.Conv2d(in_channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        in_channels = out
    if pool:
        layers.append(nn.MaxPool2d(2))
    return torchvision_init_(nn.Sequential(*layers))


class VGG11(StagedBackbone):
    """VGG-11 with batch norm for 32 x 32 images: stem and 4 stages, each ending at a max-pool.

    Maps at 32 x 32 input: stem ``(w, 16, 16)``, stages ``(2w, 8, 8)``, ``(4w, 4, 4)``, ``(8w, 2, 2)``,
    ``(8w, 1, 1)``; features ``8 * width`` (512 at width 64), non-negative (ReLU, then the mean of
    the last map, which at 32 x 32 is its single position). The convolutions carry no bias (batch norm
    follows) and get torchvision's Kaiming fan-out initialisation (:func:`~methods.cl.etag.torchvision_init_`).
    The extra stage of the last auxiliary head is the last stage without its max-pool.

    Parameters
    ----------
    num_classes, width, in_channels : int
        Classifier outputs, base width (64: VGG-11), input channels.
    """

    nonnegative_features = True

    def __init__(self, num_classes: int, width: int = 64, in_channels: int = 3):
        super().__init__()
        self.width = width
        self.assemble(vgg_block(in_channels, self._channels(0)), self._channels(-1)[-1], num_classes)

    def _channels(self, group: int) -> list[int]:
        return [m * self.width for m in VGG11_GROUPS[group]]

    def make_stage(self, index: int) -> nn.Sequential:
        return vgg_block(self._channels(index)[-1], self._channels(index + 1))

    def make_extra_stage(self) -> nn.Sequential:
        last = self._channels(-1)
        return vgg_block(last[-1], last, pool=False)

    def make_pool(self) -> nn.Sequential:
        return global_average_pool()

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        side = 2 ** (STAGES + 1)
        if min(x.shape[-2:]) < side:
            raise ValueError(f"VGG-11 halves its input 5 times: images need sides >= {side}, got {tuple(x.shape[-2:])}")
        return super().feature_maps(x)


# --------------------------------------------------------------------------------------------- TinyViT


@dataclass(frozen=True)
class TinyViTConfig:
    """One TinyViT model (Wu et al. 2022, Table 1 and its published implementation's defaults).

    ``embed_dims``, ``depths``, ``num_heads`` and ``window_sizes`` per stage (stage 0 is convolutional:
    its heads and window are unused); ``mlp_ratio`` and ``mbconv_ratio`` the MLP's and MBConv's
    expansion.
    """

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_ratio: float = 4.0


TINYVIT_5M = TinyViTConfig(embed_dims=(64, 128, 160, 320), num_heads=(2, 4, 5, 10))
TINYVIT_11M = TinyViTConfig(embed_dims=(64, 128, 256, 448), num_heads=(2, 4, 8, 14))


class ConvBN(nn.Sequential):
    """Convolution without bias and batch norm (weight ``bn_weight``, bias 0)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 bn_weight: float = 1.0):
        super().__init__(nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out_channels))
        nn.init.constant_(self[1].weight, bn_weight)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise 3x3, 1x1 projection (its BN starts at 0), each BN'd, + x, GELU."""

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = int(dim * ratio)
        self.body = nn.Sequential(ConvBN(dim, hidden), nn.GELU(), ConvBN(hidden, hidden, 3, groups=hidden), nn.GELU(),
                                  ConvBN(hidden, dim, bn_weight=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + self.body(x))


def patch_merging(in_dim: int, dim: int, stride: int) -> nn.Sequential:
    """TinyViT's down-sampling between stages: 1x1 conv, depthwise 3x3 at ``stride``, 1x1 conv (each BN'd, GELU)."""
    return nn.Sequential(ConvBN(in_dim, dim), nn.GELU(), ConvBN(dim, dim, 3, stride, groups=dim), nn.GELU(),
                         ConvBN(dim, dim))


def offset_index(height: int, width: int, window: int) -> torch.Tensor:
    """``(HW, HW)`` index of each pair of positions of a ``height x width`` grid into a ``window x window`` table.

    The pair ``(p, q)`` gets ``|p_y - q_y| * window + |p_x - q_x|``: one learned bias per head and
    absolute offset (TinyViT's attention bias, from LeViT), shared by every pair at that offset.
    """
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None]).abs() * window + (xs[:, None] - xs[None]).abs()


class WindowAttention(nn.Module):
    """Multi-head self-attention inside square windows, with a learned bias per head and position offset.

    ``forward(x)`` maps a ``(N, C, H, W)`` map to its attention output of the same shape (the
    residual is added by the block). Maps no larger than ``window`` on either side form one window
    (the whole map: global attention, which is what 32 x 32 CIFAR images give every stage); larger
    maps are cut into ``window x window`` windows, so both sides must be multiples of ``window``.
    Pre-norm (LayerNorm), key and value sizes ``C / heads``.
    """

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not a multiple of its {heads} heads")
        self.heads, self.window = heads, window
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.biases = nn.Parameter(torch.zeros(heads, window * window))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        side_h, side_w = min(height, self.window), min(width, self.window)
        if height % side_h or width % side_w:
            raise ValueError(f"a {height} x {width} map does not split into {self.window} x {self.window} windows")
        rows, cols = height // side_h, width // side_w
        windows = (x.reshape(n, c, rows, side_h, cols, side_w).permute(0, 2, 4, 3, 5, 1)
                   .reshape(n * rows * cols, side_h * side_w, c))
        q, k, v = self.qkv(self.norm(windows)).reshape(len(windows), -1, 3, self.heads, c // self.heads).unbind(2)
        bias = self.biases[:, offset_index(side_h, side_w, self.window).to(x.device)]
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias)
        out = self.proj(out.transpose(1, 2).reshape(len(windows), -1, c))
        return out.reshape(n, rows, cols, side_h, side_w, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, height, width)


class TinyViTBlock(nn.Module):
    """TinyViT's attention block: ``x + attn(x)``, a depthwise 3x3 conv (BN'd, no residual), ``x + MLP(x)``.

    ``(N, C, H, W)`` in and out; the MLP is LayerNorm, ``C -> mlp_ratio C``, GELU, ``-> C`` per position.
    """

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float):
        super().__init__()
        self.attn = WindowAttention(dim, heads, window)
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local_conv(x + self.attn(x))
        tokens = x.permute(0, 2, 3, 1)
        return (tokens + self.mlp(tokens)).permute(0, 3, 1, 2)


class TokenPool(nn.Module):
    """TinyViT's pooling: the mean over positions, layer-normalised: ``(N, C, H, W)`` -> ``(N, C)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.mean((2, 3)))


def vit_init_(module: nn.Module) -> nn.Module:
    """TinyViT's initialisation, in place: linear weights truncated normal (std 0.02), biases 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
    return module


class TinyViT(StagedBackbone):
    """TinyViT (Wu et al., ECCV 2022) as a :class:`StagedBackbone`.

    Stem: two 3x3 stride-2 convolutions (BN, GELU between), ``in_channels -> d_0 / 2 -> d_0``.
    Stage 0: ``depths[0]`` :class:`MBConv` blocks at ``d_0``. Stages 1-3: :func:`patch_merging`
    ``d_{i-1} -> d_i`` at stride 2, except the last at stride 1 (the published implementation keeps the
    resolution in the last merging), then ``depths[i]`` :class:`TinyViTBlock`. Features: :class:`TokenPool`,
    ``d_3`` (320 for 5M, 448 for 11M), of either sign. At 32 x 32 input the stage maps are 8, 4, 2 and 2
    positions wide, so every attention block attends over its whole map. The extra stage of the last
    auxiliary head is the last stage with a ``d_3 -> d_3`` merging.

    Parameters
    ----------
    num_classes : int
    width : int
        ``d_0``; every embedding dimension scales by ``width / 64`` (64: the paper's model), the heads
        stay, so ``width`` must keep each dimension a whole multiple of its heads.
    in_channels : int
    config : TinyViTConfig
        :data:`TINYVIT_5M` or :data:`TINYVIT_11M`.

    Notes
    -----
    No stochastic depth (the 11M model's 0.1 on ImageNet) and no distillation from a teacher: eTag's
    training protocol is the same for every backbone; the model trains from scratch.
    """

    nonnegative_features = False

    def __init__(self, num_classes: int, width: int = 64, in_channels: int = 3, config: TinyViTConfig = TINYVIT_5M):
        super().__init__()
        scaled = [d * width / config.embed_dims[0] for d in config.embed_dims]
        if (any(d % 1 for d in scaled) or scaled[0] % 2
                or any(d % h for d, h in zip(scaled[1:], config.num_heads[1:]))):
            raise ValueError(f"width {width} scales TinyViT's {config.embed_dims} to {scaled}: need whole numbers, "
                             f"the first even, the others multiples of their heads {config.num_heads[1:]}")
        self.dims, self.config = [int(d) for d in scaled], config
        stem = nn.Sequential(ConvBN(in_channels, self.dims[0] // 2, 3, 2), nn.GELU(),
                             ConvBN(self.dims[0] // 2, self.dims[0], 3, 2))
        self.assemble(stem, self.dims[-1], num_classes)
        vit_init_(self)

    def _attention_stage(self, index: int, in_dim: int, stride: int) -> nn.Sequential:
        dim, config = self.dims[index], self.config
        blocks = [TinyViTBlock(dim, config.num_heads[index], config.window_sizes[index], config.mlp_ratio)
                  for _ in range(config.depths[index])]
        return vit_init_(nn.Sequential(patch_merging(in_dim, dim, stride), *blocks))

    def make_stage(self, index: int) -> nn.Sequential:
        if index == 0:
            depth, ratio = self.config.depths[0], self.config.mbconv_ratio
            return nn.Sequential(*[MBConv(self.dims[0], ratio) for _ in range(depth)])
        return self._attention_stage(index, self.dims[index - 1], 1 if index == STAGES - 1 else 2)

    def make_extra_stage(self) -> nn.Sequential:
        return self._attention_stage(STAGES - 1, self.dims[-1], 1)

    def make_pool(self) -> TokenPool:
        return TokenPool(self.dims[-1])


def auxiliary_network(backbone: type[StagedBackbone], n_classes: int, width: int, channels: int, *,
                      transforms: int = 4, **options) -> AuxiliaryNet:
    """``AuxiliaryNet(backbone(n_classes, width, channels, **options), transforms)``."""
    return AuxiliaryNet(backbone(n_classes, width, channels, **options), transforms)


# Backbone name -> ``network(n_classes, width, channels, transforms=...)`` for :func:`methods.cl.etag.build`.
NETWORKS = {
    "vgg11": partial(auxiliary_network, VGG11),
    "tinyvit-5m": partial(auxiliary_network, TinyViT, config=TINYVIT_5M),
    "tinyvit-11m": partial(auxiliary_network, TinyViT, config=TINYVIT_11M),
}
# The parameters of each model as its paper counts them (millions, with a 1000-class ImageNet classifier).
PUBLISHED_MILLIONS = {"tinyvit-5m": 5.4, "tinyvit-11m": 11.0}
