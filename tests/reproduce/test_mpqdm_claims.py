"""MPQ-DM's claims beyond the FID rows: the model-size overhead, the OMQ ablation, Stable Diffusion's CLIP score, and
every registered claim attached to an artifact."""

import dataclasses
import json

import pytest
import torch

import reproduce.mpqdm.text_to_image as t2i
from methods.diffusion import (
    MPQDM_PRESETS,
    PromptConditionalUNet,
    clip_score,
    ddim_scheduler,
    omq_channel_bits,
    omq_masks,
    omq_storage,
    prompt_condition,
    quant_layers,
    quantize_model,
    tiny_unet,
)
from reproduce.harness.artifact import Context
from reproduce.harness.device import cpu_threads, describe_cpu
from reproduce.harness.errors import DataError
from reproduce.harness.records import Record, metric
from reproduce.mpqdm import lowbit, runs, stable_diffusion


def _tiny_quantized():
    unet = tiny_unet(sample_size=8, in_channels=1, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                     seed=0)
    return quantize_model(unet, 2, 4, n_steps=2)


def test_a_uniform_model_stores_nothing_beyond_its_bits():
    storage = omq_storage(_tiny_quantized())
    assert dataclasses.astuple(storage) == (0.0, 0.0, 0.0, 0.0) and storage.plus_mb == 0.0


def test_the_size_overhead_is_the_hand_counted_bits_of_the_allocation():
    """Two layers given an OMQ allocation by hand: k channels at 3 bits, k at 1, smoothing factors."""
    model = _tiny_quantized()
    inner = [layer for _, layer in quant_layers(model) if not layer.is_boundary]
    expected_outlier = expected_smoothing = expected_groups = 0
    for layer, k in ((inner[0], 1), (inner[3], 2)):
        kurt = torch.arange(layer.out_channels, dtype=torch.float32)
        layer.weight_quantizer.channel_bits.copy_(omq_channel_bits(omq_masks(kurt, k), 2))
        layer.smooth = torch.ones(layer.in_channels)
        expected_outlier += k * 1 * layer.weight[0].numel()  # k channels, one extra bit per weight
        expected_smoothing += 32 * layer.in_channels
        expected_groups += 2 * layer.out_channels
    storage = omq_storage(model)
    assert storage.mixed_bits == 0.0  # the mean-preserving allocation: k channels up, k down
    assert storage.outlier_bits == expected_outlier
    assert (storage.smoothing_bits, storage.group_bits) == (expected_smoothing, expected_groups)
    total = expected_outlier + expected_smoothing + expected_groups
    assert storage.plus_mb == pytest.approx(total / 8 / 2**20)
    assert storage.mean_preserving_mb == pytest.approx((expected_smoothing + expected_groups) / 8 / 2**20)


# ---------------------------------------------------------------------------------------------
# The OMQ ablation
# ---------------------------------------------------------------------------------------------

def test_the_ablation_presets_differ_only_in_omq():
    assert dataclasses.replace(MPQDM_PRESETS["baseline"], name="omq", omq=True) == MPQDM_PRESETS["omq"]


def test_the_full_scale_has_both_arms_of_the_ablation_for_every_seed():
    ctx = Context("full", lowbit.ARTIFACT.scales["full"], 0, describe_cpu("test"))
    params = [u.params for u in lowbit.units(ctx) if u.params["bits"] == "W2A4"]
    for seed in ctx.config["seeds"]:
        arms = {p["method"] for p in params if p["seed"] == seed}
        assert {"baseline", "omq"} <= arms


def test_the_arms_of_a_seed_share_every_draw_and_differ_only_in_omq():
    """The baseline and baseline + OMQ of one seed: the same calibration and LoRA initialisation; only OMQ's
    smoothing and mixed widths differ (no distillation here, so nothing else can)."""
    unet = tiny_unet(sample_size=8, in_channels=1, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                     seed=0).eval()
    fp = runs.DiffusionModel(unet, ddim_scheduler(), None, {"source": "test"})
    config = {"sample_steps": 2, "calib_samples": 4, "guidance_calibration": 1.0, "lora_rank": 2,
              "weight_init": "max", "act_init": "max", "distill_epochs": 0, "distill_batch": 2}
    with cpu_threads(1):  # tiny convolutions: more threads only wait on each other
        models = {method: runs.quantize(method, fp, 2, 4, config, torch.Generator().manual_seed(7))[0]
                  for method in ("baseline", "omq")}
    baseline, omq = (dict(quant_layers(models[m])) for m in ("baseline", "omq"))
    assert baseline.keys() == omq.keys()
    for name, layer in baseline.items():
        if layer.lora_A is not None:
            assert torch.equal(layer.lora_A.weight, omq[name].lora_A.weight)
        assert layer.smooth is None and bool((layer.weight_quantizer.channel_bits == layer.w_bits).all())
    assert any(layer.smooth is not None for layer in omq.values())


