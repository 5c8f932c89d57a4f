"""eTag on other backbones (appendix Table C.3): VGG-11 and TinyViT with eTag's auxiliary heads."""

import pytest
import torch
from torch import nn

from methods.cl.aux_backbones import (
    NETWORKS,
    PUBLISHED_MILLIONS,
    TINYVIT_5M,
    TINYVIT_11M,
    VGG11_GROUPS,
    AuxiliaryNet,
    TinyViT,
    WindowAttention,
    offset_index,
)
from methods.cl.backbones import count_parameters
from methods.cl.etag import AuxiliaryResNet, build
from methods.cl.incremental import AdamSchedule
from reproduce.etag import runs, table_c1

WIDTH, CLASSES = 4, 4
# Backbone -> (channels, side) of each stage's map and the feature size, for width 4 and 32 x 32 inputs.
LAYOUT = {
    "vgg11": ([(8, 8), (16, 4), (32, 2), (32, 1)], 32),  # width * (2, 4, 8, 8), halved by each max-pool
    "tinyvit-5m": ([(4, 8), (8, 4), (10, 2), (20, 2)], 20),  # (64, 128, 160, 320) / 16; the last merge keeps 2 x 2
    "tinyvit-11m": ([(4, 8), (8, 4), (16, 2), (28, 2)], 28),  # (64, 128, 256, 448) / 16
}


def tiny_net(name: str, transforms: int = 4) -> AuxiliaryNet:
    torch.manual_seed(0)
    return NETWORKS[name](CLASSES, WIDTH, 3, transforms=transforms)


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(NETWORKS))
def test_each_backbone_gives_four_maps_and_its_feature_vector(name):
    net = tiny_net(name).eval()
    x = images()
    maps = net.feature_maps(x)
    layout, feature_dim = LAYOUT[name]
    assert [(m.shape[1], m.shape[2]) for m in maps] == layout and all(m.shape[2] == m.shape[3] for m in maps)
    logits, features, aux = net(x)
    assert features.shape == (6, feature_dim) and net.feature_dim == feature_dim
    assert torch.allclose(features, net.features(x)) and torch.allclose(logits, net.classify(features))
    # VGG's features are ReLU'd means (the generator's last ReLU can reach them); TinyViT's are layer-normed.
    assert net.nonnegative_features == (name == "vgg11")
    assert bool((features >= 0).all()) == net.nonnegative_features


@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize("transforms", [4, 1])
def test_each_auxiliary_head_outputs_transforms_times_classes(name, transforms):
    net = tiny_net(name, transforms)
    logits, _, aux = net(images())
    assert logits.shape == (6, CLASSES)
    assert [a.shape for a in aux] == [(6, transforms * CLASSES)] * 4


def _shapes(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.shape)) for name, p in module.named_parameters()]


@pytest.mark.parametrize("name", list(NETWORKS))
def test_the_head_after_stage_i_stacks_its_own_copies_of_the_later_stages(name):
    net = tiny_net(name).eval()
    backbone, heads = net.backbone, net.aux_heads
    for i, head in enumerate(heads[:3]):
        later = list(backbone.stages[i + 1:])
        assert len(head.stages) == len(later)
        assert [_shapes(s) for s in head.stages] == [_shapes(s) for s in later]  # the same architecture ...
    backbone_storage = {p.data_ptr() for p in backbone.parameters()}
    assert not any(p.data_ptr() in backbone_storage for p in heads.parameters())  # ... in parameters of its own
    x = images()
    maps = [m.detach() for m in net.feature_maps(x)]
    before = [head(m) for head, m in zip(heads, maps)]
    with torch.no_grad():  # changing the backbone's last stages leaves every head's output on given maps
        for p in backbone.stages[1:].parameters():
            p.add_(1.0)
    assert all(torch.equal(b, head(m)) for b, head, m in zip(before, heads, maps))
    # The last head: a stage of the last width that keeps the resolution.
    extra = heads[3].stages(maps[3])
    assert extra.shape == maps[3].shape


def test_vgg11_parameters_count_its_layout():
    net = NETWORKS["vgg11"](100, 64, 3).backbone
    widths = [3] + [64 * m for group in VGG11_GROUPS for m in group]
    convs = sum(9 * cin * cout + 2 * cout for cin, cout in zip(widths, widths[1:]))  # no bias; BN's scale and shift
    assert count_parameters(net) == convs + 512 * 100 + 100 == 9_274_532


@pytest.mark.parametrize(("name", "config", "exact"), [("tinyvit-5m", TINYVIT_5M, 5_392_764),
                                                        ("tinyvit-11m", TINYVIT_11M, 10_996_972)])
def test_tinyvit_parameters_match_the_names(name, config, exact):
    """With the paper's 1000-class ImageNet classifier (layer norm + linear), the count TinyViT's paper names.

    ``exact`` is also timm's count of ``tiny_vit_5m_224`` / ``tiny_vit_11m_224`` (checked once by hand).
    """
    count = count_parameters(TinyViT(1000, 64, 3, config))
    assert count == exact
    assert abs(count / 1e6 - PUBLISHED_MILLIONS[name]) <= 0.05 * PUBLISHED_MILLIONS[name]


