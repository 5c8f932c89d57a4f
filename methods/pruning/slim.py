"""A pruned LeNet-5 rebuilt without its dead channels, with a dense or a sparse conv kernel.

This is how the suite measures the real conv time of a pruned network (ours; the paper,
arXiv:1906.00399, reports a speed-up without saying whether it is a FLOP or a time
ratio). :class:`SlimLeNet` removes every channel that :func:`~methods.pruning.flops.live_channels`
finds dead, folding the constant output of an emptied filter into the next layer's bias,
so it computes exactly the logits of the masked network. Its conv layers then run with

- ``kernel="dense"``: ``torch.nn.functional.conv2d`` on the slimmed (fewer-channel)
  weights: the gain of structured pruning alone;
- ``kernel="sparse"``: :class:`SparseConv2d`, a direct sparse convolution that does one
  strided multiply-add per nonzero weight, so its work is the FLOP count of
  :mod:`methods.pruning.flops`: the kernel for unstructured (weight-level) pruning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention
from torch import nn

from methods.pruning.flops import live_channels
from methods.pruning.masks import Masks, pruned_copy

KERNELS = ("dense", "sparse")


class SparseConv2d:
    """Direct sparse 2-D convolution (stride 1): a strided multiply-add per nonzero weight.

    For each nonzero ``w[o, c, i, j]`` it adds ``w[o, c, i, j] * x[:, c, i:i+H', j:j+W']``
    to output channel ``o`` (the weight-stationary form of Park et al., "Faster CNNs with
    direct sparse convolutions", 2017), so zero weights cost nothing.

    Parameters
    ----------
    weight : Tensor (O, C, K, K)
    bias : Tensor (O,)
    padding : int
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, padding: int = 0):
        weight = weight.detach()
        out_ch, in_ch, row, col = weight.nonzero(as_tuple=True)
        values = weight[out_ch, in_ch, row, col]
        self.taps = list(zip(out_ch.tolist(), in_ch.tolist(), row.tolist(), col.tolist(), values.tolist()))
        self.bias = bias.detach().clone()
        self.kernel_size = weight.shape[-1]
        self.padding = padding

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, O, H + 2p - K + 1, W + 2p - K + 1)."""
        if self.padding:
            x = F.pad(x, (self.padding,) * 4)
        height, width = x.shape[2] - self.kernel_size + 1, x.shape[3] - self.kernel_size + 1
        out = self.bias.view(1, -1, 1, 1).expand(x.shape[0], -1, height, width).contiguous()
        for out_ch, in_ch, row, col, value in self.taps:
            out[:, out_ch].add_(x[:, in_ch, row:row + height, col:col + width], alpha=value)
        return out


class SlimLeNet(nn.Module):
    """The masked LeNet-5 with dead channels removed; same logits as the masked network.

    Parameters
    ----------
    model : LeNet5
        Holds the (latent) weights.
    masks : dict of str to bool Tensor
        The pruning masks; pruned weights are zero in the slimmed network.
    image_size : (int, int)
        Height and width of an input digit.
    """

    def __init__(self, model: nn.Module, masks: Masks, image_size: tuple[int, int] = (28, 28)):
        super().__init__()
        pruned = pruned_copy(model, masks)
        live1, live2 = live_channels(model, masks)
        with torch.no_grad():
            conv1, conv2, fc1 = pruned.conv1, pruned.conv2, pruned.fc1
            # A conv1 filter with no weight left outputs relu(bias) everywhere (pooling keeps
            # it); conv2 (no padding) turns that into a constant per output channel.
            constant1 = ~conv1.weight.flatten(1).any(1)
            level1 = F.relu(conv1.bias) * constant1
            bias2 = conv2.bias + torch.einsum("ochw,c->o", conv2.weight, level1)
            # A conv2 filter that reads no varying channel is constant too: fold it into fc1.
            constant2 = ~conv2.weight[:, ~constant1].flatten(1).any(1)
            level2 = F.relu(bias2) * constant2
            fc1_weight = fc1.weight.view(fc1.out_features, conv2.out_channels, -1)
            fc1_bias = fc1.bias + torch.einsum("fcp,c->f", fc1_weight, level2)
            self.conv1_weight = nn.Parameter(conv1.weight[live1].clone(), requires_grad=False)
            self.conv1_bias = nn.Parameter(conv1.bias[live1].clone(), requires_grad=False)
            self.conv2_weight = nn.Parameter(conv2.weight[live2][:, live1].clone(), requires_grad=False)
            self.conv2_bias = nn.Parameter(bias2[live2].clone(), requires_grad=False)
            self.fc1_weight = nn.Parameter(fc1_weight[:, live2].flatten(1).clone(), requires_grad=False)
            self.fc1_bias = nn.Parameter(fc1_bias.clone(), requires_grad=False)
            probe = torch.zeros(1, 1, *image_size, device=conv1.weight.device)
            self.feature_size = tuple(pruned.features(probe).shape[-2:])
        self.fc2, self.fc3 = pruned.fc2, pruned.fc3
        self.conv1_padding = pruned.conv1.padding[0]
        self.sparse1 = SparseConv2d(self.conv1_weight, self.conv1_bias, self.conv1_padding)
        self.sparse2 = SparseConv2d(self.conv2_weight, self.conv2_bias)
        self.requires_grad_(False)

    @property
    def channels(self) -> tuple[int, int]:
        """Live filters of conv1 and conv2."""
        return self.conv1_weight.shape[0], self.conv2_weight.shape[0]

    def features(self, x: torch.Tensor, kernel: str = "dense") -> torch.Tensor:
        """The slimmed conv stack: (N, 1, 28, 28) -> (N, live conv2 filters, 5, 5)."""
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, not {kernel!r}")
        if not self.channels[1]:
            return x.new_zeros((x.shape[0], 0, *self.feature_size))
        if kernel == "dense":
            x = F.conv2d(x, self.conv1_weight, self.conv1_bias, padding=self.conv1_padding)
            x = F.conv2d(F.relu(F.max_pool2d(x, 2)), self.conv2_weight, self.conv2_bias)
        else:
            x = self.sparse2(F.relu(F.max_pool2d(self.sparse1(x), 2)))
        return F.relu(F.max_pool2d(x, 2))

    def forward(self, x: torch.Tensor, kernel: str = "dense") -> torch.Tensor:
        x = F.relu(F.linear(self.features(x, kernel).flatten(1), self.fc1_weight, self.fc1_bias))
        return self.fc3(F.relu(self.fc2(x)))
