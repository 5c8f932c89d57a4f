"""Pruning masks over a network's weights, and the parameter counts they leave.

A mask set (:data:`Masks`) maps a layer name (``"conv1"``, ..., ``"fc3"``) to a bool
tensor shaped like that layer's weight: True keeps the weight, False prunes it. This is
the paper's encoding of a pruned network (arXiv:1906.00399; docs/papers/gaprune.md: one
gene per layer, the layer's 4-D or 2-D parameter tensor, masked). Biases are never pruned
(ours: the paper does not say; they are 236 of LeNet-5's 61,706 parameters).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

Masks = dict[str, torch.Tensor]


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The conv and linear layers of ``model`` by name, in forward order."""
    return {name: module for name, module in model.named_children() if isinstance(module, nn.Conv2d | nn.Linear)}


def full_masks(model: nn.Module) -> Masks:
    """Masks that keep every weight of every prunable layer."""
    return {name: torch.ones_like(layer.weight, dtype=torch.bool) for name, layer in prunable_layers(model).items()}


def masked_weights(model: nn.Module, masks: Masks) -> dict[str, torch.Tensor]:
    """``{"<layer>.weight": weight * mask}`` for :func:`torch.func.functional_call`."""
    layers = prunable_layers(model)
    return {f"{name}.weight": layers[name].weight * mask for name, mask in masks.items()}


def effective_masks(model: nn.Module, masks: Masks | None = None) -> Masks:
    """What is really nonzero: ``mask & (weight != 0)`` per prunable layer."""
    layers = prunable_layers(model)
    masks = masks if masks is not None else full_masks(model)
    return {name: masks[name] & (layer.weight.detach() != 0) for name, layer in layers.items()}


def pruned_copy(model: nn.Module, masks: Masks) -> nn.Module:
    """A copy of ``model`` whose pruned weights are set to zero (the deployable network)."""
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for name, layer in prunable_layers(pruned).items():
            if name in masks:
                layer.weight.mul_(masks[name])
    return pruned


def parameter_count(model: nn.Module) -> int:
    """Every parameter of ``model``, weights and biases."""
    return sum(parameter.numel() for parameter in model.parameters())


def remaining_parameters(model: nn.Module, masks: Masks | None = None) -> int:
    """Parameters left after pruning: nonzero kept weights plus every other parameter."""
    kept = effective_masks(model, masks)
    pruned = sum(int(mask.numel() - mask.sum()) for mask in kept.values())
    return parameter_count(model) - pruned


def layer_density(model: nn.Module, masks: Masks | None = None) -> dict[str, float]:
    """Per prunable layer, the fraction of its weights that remain (0..1)."""
    return {name: float(mask.float().mean()) for name, mask in effective_masks(model, masks).items()}