def test_resnet18_stays_etags_default_network():
    assert build.__kwdefaults__["network"] is AuxiliaryResNet
    assert runs.METHODS["etag"].switches == {}
    assert {runs.METHODS[f"etag-{b}"].switches["network"] for b in table_c1.BACKBONES} == set(NETWORKS.values())


def test_offset_index_by_hand():
    # 2 x 2 grid, positions (0,0) (0,1) (1,0) (1,1); offsets |dy| * 3 + |dx| into a 3 x 3 table.
    assert offset_index(2, 2, 3).tolist() == [[0, 1, 3, 4], [1, 0, 4, 3], [3, 4, 0, 1], [4, 3, 1, 0]]


def test_window_attention_mixes_within_windows_only():
    torch.manual_seed(0)
    attention = WindowAttention(dim=4, heads=2, window=2)
    x = torch.randn(1, 4, 4, 4)
    poked = x.clone()
    poked[0, :, 0, 0] += torch.tensor([5.0, -3.0, 2.0, 0.0])  # a position of the top-left 2 x 2 window
    changed = (attention(poked) - attention(x)).abs().sum(1)[0] > 1e-6
    assert changed[:2, :2].all() and changed.sum() == 4
    # A map no larger than the window is one window: every position sees the change.
    whole = WindowAttention(dim=4, heads=2, window=7)
    assert ((whole(poked) - whole(x)).abs().sum(1) > 1e-6).all()
    with pytest.raises(ValueError, match="does not split"):
        attention(torch.randn(1, 4, 3, 4))


def test_attention_biases_follow_the_offsets():
    attention = WindowAttention(dim=4, heads=2, window=2)
    with torch.no_grad():
        for layer in (attention.qkv, attention.proj):
            layer.weight.zero_()
            layer.bias.zero_()
        attention.qkv.weight[8:] = torch.eye(4)  # values = the normed input; queries, keys 0: scores = biases
        attention.proj.weight.copy_(torch.eye(4))
        attention.biases[:, 3] = 50.0  # offset (1, 1): each position attends to its diagonal opposite
    x = torch.randn(1, 4, 2, 2)
    values = attention.norm(x.flatten(2).transpose(1, 2))[0]  # (4 positions, 4)
    out = attention(x).flatten(2).transpose(1, 2)[0]
    assert torch.allclose(out, values[[3, 2, 1, 0]], atol=1e-4)


def test_tinyvit_width_must_divide_the_heads():
    with pytest.raises(ValueError, match="multiples of their heads"):
        TinyViT(10, 3, 3, TINYVIT_5M)


def test_vgg11_needs_32_pixels():
    with pytest.raises(ValueError, match=">= 32"):
        tiny_net("vgg11").feature_maps(torch.randn(1, 3, 16, 16))


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: nn.Module, key=lambda k: True) -> set[str]:
    return {k for k, v in module.state_dict().items() if key(k) and not torch.equal(before[k], v)}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_one_etag_step_per_task_on_each_backbone_changes_only_what_it_should(name):
    torch.manual_seed(0)
    learner = build(CLASSES, WIDTH, 3, generator=torch.Generator().manual_seed(0), optim=AdamSchedule(),
                    generator_epochs=1, synthetic_batch=8, hidden=16, latent=4, network=NETWORKS[name])
    net, cvae = learner.net, learner.cvae
    linear = [m for m in cvae.decoder if isinstance(m, nn.Linear)]
    assert isinstance(net, AuxiliaryNet) and linear[-1].out_features == net.feature_dim
    assert isinstance(cvae.decoder[-1], nn.ReLU) == net.nonnegative_features  # ReLU last only for features >= 0
    x, y = images(8), torch.arange(CLASSES).repeat(2)
    generator_before = _state(cvae)
    learner.begin_task(0, (0, 1))
    before = _state(net)
    terms = learner.train_step(x[y < 2], y[y < 2])
    assert set(terms) == {"current", "aux", "total"}
    changed = _changed(before, net)
    parts = ["backbone.stem", "backbone.stages", "backbone.fc", *(f"aux_heads.{i}." for i in range(4))]
    assert all(any(k.startswith(part) for k in changed) for part in parts)  # task 0 trains every part
    assert any("running_mean" in k for k in changed)
    learner.end_epoch(0)
    learner.begin_task(1, (2, 3))
    before, old = _state(net), _state(learner.old_net)
    terms = learner.train_step(x[y >= 2], y[y >= 2])
    assert set(terms) == {"current", "old", "kd", "feature", "total"}
    changed = _changed(before, net)
    assert not any("running" in k or "num_batches" in k for k in changed)  # batch norm frozen (eval mode)
    assert all(any(k.startswith(part) for k in changed) for part in parts[:-1])  # the first 3 heads are distilled
    assert not any(k.startswith("aux_heads.3.") for k in changed)  # the last head is not in the loss
    assert not _changed(old, learner.old_net) and not _changed(generator_before, cvae)
