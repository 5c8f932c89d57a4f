"""Parameter and conv FLOP counts of LeNet-5, by hand, dense and under masks (methods/pruning/flops.py, masks.py)."""

import torch

from methods.pruning import (
    conv_flops,
    dense_conv_flops,
    full_masks,
    live_channels,
    parameter_count,
    remaining_parameters,
)
from methods.pruning.flops import conv_macs
from tests.methods.pruning.cases import lenet


def test_lenet5_parameters_and_conv_flops_by_hand():
    model = lenet()
    # conv1 6*(1*25)+6, conv2 16*(6*25)+16, fc1 400*120+120, fc2 120*84+84, fc3 84*10+10.
    assert parameter_count(model) == 156 + 2416 + 48120 + 10164 + 850 == 61706
    # conv1: 6 filters x 25 taps x 28*28 outputs; conv2: 16 x (6*25) x 10*10; a FLOP per multiply and per add.
    assert conv_macs(model) == {"conv1": 6 * 25 * 28 * 28, "conv2": 16 * 150 * 10 * 10}
    assert dense_conv_flops(model) == conv_flops(model) == 2 * (117_600 + 240_000) == 715_200


def test_conv_flops_count_only_kept_weights_on_live_channels():
    model = lenet()
    masks = {name: torch.zeros_like(mask) for name, mask in full_masks(model).items()}
    masks["conv1"][0].view(-1)[:10] = True  # 10 weights of filter 0
    masks["conv1"][1].view(-1)[:4] = True  # filter 1: nothing in conv2 reads it -> dead
    masks["conv2"][3, 0].view(-1)[:7] = True  # filter 3 reads channel 0 with 7 weights
    masks["conv2"][3, 2].view(-1)[:5] = True  # ... and 5 weights on channel 2, which is constant
    masks["conv2"][9, 0].view(-1)[:6] = True  # filter 9 varies but fc1 never reads it -> dead
    masks["fc1"].view(120, 16, 25)[0, 3, 0] = True
    live1, live2 = live_channels(model, masks)
    assert live1.nonzero().flatten().tolist() == [0]
    assert live2.nonzero().flatten().tolist() == [3]
    assert conv_macs(model, masks) == {"conv1": 10 * 28 * 28, "conv2": 7 * 10 * 10}
    # Every kept weight counts as a parameter, dead or not; so do all 236 biases.
    assert remaining_parameters(model, masks) == 10 + 4 + 7 + 5 + 6 + 1 + 236
