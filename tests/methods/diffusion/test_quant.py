"""Offline checks of the fake quantizer and MPQ-DM (docs/papers/mpqdm.md)."""

import copy
import math

import diffusers
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.diffusion.mpqdm import (
    PRESETS,
    MPQDMTrainer,
    TimeSmoothedRelation,
    apply_omq,
    collect_calibration_inputs,
    default_k_choices,
    kurtosis,
    omq_allocate,
    omq_channel_bits,
    omq_masks,
    prepare_quantized,
    relation_map,
    smoothing_factors,
    trd_loss,
)
from methods.diffusion.quant import (
    QuantLayer,
    TemporalActivationQuantizer,
    bit_allocation,
    calibrate,
    effective_bits,
    fake_quantize,
    minmax_ptq,
    mse_range_search,
    quant_layers,
    quantize_model,
    round_ste,
    set_quant_state,
    set_step,
    temporal_model_fn,
)
from methods.diffusion.sampling import ddim_sample

N_STEPS = 3


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models gain nothing from two threads, and busy-waiting threads on a shared 2-core machine
    slow them down many times (as in tests/methods/cl/conftest.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_unet(seed: int = 0):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).eval()


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


@pytest.fixture(scope="module")
def calib(unet):
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(4, 1, 16, 16, generator=g)
    return collect_calibration_inputs(unet, diffusers.DDIMScheduler(), noise, N_STEPS, generator=g)


# --------------------------------------------------------------------------- quantizer


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_fake_quantize_grid_and_idempotence(bits):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g) * 3
    delta, zero_point = torch.tensor(0.37), torch.tensor(float(2 ** (bits - 1)))
    out = fake_quantize(x, delta, zero_point, bits)
    codes = out / delta + zero_point
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.min() >= -1e-4 and codes.max() <= 2**bits - 1 + 1e-4
    assert len(torch.unique(codes.round())) <= 2**bits
    assert torch.allclose(fake_quantize(out, delta, zero_point, bits), out, atol=1e-6)


def test_fake_quantize_per_channel_bits():
    x = torch.linspace(-5, 5, 200).repeat(3, 1)
    bits = torch.tensor([1, 2, 3]).view(3, 1)
    out = fake_quantize(x, torch.full((3, 1), 0.5), torch.full((3, 1), 1.0), bits)
    for c in range(3):
        assert len(torch.unique(out[c])) == 2 ** (c + 1)


def test_ste_and_lsq_gradients():
    x = torch.tensor([0.26, 0.9, 5.0, -3.0], requires_grad=True)  # two inside, one above, one below
    delta = torch.tensor(0.5, requires_grad=True)
    zero_point = torch.tensor(2.0, requires_grad=True)
    bits = 2  # grid codes 0..3 -> values -1.0 .. 0.5
    out = fake_quantize(x, delta, zero_point, bits)
    out.sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 0.0, 0.0, 0.0]))  # 0.9 / 0.5 + 2 = 3.8 -> clipped
    inside = (torch.round(torch.tensor(0.26) / 0.5) - 0.26 / 0.5)
    expected_delta = inside + (3 - 2.0) * 2 + (0 - 2.0)  # two upper clips, one lower clip
    assert delta.grad.item() == pytest.approx(float(expected_delta), abs=1e-6)
    assert zero_point.grad.item() == pytest.approx(-0.5 * 3, abs=1e-6)
    y = torch.tensor([1.4, -2.6], requires_grad=True)
    round_ste(y).sum().backward()
    assert torch.equal(y.grad, torch.ones(2))


def _brute_force_lp(x, bits, p=2.4, candidates=80):
    x = x.double()
    best = (math.inf, None, None)
    for i in range(candidates):
        hi, lo = x.max() * (1 - 0.01 * i), x.min() * (1 - 0.01 * i)
        delta = (hi - lo) / (2**bits - 1)
        z = torch.round(-lo / delta)
        q = (torch.clamp(torch.round(x / delta) + z, 0, 2**bits - 1) - z) * delta
        err = float((x - q).abs().pow(p).mean())
        if err < best[0]:
            best = (err, float(delta), float(z))
    return best


