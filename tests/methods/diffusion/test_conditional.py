"""The class-conditional LDM: CompVis checkpoints checked against the genuine modules' outputs; guidance; conditions."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from methods.diffusion import (
    MPQDMTrainer,
    collect_calibration_inputs,
    ddim_scheduler,
    prepare_quantized,
    quant_layers,
)
from methods.diffusion.conditional import (
    ClassConditionalUNet,
    balanced_labels,
    class_condition,
    random_class_groups,
)
from methods.diffusion.ldm_checkpoint import (
    CIN256_V2,
    LSUN_BEDROOMS_VQ4,
    CheckpointError,
    LDMArchitecture,
    convert_ldm,
    detect_architecture,
    load_ldm,
    load_state_dict,
)
from methods.diffusion.quant import calibrate, is_full_precision_name, quantize_model
from methods.diffusion.sampling import cat_conditions, ddim_sample, ddim_trajectory, run_trajectory
from tests.methods.diffusion.compvis_weights import ldm_betas, state_dict, uniform, write_lightning_checkpoint

REFERENCE = json.loads((Path(__file__).parents[2] / "fixtures" / "compvis_ldm" / "reference.json").read_text())
TINY, TINY_UNCOND = REFERENCE["tiny"], REFERENCE["tiny_uncond"]


def tiny_architecture(reference: dict) -> LDMArchitecture:
    """The architecture of a tiny reference model (the fixture's spec)."""
    spec = reference["spec"]
    return LDMArchitecture("tiny", unet=spec["unet"], first_stage=spec["vq"], n_classes=spec["n_classes"])


TINY_ARCHITECTURE = tiny_architecture(TINY)


def _inputs(key, shape):
    return torch.from_numpy(uniform(key, int(np.prod(shape))).reshape(shape).astype(np.float32))


@pytest.fixture
def tiny_checkpoint(tmp_path, monkeypatch):
    """The tiny CompVis model as a Lightning 1.4 checkpoint file, with latent-diffusion's schedule buffers."""
    state = {**state_dict(TINY["shapes"]), "betas": ldm_betas()}
    path = tmp_path / "model.ckpt"
    write_lightning_checkpoint(path, state, monkeypatch)
    return path


@pytest.mark.parametrize("reference", [TINY, TINY_UNCOND], ids=["class-conditional", "unconditional"])
def test_converted_checkpoint_computes_what_the_compvis_modules_compute(reference, tmp_path, monkeypatch):
    """Reference outputs come from CompVis' own UNetModel, Encoder/Decoder and VectorQuantizer2 (make_reference.py)."""
    write_lightning_checkpoint(tmp_path / "model.ckpt", state_dict(reference["shapes"]), monkeypatch)
    model = load_ldm(tmp_path / "model.ckpt", tiny_architecture(reference))
    side = reference["spec"]["unet"]["image_size"]
    x, t = _inputs("x", (2, 3, side, side)), torch.tensor(reference["t"])
    with torch.no_grad():
        if model.num_classes is None:
            eps = model.denoiser(x, t).sample
        else:
            eps = model.denoiser(x, t, torch.tensor(reference["labels"]))
        latent = model.autoencoder.encode(_inputs("image", (1, 3, 16, 16))).latents
        decoded = model.autoencoder.decode(_inputs("z", (1, 3, 8, 8)) * 2).sample
    for ours, key in ((eps, "eps"), (latent, "latent"), (decoded, "decoded")):
        expected = torch.tensor(reference[key]).reshape(ours.shape)
        torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)
    assert model.num_classes == (4 if reference is TINY else None)
    assert model.autoencoder.config.scaling_factor == 1.0


def test_guided_ddim_sampling_ends_where_latent_diffusions_own_sampler_does(tiny_checkpoint):
    """latent-diffusion's DDIMSampler, 4 steps, eta 0, guidance 3.0 against the null class (make_reference.py)."""
    model = load_ldm(tiny_checkpoint, TINY_ARCHITECTURE)
    x_t = _inputs("x_T", (2, 3, 8, 8))
    condition = class_condition(torch.tensor(TINY["labels"]), 3.0)
    with torch.no_grad():
        sampled = run_trajectory(ddim_trajectory(model.denoiser, model.scheduler, x_t, steps=4, condition=condition))
    torch.testing.assert_close(sampled, torch.tensor(TINY["sampled"]).reshape(sampled.shape), atol=1e-4, rtol=1e-4)


