"""Global magnitude and random pruning with fine-tuning (methods/pruning/baselines.py)."""

import pytest
import torch

from methods.pruning import iterative_prune, remaining_parameters, train
from methods.pruning.baselines import global_masks
from tests.methods.pruning.cases import lenet, toy_data


def test_global_masks_keep_exactly_the_best_allowed_weights():
    scores = {"a": torch.tensor([[0.9, 0.1], [0.5, 0.7]]), "b": torch.tensor([0.8, 0.95, 0.2])}
    allowed = {"a": torch.tensor([[True, True], [True, False]]), "b": torch.ones(3, dtype=torch.bool)}
    masks = global_masks(scores, 3, allowed)
    assert masks["a"].tolist() == [[True, False], [False, False]]
    assert masks["b"].tolist() == [True, True, False]


@pytest.mark.parametrize("criterion", ["magnitude", "random"])
def test_iterative_pruning_reaches_the_target_and_prunes_monotonically(criterion):
    model = lenet()
    inputs, labels = toy_data()
    keep = 3000
    history = []

    def finetune(masks):
        history.append(masks)
        train(model, inputs, labels, epochs=1, generator=torch.Generator().manual_seed(0), masks=masks, batch_size=32)

    masks = iterative_prune(model, keep, criterion=criterion, steps=3, finetune=finetune,
                            generator=torch.Generator().manual_seed(1))
    assert sum(int(mask.sum()) for mask in masks.values()) == keep
    for earlier, later in zip(history, history[1:]):
        assert all(not (later[name] & ~earlier[name]).any() for name in later)
    assert remaining_parameters(model, masks) == keep + 236


def test_magnitude_pruning_keeps_the_largest_weights():
    model = lenet()
    masks = iterative_prune(model, 500, criterion="magnitude", steps=1, finetune=lambda masks: None,
                            generator=torch.Generator().manual_seed(0))
    weights = torch.cat([layer.weight.detach().abs().flatten() for layer in model.children()])
    kept = torch.cat([mask.flatten() for mask in masks.values()])
    assert weights[kept].min() >= weights[~kept].max()