@pytest.mark.parametrize("bits", [2, 4])
def test_mse_range_search_is_brute_force_argmin(bits):
    g = torch.Generator().manual_seed(bits)
    x = torch.cat([torch.randn(500, generator=g), 8 * torch.rand(5, generator=g)])  # outliers on the right
    delta, zero_point = mse_range_search(x, bits)
    _, delta_ref, z_ref = _brute_force_lp(x, bits)
    assert delta.item() == pytest.approx(delta_ref, rel=1e-5)
    assert zero_point.item() == z_ref
    w = torch.randn(4, 3, 3, 3, generator=g)
    w[1, 0, 0, 0] = 6.0
    delta_c, zero_c = mse_range_search(w, torch.tensor([2, 3, bits, 1]), channel_dim=0)
    for c, b in enumerate([2, 3, bits, 1]):
        _, d_ref, z_ref = _brute_force_lp(w[c].flatten(), b)
        assert delta_c[c].item() == pytest.approx(d_ref, rel=1e-5)
        assert zero_c[c].item() == z_ref


def test_temporal_quantizer_uses_each_steps_pair():
    quantizer = TemporalActivationQuantizer(4, bits=4)
    scales = [0.5, 1.0, 4.0]
    for step, scale in zip([0, 1, 3], scales):
        quantizer.initialize_step(torch.linspace(-scale, scale, 101), "max", step=step)
    quantizer.fill_uncalibrated()  # step 2 copies its nearest calibrated step (1 and 3 tie -> 1)
    assert torch.all(quantizer.calibrated == torch.tensor([True, True, False, True]))
    assert quantizer.delta[2].item() == pytest.approx(quantizer.delta[1].item())
    assert quantizer.delta[3].item() == pytest.approx(8.0 / 15)
    x = torch.linspace(-3, 3, 50)
    for step in range(4):
        quantizer.set_step(step)
        expected = fake_quantize(x, quantizer.delta[step], quantizer.zero_point[step], 4)
        assert torch.equal(quantizer(x), expected)
    quantizer.set_step(3)
    quantizer(x).sum().backward()
    grads = [d.grad for d in quantizer.delta]
    assert grads[3] is not None and all(g is None for g in grads[:3])
    with pytest.raises(IndexError):
        quantizer.set_step(4)


# --------------------------------------------------------------------------- LoRA


def _quant_off(module, rank):
    layer = QuantLayer(module, 4, 4, 1, lora_rank=rank, generator=torch.Generator().manual_seed(0))
    layer.quantize_weights = layer.quantize_acts = False
    with torch.no_grad():
        layer.lora_B.weight.normal_(generator=torch.Generator().manual_seed(1))
    return layer


def test_lora_merge_linear():
    lin = nn.Linear(12, 7)
    layer = _quant_off(lin, 3)
    x = torch.randn(5, 12)
    sequential = lin(x) + layer.lora_B(layer.lora_A(x))
    torch.testing.assert_close(layer(x), sequential)


def test_lora_merge_conv_1x1_is_the_two_convs_in_sequence():
    conv = nn.Conv2d(6, 5, 1)
    layer = _quant_off(conv, 2)
    x = torch.randn(2, 6, 7, 7)
    torch.testing.assert_close(layer(x), conv(x) + layer.lora_B(layer.lora_A(x)))


@pytest.mark.parametrize("stride", [1, 2])
def test_lora_merge_conv_kxk_is_a_per_tap_sequence(stride):
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=1)
    layer = _quant_off(conv, 2)
    x = torch.randn(2, 4, 8, 8)
    a, b = layer.lora_A.weight, layer.lora_B.weight
    expected = conv(x)
    for u in range(3):
        for v in range(3):
            a_tap = torch.zeros_like(a)
            a_tap[:, :, u, v] = a[:, :, u, v]
            hidden = F.conv2d(x, a_tap, stride=stride, padding=1)  # A restricted to tap (u, v)
            expected = expected + F.conv2d(hidden, b[:, :, u, v, None, None])  # B's tap as a 1x1 conv
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    assert layer.merged_weight().shape == conv.weight.shape


# --------------------------------------------------------------------------- OMQ


