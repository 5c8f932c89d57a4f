"""Stable Diffusion for MPQ-DM's text-to-image rows: the model, its prompts, and the CLIP score of its samples.

A unit quantizes the UNet of a Stable Diffusion pipeline (diffusers layout: ``unet/``, ``vae/``,
``scheduler/``, ``tokenizer/``, ``text_encoder/``) at one bit setting with one method of
:mod:`reproduce.mpqdm.runs` (the same calibration, OMQ and distillation as the LDM rows), samples one
image per prompt by DDIM with classifier-free guidance, decodes it with the pipeline's autoencoder and
scores it with CLIP: ``100 * max(cos(E_image, E_prompt), 0)`` per image, averaged
(:func:`methods.diffusion.metrics.clip_score`).

The prompt set plays the part of the class set of a class-conditional model
(:class:`~reproduce.mpqdm.runs.DiffusionModel` with a ``conditioner``): calibration and distillation
trajectories draw random prompts of it, evaluation takes each prompt once, in order, so the methods of
one seed sample the same prompts from the same noise.

- ``full``: CompVis/stable-diffusion-v1-4 (a hub id, through diffusers' loader and cache, or a local
  folder of the same layout) at 512 x 512; its CLIP text encoder and the CLIP score model
  (``clip_model``, default openai/clip-vit-large-patch14, torchmetrics' default) through the
  ``transformers`` package; ``prompt_count`` captions drawn (fixed seed) from the COCO 2014 validation
  captions (``prompts``: ``captions_val2014.json`` of COCO's annotations_trainval2014.zip, or a text
  file of one prompt per line). What is missing of these is named in one message
  (:func:`missing_requirements`) before anything is loaded.
- ``smoke``: the same path on a tiny randomly initialised pipeline written in the diffusers layout
  (a cross-attention UNet on 4 x 8 x 8 latents, a KL autoencoder to 16 x 16 images) and loaded back
  by the same loader, with small randomly initialised stand-ins for the text encoder and for CLIP
  (:class:`ByteTextEncoder`, :class:`TinyClip`): it checks the code path, its scores mean nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.diffusion import PromptConditionalUNet, balanced_labels, clip_score, ddim_sample, prompt_condition
from methods.diffusion import temporal_model_fn as quantized_model_fn
from reproduce.diffusion_quality import torch_generator
from reproduce.harness.artifact import Context, Outcome, Unit
from reproduce.harness.device import torch_threads
from reproduce.harness.errors import DataError
from reproduce.harness.paths import cache_dir, config_key
from reproduce.harness.records import metric
from reproduce.mpqdm.runs import DiffusionModel, parse_bits, quantize, sample_grid

# CLIP's image preprocessing (the OpenAI CLIP models'): bicubic resize of the short side, centre crop, normalise.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
COCO_CAPTIONS = ("captions_val2014.json from COCO's annotations_trainval2014.zip "
                 "(http://images.cocodataset.org/annotations/annotations_trainval2014.zip)")
# Captions of the smoke scale (written for this suite in the style of COCO's).
SMOKE_PROMPTS = ("a red bus parked beside a brick building", "two dogs running on a sandy beach",
                 "a bowl of oranges on a wooden table", "a man riding a bicycle down a city street",
                 "a small boat on a calm lake at sunset", "a cat sleeping on a blue sofa",
                 "a plate with a sandwich and french fries", "a train crossing a bridge over a river")

PromptEncoder = Callable[[list[str]], torch.Tensor]  # prompts -> text-encoder states (N, L, d)
ClipEmbedder = Callable[[torch.Tensor, list[str]], tuple[torch.Tensor, torch.Tensor]]  # -> (N, e), (N, e)


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------

def read_prompts(path: str | Path) -> list[str]:
    """Every caption of a COCO captions file (``{"annotations": [{"caption": ...}]}``) or the non-empty lines of a
    text file, stripped, in file order."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            captions = [a["caption"] for a in json.loads(path.read_text(encoding="utf-8"))["annotations"]]
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise DataError(f"{path} is not a COCO captions file ({error!r}); give {COCO_CAPTIONS}") from None
    else:
        captions = path.read_text(encoding="utf-8").splitlines()
    prompts = [" ".join(c.split()) for c in captions if c.strip()]
    if not prompts:
        raise DataError(f"{path} holds no prompts")
    return prompts


def prompt_set(config: dict) -> list[str]:
    """The scale's prompts: ``prompt_count`` drawn without replacement (seed 0, the same for every unit) from
    ``config["prompts"]``, or the first of the smoke captions (``builtin_prompts``)."""
    if config.get("builtin_prompts"):
        return list(SMOKE_PROMPTS[:config["prompt_count"]])
    prompts = read_prompts(config["prompts"])
    count = min(config["prompt_count"], len(prompts))
    return [prompts[i] for i in np.random.default_rng(0).choice(len(prompts), count, replace=False)]


# ---------------------------------------------------------------------------------------------
# What the full scale needs
# ---------------------------------------------------------------------------------------------

