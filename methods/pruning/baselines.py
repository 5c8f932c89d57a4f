"""Baselines for the GA at the same sparsity: magnitude pruning and random pruning.

The paper (arXiv:1906.00399) compares with unnamed "state-of-the-art approaches". Ours:

- ``"magnitude"``: global magnitude pruning with fine-tuning in the style of Han et al.,
  "Learning both weights and connections for efficient neural networks" (NeurIPS 2015):
  iteratively prune the smallest ``|w|`` over all layers, fine-tune, repeat. One global
  threshold across layers (Han et al. set a threshold per layer) is ours;
- ``"random"``: the same schedule with uniformly random scores, the floor any
  importance criterion has to beat.

Both keep exactly a given number of weights, so they can be matched to the GA's sparsity.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from methods.pruning.masks import Masks, full_masks, prunable_layers

CRITERIA = ("magnitude", "random")


def global_masks(scores: dict[str, torch.Tensor], keep: int, allowed: Masks) -> Masks:
    """Keep the ``keep`` highest-scoring allowed weights over all layers.

    Parameters
    ----------
    scores : dict of str to Tensor
        Per layer, a score shaped like its weight (higher is kept first).
    keep : int
        Weights kept in total.
    allowed : dict of str to bool Tensor
        Weights that may be kept (already pruned ones stay pruned).

    Returns
    -------
    dict of str to bool Tensor
        Exactly ``min(keep, allowed count)`` True entries in all.
    """
    names = list(scores)
    flat = torch.cat([torch.where(allowed[name], scores[name], -torch.inf).flatten() for name in names])
    keep = min(keep, int(sum(int(allowed[name].sum()) for name in names)))
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[torch.topk(flat, keep, sorted=False).indices] = True
    masks, start = {}, 0
    for name in names:
        size = scores[name].numel()
        masks[name] = chosen[start:start + size].view_as(scores[name])
        start += size
    return masks


def iterative_prune(model: nn.Module, keep: int, *, criterion: str, steps: int,
                    finetune: Callable[[Masks], None], generator: torch.Generator) -> Masks:
    """Prune ``model`` to ``keep`` weights in ``steps`` geometric steps, fine-tuning after each.

    Step ``s`` of ``S`` keeps ``total * (keep / total) ** (s / S)`` weights, so each step
    removes the same fraction of what is left (Han et al.'s iterative schedule).

    Parameters
    ----------
    model : nn.Module
        Its latent weights are scored; ``finetune`` trains them.
    keep : int
        Weights left at the end.
    criterion : {"magnitude", "random"}
    steps : int
    finetune : callable(Masks) -> None
        Trains ``model`` under the masks.
    generator : torch.Generator
        Source of the random scores.

    Returns
    -------
    dict of str to bool Tensor
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, not {criterion!r}")
    layers = prunable_layers(model)
    masks = full_masks(model)
    total = sum(int(mask.numel()) for mask in masks.values())
    random_scores = {name: torch.rand(layer.weight.shape, generator=generator).to(layer.weight)
                     for name, layer in layers.items()}
    for step in range(1, steps + 1):
        target = round(total * (keep / total) ** (step / steps))
        scores = ({name: layer.weight.detach().abs() for name, layer in layers.items()}
                  if criterion == "magnitude" else random_scores)
        masks = global_masks(scores, target, masks)
        finetune(masks)
    return masks