def test_kurtosis_matches_numpy_and_known_distributions():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float64)
    flat = w.reshape(5, -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    reference = (centred**4).mean(axis=1) / flat.std(axis=1, ddof=1) ** 4
    np.testing.assert_allclose(kurtosis(torch.from_numpy(w)).numpy(), reference, rtol=1e-12)
    big = torch.from_numpy(np.stack([rng.standard_normal(400_000), rng.laplace(size=400_000)]))
    normal, laplace = kurtosis(big).tolist()
    assert normal == pytest.approx(3.0, abs=0.05)
    assert laplace == pytest.approx(6.0, abs=0.25)


@pytest.mark.parametrize("c_out", [1, 10, 17, 64])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_omq_masks_partition_and_keep_mean_bits(c_out, bits):
    kurt = torch.rand(c_out, generator=torch.Generator().manual_seed(c_out))
    for k in default_k_choices(c_out):
        high, mid, low = omq_masks(kurt, k)
        assert torch.all(high.int() + mid.int() + low.int() == 1)
        assert high.sum() == k and low.sum() == k
        if k:
            assert kurt[high].min() >= kurt[~high].max() and kurt[low].max() <= kurt[~low].min()
        channel_bits = omq_channel_bits((high, mid, low), bits)
        assert channel_bits.float().mean().item() == pytest.approx(bits)
    assert default_k_choices(64) == [0, 6, 12, 18, 24, 30]
    with pytest.raises(ValueError):
        omq_masks(kurt, c_out // 2 + 1)


def test_smoothing_factors():
    s = smoothing_factors(torch.tensor([4.0, 1.0, 0.0]), torch.tensor([1.0, 4.0, 2.0]))
    torch.testing.assert_close(s, torch.tensor([2.0, 0.5, 1.0]))


def test_omq_allocate_records_the_search():
    torch.manual_seed(0)
    lin = nn.Linear(16, 40)
    with torch.no_grad():
        lin.weight[:8] = torch.distributions.Laplace(0.0, 0.05).sample((8, 16))  # heavy-tailed rows
        lin.weight[:8, 0] *= 8
    layer = QuantLayer(lin, 2, 4, 1)
    x = torch.randn(64, 16) * torch.linspace(0.1, 5, 16)
    result = omq_allocate(layer, x)
    assert result.k_choices == [0, 4, 8, 12, 16, 20] and len(result.errors) == 6
    assert result.k in result.k_choices and result.errors[result.k_choices.index(result.k)] == min(result.errors)
    assert layer.weight_quantizer.channel_bits.float().mean().item() == pytest.approx(2.0)
    high, _, low = layer.omq_masks
    assert high.sum() == result.k == low.sum()
    layer.quantize_weights = layer.quantize_acts = False  # smoothing alone keeps the FP function
    torch.testing.assert_close(layer(x), lin(x), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- whole models


def test_quantize_model_layer_selection(unet):
    q = quantize_model(unet, 2, 4, N_STEPS, lora_rank=4)
    names = [name for name, _ in quant_layers(q)]
    fp_names = [n for n, m in unet.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    kept_fp = [n for n in fp_names if "conv_shortcut" in n or "downsamplers" in n]
    assert kept_fp and len(names) == len(fp_names) - len(kept_fp)
    for name in kept_fp:
        assert type(q.get_submodule(name)) is nn.Conv2d
    boundary = {n for n, layer in quant_layers(q) if layer.is_boundary}
    assert boundary == {"conv_in", "time_embedding.linear_1", "time_embedding.linear_2", "conv_out"}
    for name, layer in quant_layers(q):
        bits = 8 if name in boundary else (2, 4)
        assert (layer.w_bits, layer.a_bits) == ((8, 8) if name in boundary else bits)
        assert (layer.lora_A is None) == (name in boundary)
    allocation = bit_allocation(q)
    assert allocation["conv_in"] == 8 and allocation["down_blocks.0.resnets.0.conv1"] == 2
    size = effective_bits(q)
    assert 2 < size.mean_weight_bits < 8 and size.size_mb < size.fp32_size_mb
    set_quant_state(q, False, False)  # with quantization off the copy computes the FP function
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 500])
    torch.testing.assert_close(q(x, t).sample, unet(x, t).sample, atol=1e-5, rtol=1e-5)


def test_effective_bits_on_a_plain_model():
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4, bias=False))
    q = quantize_model(net, 3, 8, 1, first_last_8bit=False)
    size = effective_bits(q)
    assert size.mean_weight_bits == 3
    total = 8 * 16 + 16 + 16 * 4
    assert size.mean_bits == pytest.approx((3 * (8 * 16 + 16 * 4) + 32 * 16) / total)
    assert size.fp32_size_mb == pytest.approx(4 * total / 2**20)


