"""The slimmed network and its direct sparse conv against the masked network (methods/pruning/slim.py)."""

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention

from methods.pruning import SlimLeNet, SparseConv2d, live_channels, masked_forward
from tests.methods.pruning.cases import lenet, random_masks, toy_data


@pytest.mark.parametrize("case", ["random", "dead channels", "nothing left"])
@pytest.mark.parametrize("kernel", ["dense", "sparse"])
def test_slim_lenet_computes_the_masked_network(case, kernel):
    model = lenet()
    masks = random_masks(model, 0.2, seed=1)
    if case == "dead channels":
        masks["conv1"][[0, 4]] = False  # constant channels, folded into conv2's bias
        masks["conv2"][[2, 11]] = False  # constant filters, folded into fc1's bias
        masks["fc1"].view(120, 16, 25)[:, 7] = False  # filter 7 is read by nothing
    if case == "nothing left":
        masks["conv1"][:] = False
    inputs = toy_data(32)[0]
    slim = SlimLeNet(model, masks)
    with torch.no_grad():
        torch.testing.assert_close(slim(inputs, kernel), masked_forward(model, masks, inputs), atol=1e-5, rtol=1e-5)
    assert slim.channels == tuple(int(live.sum()) for live in live_channels(model, masks))


@pytest.mark.parametrize("padding", [0, 2])
def test_sparse_conv_matches_conv2d(padding):
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(5, 3, 5, 5, generator=generator) * (torch.rand(5, 3, 5, 5, generator=generator) < 0.3)
    bias = torch.randn(5, generator=generator)
    inputs = torch.randn(4, 3, 12, 12, generator=generator)
    expected = F.conv2d(inputs, weight, bias, padding=padding)
    torch.testing.assert_close(SparseConv2d(weight, bias, padding)(inputs), expected, atol=1e-5, rtol=1e-5)