def _cached_locally(source: str) -> bool:
    """Whether ``source`` is a local pipeline folder, or a hub id whose UNet config is in the local cache."""
    if Path(source).is_dir():
        return (Path(source) / "unet" / "config.json").is_file()
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(source, "unet/config.json"), str)


def missing_requirements(config: dict) -> list[str]:
    """What the config's text encoder and CLIP need that this environment lacks, one phrase each (empty: none).

    Checked without the network: the ``transformers`` package (Stable Diffusion's CLIP text encoder and the
    CLIP score model), the prompts file, and the pipeline's weights (a local folder, or a hub id already in
    the local cache; with ``download`` a hub id is fetched when the rest is there).
    """
    missing = []
    if config["text_encoder"] == "clip" and importlib.util.find_spec("transformers") is None:
        missing.append(f"the transformers package (for Stable Diffusion's CLIP text encoder and the CLIP score "
                       f"model {config['clip_model']}), which is not installed in this environment")
    prompts = config.get("prompts")
    if not config.get("builtin_prompts") and not (prompts and Path(prompts).is_file()):
        missing.append(f"the prompts file {prompts} ({COCO_CAPTIONS})" if prompts else
                       f"the prompts: --prompts FILE, {COCO_CAPTIONS}")
    if config.get("pretrained") and not _cached_locally(config["pretrained"]) and \
            (missing or not config.get("download")):
        missing.append(f"the weights of {config['pretrained']} (not in the local Hugging Face cache"
                       f"{'' if config.get('download') else ' and download is off'}; or give --pretrained DIR, a "
                       "folder in the diffusers layout)")
    return missing


# ---------------------------------------------------------------------------------------------
# The smoke scale's tiny pipeline and stand-ins
# ---------------------------------------------------------------------------------------------