def test_the_schedule_is_latent_diffusions_ddim(tiny_checkpoint):
    scheduler = load_ldm(tiny_checkpoint, TINY_ARCHITECTURE).scheduler
    betas = ldm_betas().double()
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), torch.cumprod(1 - betas, 0), rtol=1e-6, atol=0)
    scheduler.set_timesteps(20)
    assert scheduler.timesteps.tolist() == list(range(951, 0, -50))  # ddim_timesteps = range(0, 1000, 50) + 1
    assert float(scheduler.final_alpha_cumprod) == pytest.approx(float(1 - betas[0]))  # alphas_cumprod[0]
    assert not scheduler.config.clip_sample
    # Without the buffers, the config's schedule gives the same betas.
    state = state_dict(TINY["shapes"])
    from_config = convert_ldm(state, TINY_ARCHITECTURE).scheduler
    torch.testing.assert_close(from_config.betas.double(), betas, rtol=1e-5, atol=0)


def _meta_state(name: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return {key: torch.empty(shape) for key, shape in REFERENCE[name]["shapes"].items()}


@pytest.mark.parametrize(("name", "architecture", "parameters", "layers"), [
    ("cin256_v2", CIN256_V2, 400.9e6, 265),  # QuantModel_lora's hard-coded total_count for the ImageNet model
    ("lsun_bedrooms", LSUN_BEDROOMS_VQ4, 274.1e6, 73),  # its comment's count for LSUN-Bedrooms
])
def test_the_papers_layouts_convert_completely_with_the_public_codes_quantized_layer_counts(
        name, architecture, parameters, layers):
    """Every tensor name and shape of the genuine modules finds its place (meta tensors: no memory)."""
    state = _meta_state(name)
    assert detect_architecture(state) is architecture
    model = convert_ldm(state)
    denoiser = model.denoiser
    assert sum(p.numel() for p in denoiser.parameters()) == pytest.approx(parameters, rel=2e-3)
    quantized = [key for key, module in denoiser.named_modules()
                 if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and not is_full_precision_name(key)
                 and key not in model.full_precision]  # quantize_model's selection
    assert len(quantized) == layers
    prefix = "unet." if architecture.n_classes else ""
    assert quantized[:3] == [f"{prefix}conv_in", f"{prefix}time_embedding.linear_1", f"{prefix}time_embedding.linear_2"]
    assert quantized[-1] == f"{prefix}conv_out"


def test_a_checkpoint_of_another_architecture_is_one_clear_error():
    state = state_dict(TINY["shapes"])
    with pytest.raises(CheckpointError, match="UNet does not fit the architecture cin256-v2"):
        convert_ldm(state, CIN256_V2)
    with pytest.raises(CheckpointError, match="no known architecture .* 32-channel UNet"):
        convert_ldm(state)
    with pytest.raises(CheckpointError, match="lsun_bedrooms-ldm-vq-4 is unconditional, but the checkpoint has"):
        convert_ldm(state, LSUN_BEDROOMS_VQ4)
    extra = {**state, "model.diffusion_model.extra.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"1 of the checkpoint's \d+ model.diffusion_model"):
        convert_ldm(extra, TINY_ARCHITECTURE)
    with pytest.raises(CheckpointError, match="not a latent diffusion checkpoint"):
        convert_ldm({"weight": torch.zeros(2)})


class _Payload:
    """Unpickling this would call print(); a weights-only load must refuse before that."""

    def __reduce__(self):
        return print, ("code ran",)


def test_unsafe_or_damaged_files_are_refused_without_running_them(tmp_path, capsys):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "x": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="builtins.print, which a weights-only load refuses"):
        load_state_dict(evil)
    assert "code ran" not in capsys.readouterr().out
    cut = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"a": torch.zeros(1000)}}, cut)
    cut.write_bytes(cut.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_state_dict(cut)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(CheckpointError):
        load_state_dict(plain)


@pytest.fixture
def denoiser():
    unet = UNet2DConditionModel(sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=6,
                                attention_head_dim=1, norm_num_groups=4)
    torch.manual_seed(0)
    return ClassConditionalUNet(unet, torch.nn.Embedding(4, 6)).eval()


def test_guidance_mixes_the_conditional_and_unconditional_predictions(denoiser):
    x, t, labels = torch.randn(3, 2, 8, 8), torch.tensor([5, 500, 900]), torch.tensor([0, 2, 1])
    with torch.no_grad():
        cond = denoiser(x, t, labels)
        uncond = denoiser(x, t, torch.full_like(labels, denoiser.null_class))
        guided = denoiser(x, t, labels, 3.0)
        per_sample = denoiser(x, t, labels, torch.tensor([1.0, 3.0, 0.0]))
    assert not torch.allclose(cond, uncond)
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(per_sample[0], cond[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(per_sample[2], uncond[2], atol=1e-5, rtol=1e-4)


def test_labels_are_balanced_for_evaluation_and_grouped_for_training():
    assert balanced_labels(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
    groups = random_class_groups(16, 1000, 4, torch.Generator().manual_seed(0))
    assert len(set(groups.tolist())) == 4 and all(len(set(groups[i:i + 4].tolist())) == 1 for i in range(0, 16, 4))
    with pytest.raises(ValueError, match="do not split"):
        random_class_groups(10, 1000, 4)


def test_conditions_travel_with_their_samples_through_sampling_and_calibration(denoiser):
    condition = class_condition(torch.tensor([0, 1, 2, 0]), 2.0)
    scheduler = ddim_scheduler(clip_sample=False)
    whole = ddim_sample(denoiser, scheduler, 4, steps=2, generator=torch.Generator().manual_seed(0), batch_size=4,
                        condition=condition)
    batched = ddim_sample(denoiser, scheduler, 4, steps=2, generator=torch.Generator().manual_seed(0), batch_size=3,
                          condition=condition)
    torch.testing.assert_close(whole, batched, atol=1e-5, rtol=1e-4)  # sliced per batch with its samples
    assert whole.abs().max() > 0
    calib = collect_calibration_inputs(denoiser, scheduler, torch.randn(4, 2, 8, 8), 2, condition=condition)
    assert all(batch.condition is condition for batch in calib)
    q = quantize_model(denoiser, 4, 8, 2)
    assert calibrate(q, calib) == [0, 1]
    assert not any(isinstance(m, torch.nn.Embedding) and "quant" in type(m).__name__.lower() for m in q.modules())
    with pytest.raises(ValueError, match="different conditions"):
        cat_conditions([condition, None])


def test_distillation_of_a_conditional_model_trains_through_the_guided_prediction(denoiser):
    scheduler = ddim_scheduler(clip_sample=False)
    generator = torch.Generator().manual_seed(0)
    condition = class_condition(torch.tensor([0, 1]), 1.5)
    calib = collect_calibration_inputs(denoiser, scheduler, torch.randn(2, 2, 8, 8), 2, condition=condition)
    q, omq = prepare_quantized(denoiser, "omq_trd", 2, 4, 2, calib, lora_rank=2, generator=generator)
    assert omq  # OMQ ran on the conditional calibration batch
    drawn = []

    def conditions(n, g):
        drawn.append(random_class_groups(n, denoiser.num_classes, 2, g))
        return class_condition(drawn[-1], 3.0)

    trainer = MPQDMTrainer(denoiser, q, scheduler, n_steps=2, trd=True)
    before = {name: layer.lora_B.weight.detach().clone() for name, layer in quant_layers(q) if layer.lora_B is not None}
    try:
        history = trainer.train(2, 4, (2, 8, 8), generator=generator, conditions=conditions)
    finally:
        trainer.close()
    assert len(drawn) == 2 and len(history) == 4 and all(np.isfinite(h["loss"]) for h in history)
    assert np.isfinite(history[1]["trd"])  # TRD's window of 2 steps closed
    changed = [name for name, layer in quant_layers(q) if name in before
               and not torch.equal(before[name], layer.lora_B.weight)]
    assert changed


def test_the_ema_weights_are_the_ones_converted_when_the_checkpoint_has_them():
    """LatentDiffusion with use_ema (LSUN-Bedrooms) keeps LitEma copies named without dots; sampling uses them."""
    state = state_dict(TINY_UNCOND["shapes"])
    unet_keys = [key for key in state if key.startswith("model.diffusion_model.")]
    assert len(unet_keys) > 100
    ema = {"model_ema." + "".join(key.split(".")[1:]): 2 * state[key] for key in unet_keys}
    state.update(ema, **{"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(7)})
    unet = convert_ldm(state, tiny_architecture(TINY_UNCOND)).denoiser
    torch.testing.assert_close(unet.conv_in.weight, 2 * state["model.diffusion_model.input_blocks.0.0.weight"])
    del state["model_ema.diffusion_modelout2weight"]
    with pytest.raises(CheckpointError, match="EMA weights lack 1 UNet tensors, e.g. conv_out.weight"):
        convert_ldm(state, tiny_architecture(TINY_UNCOND))
