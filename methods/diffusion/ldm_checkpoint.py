"""Latent diffusion checkpoints in CompVis' format (the paper's LDM-4 models), converted to diffusers modules.

The paper's models are latent-diffusion's LDM-4 ``cin256-v2`` (ImageNet, class-conditional,
``models/ldm/cin256-v2/model.ckpt``) and ``lsun_bedrooms-ldm-vq-4`` (unconditional), each a PyTorch
Lightning checkpoint whose ``state_dict`` holds

- ``model.diffusion_model.*``: the openaimodel ``UNetModel`` (eps on 3 x 64 x 64 latents); cin256-v2's
  attends to a 512-d context through spatial transformers, lsun_bedrooms' has openaimodel's own
  multi-head self-attention blocks (one ``qkv`` convolution, 32 channels per head);
- ``first_stage_model.*``: the VQ-f4 autoencoder (``encoder``, ``decoder``, ``quantize.embedding`` with
  8192 codes of size 3, ``quant_conv``, ``post_quant_conv``);
- ``cond_stage_model.embedding.weight`` (cin256-v2 only): the class embedding, 1001 x 512 (row 1000: no class);
- ``betas``, ``alphas_cumprod``, ...: the training noise schedule.

:func:`convert_ldm` maps them onto diffusers modules with diffusers' own converters of LDM
checkpoints (``diffusers.loaders.single_file_utils``), given the architecture in the original
config's shape (:class:`LDMArchitecture`; :func:`detect_architecture` picks a known one):

- class-conditional: :class:`diffusers.UNet2DConditionModel` and the class embedding, wrapped in
  :class:`~methods.diffusion.conditional.ClassConditionalUNet` (classifier-free guidance);
- unconditional: :class:`diffusers.UNet2DModel`; ours splits each attention block's ``qkv`` into
  ``to_q``/``to_k``/``to_v`` in openaimodel's legacy order (per head: q, k, v of ``C / heads``
  channels each) and renames ``norm``/``proj_out`` (diffusers' packaged converter handles only
  spatial transformers);
- the :class:`diffusers.VQModel` with its codebook, and the scheduler.

Every tensor of the UNet and the autoencoder must find its place and every parameter be filled
(a checkpoint of another architecture fails with the names that do not fit).

The sampler (latent-diffusion's DDIM) is diffusers' ``DDIMScheduler`` on the checkpoint's own betas
(else the config's: ``sqrt(beta)`` linear from 0.0015 to 0.0195, diffusers' ``"scaled_linear"``), with
``steps_offset = 1`` (timesteps 1, 51, ..., 951 for 20 steps), the last step landing on
``alphas_cumprod[0]`` (``set_alpha_to_one = False``) and no clipping (latents are not in [-1, 1]).
Latents are decoded by the VQ decoder after quantization to the codebook, as ``decode_first_stage``
does; neither model scales its latents (``scale_factor`` 1.0, else the checkpoint's buffer).

Loading never runs code from the file: ``torch.load(weights_only=True)``. Lightning checkpoints of
that era pickle the callback classes themselves as dictionary keys
(``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``); such Lightning names, and only
those, are admitted as inert placeholders (they are never called). Any other global is refused.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel, UNet2DModel, VQModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    create_unet_diffusers_config_from_ldm,
    create_vae_diffusers_config_from_ldm,
)
from torch import nn

from methods.diffusion.conditional import ClassConditionalUNet
from methods.diffusion.models import ddim_scheduler

UNET_PREFIX = "model.diffusion_model."
FIRST_STAGE_PREFIX = "first_stage_model."
CLASS_EMBEDDING_KEY = "cond_stage_model.embedding.weight"
LIGHTNING_MODULES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")
# diffusers' names of the projections of an openaimodel AttentionBlock (Conv1d there).
LEGACY_ATTENTION = (".to_q", ".to_k", ".to_v", ".to_out.0")


class CheckpointError(ValueError):
    """The file is not a loadable latent diffusion checkpoint of the expected architecture."""


@dataclass(frozen=True)
class LDMArchitecture:
    """A latent diffusion model as its original config describes it.

    Attributes
    ----------
    name : str
        The config's name (``"cin256-v2"``), shown in records.
    unet : dict
        ``unet_config.params`` of ``ldm.modules.diffusionmodules.openaimodel.UNetModel``.
    first_stage : dict
        ``first_stage_config.params`` of the VQ autoencoder: ``embed_dim``, ``n_embed``, ``ddconfig``.
    n_classes : int or None
        Rows of the class embedding, the null class included (1001 on ImageNet); None: unconditional.
    linear_start, linear_end : float
        The ``"linear"`` schedule of latent-diffusion: ``sqrt(beta)`` linear between their square roots.
    timesteps : int
        Training steps T.
    scale_factor : float
        Latent scale of the first stage (LatentDiffusion's default 1.0).
    """

    name: str
    unet: dict = field(repr=False)
    first_stage: dict = field(repr=False)
    n_classes: int | None = None
    linear_start: float = 0.0015
    linear_end: float = 0.0195
    timesteps: int = 1000
    scale_factor: float = 1.0

    def original_config(self) -> dict:
        """The nested ``model.params`` dictionary diffusers' converters read."""
        return {"model": {"params": {
            "linear_start": self.linear_start, "linear_end": self.linear_end, "timesteps": self.timesteps,
            "scale_factor": self.scale_factor, "unet_config": {"params": self.unet},
            "first_stage_config": {"params": self.first_stage}}}}

    @property
    def image_size(self) -> int:
        """Side of the decoded images in pixels."""
        return int(self.first_stage["ddconfig"]["resolution"])


VQ_F4 = dict(embed_dim=3, n_embed=8192, ddconfig=dict(
    double_z=False, z_channels=3, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4], num_res_blocks=2,
    attn_resolutions=[], dropout=0.0))