class ByteTextEncoder(nn.Module):
    """A tiny text encoder: UTF-8 bytes (padded or cut to ``length``) -> embeddings + positions -> one
    transformer layer. States (N, length, width). A randomly initialised stand-in for CLIP's text encoder."""

    def __init__(self, width: int, length: int = 16):
        super().__init__()
        self.length = length
        self.tokens = nn.Embedding(257, width)  # 256 byte values and padding
        self.positions = nn.Parameter(torch.randn(length, width) * 0.02)
        self.layer = nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=2 * width, batch_first=True)

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """(N, length) long: each prompt's bytes, then padding (256)."""
        ids = torch.full((len(prompts), self.length), 256, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            encoded = list(prompt.encode("utf-8"))[:self.length]
            ids[row, :len(encoded)] = torch.tensor(encoded, dtype=torch.long)
        return ids

    def forward(self, prompts: list[str]) -> torch.Tensor:
        ids = self.token_ids(prompts).to(self.positions.device)
        return self.layer(self.tokens(ids) + self.positions)


class TinyClip(nn.Module):
    """A randomly initialised two-tower stand-in for CLIP: images (N, 3, H, W) in [-1, 1] -> (N, e) by two
    strided convolutions and pooling; prompts -> (N, e) by a :class:`ByteTextEncoder`, mean over positions."""

    def __init__(self, embed: int = 16):
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.GELU(),
                                   nn.Conv2d(8, embed, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.text = ByteTextEncoder(embed)

    def forward(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(images), self.text(prompts).mean(dim=1)


def _seeded(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def tiny_pipeline_folder(config: dict) -> Path:
    """A tiny randomly initialised (seed 0) Stable Diffusion pipeline in the diffusers layout (``unet``, ``vae``,
    ``scheduler``), written once into the cache (atomically) and shared by the units of a run."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    folder = cache_dir("mpqdm") / f"tiny-sd-{config_key(config, ('tiny_pipeline',))}"
    if (folder / "unet" / "config.json").is_file():
        return folder
    spec = config["tiny_pipeline"]
    parts = {
        "unet": _seeded(lambda: UNet2DConditionModel(
            sample_size=spec["latent_side"], in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=tuple(spec["channels"]), norm_num_groups=4, attention_head_dim=4,
            cross_attention_dim=spec["text_width"], down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))),
        "vae": _seeded(lambda: AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=tuple(spec["channels"]),
            norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2), seed=1),
        # Stable Diffusion v1's schedule.
        "scheduler": DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   clip_sample=False, set_alpha_to_one=False),
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for name, part in parts.items():
            part.save_pretrained(staging / name)
        os.replace(staging, folder)
    except OSError:
        if not (folder / "unet" / "config.json").is_file():  # not another worker's folder either
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def _clip_text_encoder(source: str, device: torch.device) -> PromptEncoder:
    """Stable Diffusion's own tokenizer and CLIP text encoder (``transformers``): the last hidden states of prompts
    padded to the tokenizer's 77 tokens, (N, 77, 768) for v1.4."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer")
    encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder").to(device).eval()

    @torch.no_grad()
    def encode(prompts: list[str]) -> torch.Tensor:
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        return encoder(ids.to(device))[0]

    return encode


def _clip_embedder(name: str, device: torch.device) -> ClipEmbedder:
    """The CLIP model ``name`` (``transformers``): image and caption embeddings, the images preprocessed as CLIP's
    (bicubic resize of the short side to the model's input size, centre crop, CLIP's mean and std)."""
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(name).to(device).eval()
    tokenizer = CLIPTokenizer.from_pretrained(name)
    side = model.config.vision_config.image_size
    mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def embed(images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = images.to(device).add(1).div(2).clamp(0, 1)
        scale = side / min(pixels.shape[-2:])
        size = (max(side, round(pixels.shape[-2] * scale)), max(side, round(pixels.shape[-1] * scale)))
        pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
        top, left = (size[0] - side) // 2, (size[1] - side) // 2
        pixels = (pixels[..., top:top + side, left:left + side] - mean) / std
        text = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(device)
        return model.get_image_features(pixel_values=pixels), model.get_text_features(**text)

    return embed


def load_pipeline(config: dict, device: torch.device) -> tuple[DiffusionModel, ClipEmbedder, list[str]]:
    """The scale's Stable Diffusion as a prompt-conditional :class:`DiffusionModel` (its K classes are the
    prompts), the CLIP embedder that scores it, and the prompts. DataError naming what is missing."""
    missing = missing_requirements(config)
    if missing:
        raise DataError("Stable Diffusion needs " + "; ".join(missing))
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    source = config.get("pretrained") or str(tiny_pipeline_folder(config))
    offline = not config.get("download")
    try:
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", local_files_only=offline)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", local_files_only=offline)
        scheduler = DDIMScheduler.from_pretrained(source, subfolder="scheduler", local_files_only=offline)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot load the Stable Diffusion pipeline {source!r} ({error}); give a local folder in the "
                        "diffusers layout (unet/, vae/, scheduler/, tokenizer/, text_encoder/) or go online") from None
    if config["text_encoder"] == "clip":
        encode, embed = _clip_text_encoder(source, device), _clip_embedder(config["clip_model"], device)
    else:
        width = unet.config.cross_attention_dim
        text_model = _seeded(lambda: ByteTextEncoder(width), seed=2).to(device)
        clip_model = _seeded(TinyClip, seed=3).to(device)
        encode = torch.no_grad()(text_model)
        embed = torch.no_grad()(clip_model)
    prompts = prompt_set(config)
    null = encode([""])

    def conditioner(labels: torch.Tensor, guidance_scale: float):
        return prompt_condition(encode([prompts[int(i)] for i in labels]), null, guidance_scale)

    denoiser = PromptConditionalUNet(unet).to(device).eval()
    source_info = {"source": source, "decoder": type(vae).__name__, "text_encoder": config["text_encoder"],
                   "prompts": len(prompts)}
    model = DiffusionModel(denoiser, scheduler, vae.to(device).eval(), source_info, num_classes=len(prompts),
                           conditioner=conditioner)
    return model, embed, prompts


# ---------------------------------------------------------------------------------------------
# One unit
# ---------------------------------------------------------------------------------------------

def run_text_to_image_unit(unit: Unit, ctx: Context) -> Outcome:
    """Quantize Stable Diffusion's UNet with one (bit setting, method), sample one image per prompt, CLIP-score it."""
    with torch_threads(ctx.device, ctx.config.get("cpu_threads")):
        return _run(unit, ctx)


def _run(unit: Unit, ctx: Context) -> Outcome:
    config, method, seed = ctx.config, unit.params["method"], unit.params.get("seed", 0)
    w_bits, a_bits = parse_bits(unit.params["bits"])
    device = torch.device(ctx.device.tag if ctx.device.kind == "cuda" else "cpu")
    fp, embed, prompts = load_pipeline(config, device)
    # Common random numbers, as in the LDM rows: the methods of a seed share calibration, distillation and noise.
    generator = torch_generator(ctx.rng(f"quantize-{unit.params['bits']}-s{seed}"))
    model, _, history = quantize(method, fp, w_bits, a_bits, config, generator)
    evaluation = torch_generator(ctx.rng(f"evaluation-s{seed}"))
    labels = balanced_labels(len(prompts), len(prompts))
    latents = ddim_sample(fp.unet, fp.scheduler, len(prompts), steps=config["sample_steps"], eta=0.0,
                          generator=evaluation, batch_size=config["sample_batch"],
                          model_fn=None if method == "fp" else quantized_model_fn(model),
                          condition=fp.condition(lambda k: labels, config["guidance_sample"]))
    images = fp.to_pixels(latents, config["sample_batch"])
    batch = config["sample_batch"]
    scores = torch.cat([clip_score(*embed(images[i:i + batch], prompts[i:i + batch]))
                        for i in range(0, len(prompts), batch)]).cpu()
    return Outcome(metrics={"clip_score": metric(float(scores.mean()), "CLIP score")}, data={
        "model": fp.source, "clip_model": config["clip_model"] if config["text_encoder"] == "clip" else
        "randomly initialised stand-in (smoke: not CLIP)", "per_prompt": [round(float(s), 3) for s in scores],
        "distill_loss": [round(h["loss"], 4) for h in history[::max(1, len(history) // 50)]],
        "sample_grid": sample_grid(images)})
