"""Convolutional computation of a pruned LeNet-5: which channels still matter, and their FLOPs.

The paper's "computation-remained rate" (arXiv:1906.00399; docs/papers/gaprune.md) is the
pruned network's conv FLOPs over the dense network's; how it counts them is not known.
Ours counts what an implementation that skips zeros has to do:

- one multiply-accumulate (MAC) per nonzero kept weight per output position, and
  FLOPs = 2 x MACs (a multiply and an add; biases, ReLU and pooling are not counted);
- a channel is *live* only if it varies with the input and something reads it: a conv
  filter with no weight left outputs a constant (folded into the next layer's bias, see
  :mod:`methods.pruning.slim`), and a filter whose output no kept weight reads is dropped.
  Weights that read a dead channel do no work and are not counted.

The dense LeNet-5 does 6*28*28*25 = 117,600 MACs in ``conv1`` and 16*10*10*6*25 =
240,000 in ``conv2``: 715,200 conv FLOPs per image.
"""

from __future__ import annotations

import torch
from torch import nn

from methods.pruning.masks import Masks, effective_masks

CONV_LAYERS = ("conv1", "conv2")


def conv_output_sizes(model: nn.Module, image_size: tuple[int, int] = (28, 28)) -> dict[str, int]:
    """Output positions (height x width) of each conv layer of ``model`` for one image."""
    sizes = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda _module, _inputs, output, name=name: sizes.__setitem__(name, output.shape[-2] * output.shape[-1]))
        for name in CONV_LAYERS]
    try:
        with torch.no_grad():
            model.features(torch.zeros(1, 1, *image_size, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def live_channels(model: nn.Module, masks: Masks | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The live filters of ``conv1`` and ``conv2`` under ``masks``.

    Returns
    -------
    live1 : bool Tensor (6,)
        conv1 filters that keep a weight and are read by a kept weight of a live conv2 filter.
    live2 : bool Tensor (16,)
        conv2 filters that keep a weight on a varying input and whose output ``fc1`` reads.
    """
    kept = effective_masks(model, masks)
    conv2 = kept["conv2"]
    varying1 = kept["conv1"].flatten(1).any(1)
    varying2 = conv2[:, varying1].flatten(1).any(1)
    read_by_fc1 = kept["fc1"].view(kept["fc1"].shape[0], conv2.shape[0], -1).any(2).any(0)
    live2 = varying2 & read_by_fc1
    live1 = varying1 & conv2[live2].any(dim=(0, 2, 3))
    return live1, live2


def conv_macs(model: nn.Module, masks: Masks | None = None) -> dict[str, int]:
    """Multiply-accumulates per image of each conv layer under ``masks`` (module docstring)."""
    kept = effective_masks(model, masks)
    live1, live2 = live_channels(model, masks)
    positions = conv_output_sizes(model)
    return {
        "conv1": int(kept["conv1"][live1].sum()) * positions["conv1"],
        "conv2": int(kept["conv2"][live2][:, live1].sum()) * positions["conv2"],
    }


def conv_flops(model: nn.Module, masks: Masks | None = None) -> int:
    """Conv FLOPs per image (2 x MACs) of ``model`` under ``masks``; dense when ``masks`` is None."""
    return 2 * sum(conv_macs(model, masks).values())


def dense_conv_flops(model: nn.Module) -> int:
    """Conv FLOPs per image of the unpruned layout, whatever the weights' values."""
    positions = conv_output_sizes(model)
    return 2 * sum(getattr(model, name).weight.numel() * positions[name] for name in CONV_LAYERS)