# configs/latent-diffusion/cin256-v2.yaml and lsun_bedrooms-ldm-vq-4.yaml (docs/papers/mpqdm.md).
CIN256_V2 = LDMArchitecture(
    "cin256-v2",
    unet=dict(image_size=64, in_channels=3, out_channels=3, model_channels=192, attention_resolutions=[8, 4, 2],
              num_res_blocks=2, channel_mult=[1, 2, 3, 5], num_heads=1, use_spatial_transformer=True,
              transformer_depth=1, context_dim=512),
    first_stage=VQ_F4,
    n_classes=1001,
)
LSUN_BEDROOMS_VQ4 = LDMArchitecture(
    "lsun_bedrooms-ldm-vq-4",
    unet=dict(image_size=64, in_channels=3, out_channels=3, model_channels=224, attention_resolutions=[8, 4, 2],
              num_res_blocks=2, channel_mult=[1, 2, 3, 4], num_head_channels=32),
    first_stage=VQ_F4,
)
ARCHITECTURES = {architecture.name: architecture for architecture in (CIN256_V2, LSUN_BEDROOMS_VQ4)}


@dataclass
class LatentDiffusionModel:
    """The converted parts: the denoiser, its autoencoder and its DDIM sampler.

    ``denoiser`` is a :class:`~methods.diffusion.conditional.ClassConditionalUNet` (called with class
    labels and a guidance scale) when ``num_classes`` is set, else a :class:`diffusers.UNet2DModel`.
    """

    denoiser: nn.Module
    autoencoder: VQModel
    scheduler: DDIMScheduler
    architecture: LDMArchitecture
    num_classes: int | None = None
    full_precision: tuple[str, ...] = ()
    """Denoiser layers that are ``Conv1d`` in the original (openaimodel's attention ``qkv`` and
    ``proj_out``), which the public code's quantizer (``Conv2d``/``Linear`` only) leaves in full precision."""