def test_minmax_ptq_per_step_max_ranges(unet, calib):
    q = minmax_ptq(unet, 4, 8, N_STEPS, calib)
    assert all(layer.lora_A is None for _, layer in quant_layers(q))
    layer = dict(quant_layers(q))["down_blocks.0.resnets.0.conv1"]
    assert torch.all(layer.act_quantizer.calibrated)
    deltas = [d.item() for d in layer.act_quantizer.delta]
    assert len(set(deltas)) == N_STEPS  # one range per step
    w = layer.weight
    hi, lo = w.flatten(1).amax(1).clamp_min(0), w.flatten(1).amin(1).clamp_max(0)
    torch.testing.assert_close(layer.weight_quantizer.delta.flatten(), (hi - lo) / 15)
    x, t, step, _ = calib[1]
    set_step(q, step)
    out = q(x, t).sample
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_trd_sends_gradient_into_the_quantized_model(unet, calib):
    q = quantize_model(unet, 4, 8, N_STEPS, lora_rank=4)
    calibrate(q, calib)
    with torch.no_grad():  # a nonzero LoRA B so that A receives gradient too
        for _, layer in quant_layers(q):
            if layer.lora_B is not None:
                layer.lora_B.weight.normal_(std=1e-3)
    feats = {}
    unet.up_blocks[-1].register_forward_hook(lambda m, a, o: feats.__setitem__("fp", o.detach()))
    q.up_blocks[-1].register_forward_hook(lambda m, a, o: feats.__setitem__("q", o))
    relation = TimeSmoothedRelation(window=2)
    losses = []
    for x, t, step, _ in calib[:2]:
        set_step(q, step)
        with torch.no_grad():
            unet(x, t)
        q(x, t)
        losses.append(relation.push(feats["fp"], feats["q"]))
    assert losses[0] is None and losses[1].item() > 0
    losses[1].backward()
    layer = dict(quant_layers(q))["up_blocks.1.resnets.1.conv2"]
    for p in (layer.lora_A.weight, layer.lora_B.weight, layer.act_quantizer.delta[1]):
        assert p.grad is not None and p.grad.abs().sum() > 0
    detached = TimeSmoothedRelation(window=1).push(feats["fp"], feats["q"].detach())  # the public code's defect
    assert not detached.requires_grad
    probs = relation_map(feats["q"].detach())
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:2]))
    assert trd_loss(feats["fp"], feats["fp"]).item() == pytest.approx(0.0, abs=1e-3)


def test_end_to_end_calibrate_omq_distill_sample(unet, calib):
    g = torch.Generator().manual_seed(0)
    q, omq = prepare_quantized(unet, PRESETS["omq_trd"], 2, 4, N_STEPS, calib, lora_rank=4, generator=g)
    assert omq and all(r.k in r.k_choices for r in omq.values())
    assert all(layer.smooth is not None for _, layer in quant_layers(q) if not layer.is_boundary)
    uniform = effective_bits(quantize_model(unet, 2, 4, 1)).mean_weight_bits
    assert effective_bits(q).mean_weight_bits == pytest.approx(uniform)  # OMQ keeps the average

    def run(model):
        trainer = MPQDMTrainer(unet, model, diffusers.DDIMScheduler(), n_steps=N_STEPS)
        scheduler = trainer.scheduler
        scheduler.set_timesteps(N_STEPS)
        x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
        history = []
        for step, t in enumerate(scheduler.timesteps[:2]):  # two distillation steps
            record, eps_fp = trainer.distill_step(x, t, step)
            history.append(record)
            x = scheduler.step(eps_fp, t, x).prev_sample
        trainer.close()
        return history

    fresh = copy.deepcopy(q)
    history = run(q)
    assert all(math.isfinite(r["loss"]) for r in history)
    assert math.isnan(history[0]["trd"]) and history[1]["trd"] > 0
    assert [r["loss"] for r in run(fresh)] == [r["loss"] for r in history]  # deterministic
    lora_b = dict(quant_layers(q))["mid_block.resnets.0.conv1"].lora_B.weight
    assert lora_b.abs().sum() > 0  # the update moved LoRA away from its zero start
    x_t, t, step, _ = calib[2]
    with torch.no_grad():
        set_step(q, 0)
        eps = temporal_model_fn(q)(x_t, t, step)  # selects the step itself
        set_step(q, step)
        torch.testing.assert_close(eps, q(x_t, t).sample)
    samples = ddim_sample(q, diffusers.DDIMScheduler(), 2, steps=N_STEPS, generator=g, batch_size=2,
                          model_fn=temporal_model_fn(q))
    assert samples.shape == (2, 1, 16, 16) and torch.isfinite(samples).all()


def test_apply_omq_skips_boundary_layers(unet, calib):
    q = quantize_model(unet, 3, 6, N_STEPS)
    x = torch.cat([c[0] for c in calib])
    t = torch.cat([c[1] for c in calib])
    results = apply_omq(q, x, t, k_choices=lambda c_out: [0, c_out // 10])
    boundary = {n for n, layer in quant_layers(q) if layer.is_boundary}
    assert boundary.isdisjoint(results) and len(results) == len(quant_layers(q)) - 4
    assert all(r.k_choices == [0, r.kurtosis.numel() // 10] for r in results.values())
    assert all(layer.quantize_weights and layer.quantize_acts for _, layer in quant_layers(q))
