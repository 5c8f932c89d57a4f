"""Training LeNet-5 under masks (methods/pruning/lenet.py) and the pruned copy (methods/pruning/masks.py)."""

import torch

from methods.pruning import masked_forward, train
from methods.pruning.masks import pruned_copy
from tests.methods.pruning.cases import lenet, random_masks, toy_data


def test_pruned_weights_stay_zero_through_fine_tuning():
    model = lenet()
    masks = random_masks(model, 0.3, seed=4)
    latent = {name: layer.weight.detach().clone() for name, layer in model.named_children()}
    inputs, labels = toy_data()
    train(model, inputs, labels, epochs=2, generator=torch.Generator().manual_seed(0), masks=masks, batch_size=16)
    pruned = pruned_copy(model, masks)
    for name, layer in model.named_children():
        assert torch.equal(layer.weight[~masks[name]], latent[name][~masks[name]])  # never moved
        assert not pruned.get_submodule(name).weight[~masks[name]].any()
        assert not torch.equal(layer.weight[masks[name]], latent[name][masks[name]])  # the rest trained
    torch.testing.assert_close(pruned(inputs), masked_forward(model, masks, inputs))