class _LightningMetadata:
    """Stands in for a Lightning class named in a checkpoint's training metadata; never called."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: a Lightning ``.ckpt`` (its ``state_dict``), a plain
    ``torch.save`` state dict, or ``.safetensors``; CheckpointError if it cannot be read safely."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from None
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except ValueError:  # not a zip checkpoint: torch.load's weights-only unpickler still guards it
        names = []
    except (RuntimeError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({error})") from None
    refused = [name for name in names if not name.startswith(LIGHTNING_MODULES)]
    if refused:
        raise CheckpointError(f"{path} names {', '.join(refused[:3])}, which a weights-only load refuses "
                              "to run; save its state_dict alone (or as safetensors) and give that")
    try:
        with torch.serialization.safe_globals([(_LightningMetadata, name) for name in names]):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({str(error).splitlines()[0]})") from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors")
    return state


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str, architecture: LDMArchitecture) -> None:
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise CheckpointError(f"the checkpoint's {what} does not fit the architecture {architecture.name}: "
                              f"{' '.join(str(error).split())[:600]}") from None


def detect_architecture(state: dict[str, torch.Tensor]) -> LDMArchitecture:
    """The known architecture (:data:`ARCHITECTURES`) whose UNet width and conditioning fit ``state``."""
    conv_in = state.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is None:
        raise CheckpointError(f"not a latent diffusion checkpoint: it has no {UNET_PREFIX}input_blocks.0.0.weight")
    conditional = CLASS_EMBEDDING_KEY in state
    for architecture in ARCHITECTURES.values():
        width = architecture.unet["model_channels"]
        if width == conv_in.shape[0] and (architecture.n_classes is not None) == conditional:
            return architecture
    kind = "class-conditional" if conditional else "unconditional"
    raise CheckpointError(f"no known architecture ({', '.join(ARCHITECTURES)}) is a {kind} LDM with a "
                          f"{conv_in.shape[0]}-channel UNet; describe it as an LDMArchitecture")


def convert_ldm(state: dict[str, torch.Tensor], architecture: LDMArchitecture | None = None) -> LatentDiffusionModel:
    """The diffusers modules of a CompVis LDM ``state`` dict (see the module docstring).

    ``architecture`` defaults to :func:`detect_architecture`. The modules are built on the meta device
    and take the checkpoint's tensors (``assign=True``), so a 400 M-parameter UNet is not initialised
    only to be overwritten. All modules are in eval mode.
    """
    architecture = architecture or detect_architecture(state)
    if not any(key.startswith(UNET_PREFIX) for key in state):
        raise CheckpointError(f"not a latent diffusion checkpoint: it has no {UNET_PREFIX}* tensors")
    if (architecture.n_classes is not None) != (CLASS_EMBEDDING_KEY in state):
        kind = "class-conditional" if architecture.n_classes is not None else "unconditional"
        raise CheckpointError(f"{architecture.name} is {kind}, but the checkpoint "
                              f"{'lacks' if architecture.n_classes is not None else 'has'} {CLASS_EMBEDDING_KEY}")
    config = architecture.original_config()
    if architecture.n_classes is not None:
        # diffusers infers an image size from the checkpoint's model type; the architecture states it.
        unet_config = create_unet_diffusers_config_from_ldm(config, state)
        unet_config["sample_size"] = architecture.unet["image_size"]
    else:
        unet_config = _unconditional_unet_config(architecture.unet)
    ema = sum(key.startswith("model_ema.") for key in state) > 100  # LitEma copies: sampling uses them
    unet_state = convert_ldm_unet_checkpoint(state, unet_config, extract_ema=ema)
    vq_config = create_vae_diffusers_config_from_ldm(config, state, scaling_factor=_scale_factor(state, architecture))
    vq_config["sample_size"] = architecture.image_size
    vq_state = convert_ldm_vae_checkpoint(state, vq_config)
    codebook = FIRST_STAGE_PREFIX + "quantize.embedding.weight"
    if codebook not in state:
        raise CheckpointError(f"the first stage has no codebook ({codebook}): not a VQ autoencoder")
    vq_state["quantize.embedding.weight"] = state[codebook]
    absent = [key for key, value in unet_state.items() if value is None]
    if absent:
        raise CheckpointError(f"the checkpoint's EMA weights lack {len(absent)} UNet tensors, e.g. {absent[0]}")
    for prefix, converted in ((UNET_PREFIX, unet_state), (FIRST_STAGE_PREFIX, vq_state)):
        count = sum(key.startswith(prefix) for key in state)
        if len(converted) != count:
            raise CheckpointError(f"{count - len(converted)} of the checkpoint's {count} {prefix}* tensors have no "
                                  f"place in the architecture {architecture.name}")
    with torch.device("meta"):
        if architecture.n_classes is not None:
            unet = UNet2DConditionModel(**unet_config)
        else:
            unet = UNet2DModel(**unet_config)
            unet_state = _split_legacy_attention(unet_state, architecture.unet["num_head_channels"])
        autoencoder = VQModel(num_vq_embeddings=architecture.first_stage["n_embed"],
                              vq_embed_dim=architecture.first_stage["embed_dim"], **vq_config)
    _load_strict(unet, unet_state, "UNet", architecture)
    _load_strict(autoencoder, vq_state, "VQ autoencoder", architecture)
    if architecture.n_classes is None:
        denoiser, num_classes = unet, None
        full_precision = tuple(name for name, module in unet.named_modules()
                               if isinstance(module, nn.Linear) and name.endswith(LEGACY_ATTENTION))
    else:
        denoiser, full_precision = _class_conditional(unet, state, architecture), ()
        num_classes = denoiser.num_classes
    return LatentDiffusionModel(denoiser.eval(), autoencoder.eval(), _scheduler(state, architecture), architecture,
                                num_classes, full_precision)


def _class_conditional(unet: UNet2DConditionModel, state: dict[str, torch.Tensor],
                       architecture: LDMArchitecture) -> ClassConditionalUNet:
    weight = state[CLASS_EMBEDDING_KEY]
    if weight.shape[0] != architecture.n_classes:
        raise CheckpointError(f"the class embedding has {weight.shape[0]} rows, expected "
                              f"{architecture.n_classes} (the classes and the null class)")
    with torch.device("meta"):
        embedding = nn.Embedding(*weight.shape)
    _load_strict(embedding, {"weight": weight}, "class embedding", architecture)
    return ClassConditionalUNet(unet, embedding)


def _unconditional_unet_config(params: dict) -> dict:
    """The :class:`diffusers.UNet2DModel` of an openaimodel UNet without a context (``attention_resolutions``
    are downsampling factors: level ``i`` attends where ``2**i`` is listed)."""
    unsupported = [key for key in ("use_spatial_transformer", "use_scale_shift_norm", "resblock_updown")
                   if params.get(key)]
    if unsupported or params.get("num_head_channels", -1) == -1:
        raise CheckpointError("unconditional UNets are converted with a fixed number of channels per head "
                              f"(num_head_channels), without {', '.join(unsupported) or 'per-level head counts'}")
    widths = [params["model_channels"] * mult for mult in params["channel_mult"]]
    attends = [2**level in params["attention_resolutions"] for level in range(len(widths))]
    return dict(sample_size=params["image_size"], in_channels=params["in_channels"],
                out_channels=params["out_channels"], block_out_channels=widths,
                layers_per_block=params["num_res_blocks"], attention_head_dim=params["num_head_channels"],
                down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attends],
                up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)])


def _split_legacy_attention(state: dict[str, torch.Tensor], head_channels: int) -> dict[str, torch.Tensor]:
    """openaimodel's ``AttentionBlock`` tensors as diffusers' ``Attention``.

    ``qkv`` is a 1x1 convolution to 3C channels that QKVAttentionLegacy reads per head ``h`` as
    rows ``[h*3c, h*3c + c)`` (q), the next c (k) and the next c (v), ``c = head_channels``; diffusers'
    ``to_q``/``to_k``/``to_v`` hold head ``h`` in rows ``[h*c, (h+1)*c)``.
    """
    result = {}
    for key, value in state.items():
        stem, _, leaf = key.rpartition(".")
        owner, _, name = stem.rpartition(".")
        if ".attentions." not in key or name not in ("qkv", "norm", "proj_out"):
            result[key] = value
        elif name == "qkv":
            channels = value.shape[0] // 3
            heads = value.reshape(channels // head_channels, 3, head_channels, *value.shape[1:])
            for index, target in enumerate(("to_q", "to_k", "to_v")):
                part = heads[:, index].reshape(channels, *value.shape[1:])
                result[f"{owner}.{target}.{leaf}"] = part.reshape(channels, -1) if leaf == "weight" else part
        elif name == "norm":
            result[f"{owner}.group_norm.{leaf}"] = value
        else:
            result[f"{owner}.to_out.0.{leaf}"] = value.reshape(value.shape[0], -1) if leaf == "weight" else value
    return result


def _scale_factor(state: dict[str, torch.Tensor], architecture: LDMArchitecture) -> float:
    """The checkpoint's ``scale_factor`` buffer (models trained with ``scale_by_std``), else the config's."""
    buffer = state.get("scale_factor")
    return architecture.scale_factor if buffer is None or buffer.is_meta else float(buffer)


def _scheduler(state: dict[str, torch.Tensor], architecture: LDMArchitecture) -> DDIMScheduler:
    betas = state.get("betas")
    settings = dict(clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    if betas is not None and not betas.is_meta:
        return ddim_scheduler(len(betas), trained_betas=betas.double().numpy(), **settings)
    return ddim_scheduler(architecture.timesteps, "scaled_linear", architecture.linear_start, architecture.linear_end,
                          **settings)


def load_ldm(path: str | Path, architecture: LDMArchitecture | None = None) -> LatentDiffusionModel:
    """:func:`load_state_dict` then :func:`convert_ldm`."""
    return convert_ldm(load_state_dict(path), architecture)