def _record(bits, method, seed, is_score, overhead=None):
    metrics = {"fid": metric(10.0, "FID"), "is": metric(is_score, "IS"), "size_mb": metric(100.0, "MB")}
    if overhead is not None:
        metrics["overhead_mb"] = metric(overhead, "MB")
    return Record(paper="mpqdm", artifact="lowbit", unit=f"{bits}-{method}-s{seed}", scale="full", status="ok",
                  config={}, seed=0, params={"bits": bits, "method": method, "seed": seed}, metrics=metrics,
                  data={"features": "FID Inception-v3", "bit_allocation": {}, "sample_grid": [],
                        "model": {"format": "CompVis latent-diffusion checkpoint (cin256-v2)"}})


def test_on_the_imagenet_ldm_the_ablation_and_size_are_measured_per_seed():
    ctx = Context("full", lowbit.ARTIFACT.scales["full"], 0, describe_cpu("test"))
    records = [record for seed, (base, omq, size) in enumerate(((50.0, 100.0, 4.0), (40.0, 110.0, 5.0))) for record in (
        _record("W2A4", "baseline", seed, base, 0.0), _record("W2A4", "omq", seed, omq, size),
        _record("W2A4", "omq_trd", seed, omq + 5, size))]
    summary = lowbit.summarize(records, ctx)
    assert summary.samples["abl-omq-is"] == [50.0, 70.0] and summary.measured["abl-omq-is"] == 60.0
    assert summary.samples["size-overhead-2bit"] == [4.0, 5.0]
    assert summary.measured["size-overhead-2bit"] == pytest.approx(4.5)
    for record in records:  # another model: shown in the notes, not measured against the ImageNet numbers
        record.data["model"] = {"source": "google/ddpm-cifar10-32"}
    other = lowbit.summarize(records, ctx)
    assert "abl-omq-is" not in other.measured and "size-overhead-2bit" not in other.measured
    assert any(note.startswith("Ablation at W2A4: OMQ adds +60") for note in other.notes)


# ---------------------------------------------------------------------------------------------
# Stable Diffusion
# ---------------------------------------------------------------------------------------------

def test_clip_score_is_a_hundred_times_the_clipped_cosine():
    image = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    text = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    assert torch.allclose(clip_score(image, text), torch.tensor([100.0, 100.0 / 2**0.5, 0.0]))
    with pytest.raises(ValueError, match="one shape"):
        clip_score(image, text[:2])


def test_prompt_guidance_mixes_the_prompt_and_empty_prompt_predictions():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=4,
                                cross_attention_dim=6, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
    model = PromptConditionalUNet(unet)
    x, prompt, null = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 6), torch.randn(1, 3, 6)
    with torch.no_grad():
        cond = unet(x, 10, encoder_hidden_states=prompt).sample
        uncond = unet(x, 10, encoder_hidden_states=null.expand(2, 3, 6)).sample
        guided = model(x, 10, **prompt_condition(prompt, null, 7.5))
        plain = model(x, 10, **prompt_condition(prompt, null, 1.0))
    assert torch.allclose(guided, uncond + 7.5 * (cond - uncond), atol=1e-4)
    assert torch.allclose(plain, cond, atol=1e-5)


def test_coco_captions_are_read_and_drawn_the_same_way_for_every_unit(tmp_path):
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps({"annotations": [{"image_id": i, "caption": f" a  photo {i}\n"} for i in range(9)]}))
    assert t2i.read_prompts(path)[:2] == ["a photo 0", "a photo 1"]
    config = {"prompts": str(path), "prompt_count": 4}
    assert t2i.prompt_set(config) == t2i.prompt_set(config) and len(set(t2i.prompt_set(config))) == 4
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a COCO captions file"):
        t2i.read_prompts(tmp_path / "bad.json")


def test_the_smoke_path_quantizes_samples_and_scores_every_prompt(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path))
    config = stable_diffusion.ARTIFACT.scales["smoke"]
    ctx = Context("smoke", config, 0, describe_cpu("test"))
    unit = next(u for u in stable_diffusion.units(ctx) if u.params["method"] == "omq_trd")
    outcome = t2i.run_text_to_image_unit(unit, ctx)
    assert len(outcome.data["per_prompt"]) == config["prompt_count"]
    assert 0.0 <= outcome.metrics["clip_score"]["value"] <= 100.0
    assert len(outcome.data["distill_loss"]) == config["sample_steps"]
    assert (tmp_path / "mpqdm").is_dir() and outcome.data["model"]["source"].startswith(str(tmp_path))


def test_the_full_scale_names_what_is_missing_without_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    config = {**stable_diffusion.ARTIFACT.scales["full"], "download": False}
    ctx = Context("full", config, 0, describe_cpu("test"))
    unit = stable_diffusion.units(ctx)[0]
    with pytest.raises(DataError) as error:
        t2i.run_text_to_image_unit(unit, ctx)
    message = str(error.value)
    assert "--prompts FILE" in message and "CompVis/stable-diffusion-v1-4" in message and "download is off" in message
    if t2i.importlib.util.find_spec("transformers") is None:
        assert "the transformers package" in message and "not installed" in message
