"""Class-conditional latent diffusion checkpoints in CompVis' format, converted to diffusers modules.

The paper's ImageNet model is latent-diffusion's LDM-4 ``cin256-v2`` (``models/ldm/cin256-v2/model.ckpt``,
a PyTorch Lightning checkpoint). Its ``state_dict`` holds

- ``model.diffusion_model.*``: the openaimodel ``UNetModel`` (eps on 3 x 64 x 64 latents, cross-attention
  on a 512-d context);
- ``first_stage_model.*``: the VQ-f4 autoencoder (``encoder``, ``decoder``, ``quantize.embedding`` with
  8192 codes of size 3, ``quant_conv``, ``post_quant_conv``);
- ``cond_stage_model.embedding.weight``: the class embedding, 1001 x 512 (row 1000: no class);
- ``betas``, ``alphas_cumprod``, ...: the training noise schedule.

:func:`convert_class_conditional_ldm` maps them onto :class:`diffusers.UNet2DConditionModel`,
:class:`diffusers.VQModel` and :class:`~methods.diffusion.conditional.ClassConditionalUNet`, with
diffusers' own converters of LDM checkpoints (``diffusers.loaders.single_file_utils``) given the
architecture in the original config's shape (:class:`LDMArchitecture`). Ours adds the VQ codebook,
the class embedding and the scheduler, and checks that every tensor of the three parts is used and
every parameter filled (a checkpoint of another architecture fails with the names that do not fit).

The sampler (latent-diffusion's DDIM) is diffusers' ``DDIMScheduler`` on the checkpoint's own betas
(else the config's: ``sqrt(beta)`` linear from 0.0015 to 0.0195, diffusers' ``"scaled_linear"``), with
``steps_offset = 1`` (timesteps 1, 51, ..., 951 for 20 steps), the last step landing on
``alphas_cumprod[0]`` (``set_alpha_to_one = False``) and no clipping (latents are not in [-1, 1]).
Latents are decoded by the VQ decoder after quantization to the codebook, as ``decode_first_stage``
does; cin256-v2 has no latent scale factor (1.0).

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
from diffusers import DDIMScheduler, UNet2DConditionModel, VQModel
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


class CheckpointError(ValueError):
    """The file is not a loadable latent diffusion checkpoint of the expected architecture."""


@dataclass(frozen=True)
class LDMArchitecture:
    """A class-conditional LDM as its original config describes it.

    Attributes
    ----------
    unet : dict
        ``unet_config.params`` of ``ldm.modules.diffusionmodules.openaimodel.UNetModel``.
    first_stage : dict
        ``first_stage_config.params`` of the VQ autoencoder: ``embed_dim``, ``n_embed``, ``ddconfig``.
    n_classes : int
        Rows of the class embedding, the null class included (1001 on ImageNet).
    linear_start, linear_end : float
        The ``"linear"`` schedule of latent-diffusion: ``sqrt(beta)`` linear between their square roots.
    timesteps : int
        Training steps T.
    scale_factor : float
        Latent scale of the first stage (LatentDiffusion's default 1.0).
    """

    unet: dict = field(repr=False)
    first_stage: dict = field(repr=False)
    n_classes: int
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


# configs/latent-diffusion/cin256-v2.yaml (mpqdm.md section 4).
CIN256_V2 = LDMArchitecture(
    unet=dict(image_size=64, in_channels=3, out_channels=3, model_channels=192, attention_resolutions=[8, 4, 2],
              num_res_blocks=2, channel_mult=[1, 2, 3, 5], num_heads=1, use_spatial_transformer=True,
              transformer_depth=1, context_dim=512),
    first_stage=dict(embed_dim=3, n_embed=8192, ddconfig=dict(
        double_z=False, z_channels=3, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4],
        num_res_blocks=2, attn_resolutions=[], dropout=0.0)),
    n_classes=1001,
)


@dataclass
class LatentDiffusionModel:
    """The converted parts: the guided denoiser, its autoencoder and its DDIM sampler."""

    denoiser: ClassConditionalUNet
    vqvae: VQModel
    scheduler: DDIMScheduler


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


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise CheckpointError(f"the checkpoint's {what} does not fit the expected architecture: "
                              f"{' '.join(str(error).split())[:600]}") from None


def convert_class_conditional_ldm(state: dict[str, torch.Tensor],
                                  architecture: LDMArchitecture = CIN256_V2) -> LatentDiffusionModel:
    """The diffusers modules of a CompVis class-conditional LDM ``state`` dict (see the module docstring).

    The modules are built on the meta device and take the checkpoint's tensors (``assign=True``), so
    a 400 M-parameter UNet is not initialised only to be overwritten. All modules are in eval mode.
    """
    config = architecture.original_config()
    missing = [key for key in (CLASS_EMBEDDING_KEY,) if key not in state]
    if missing or not any(key.startswith(UNET_PREFIX) for key in state):
        raise CheckpointError("not a class-conditional latent diffusion checkpoint: it has no "
                              f"{UNET_PREFIX}* or {CLASS_EMBEDDING_KEY} tensors")
    ema = sum(key.startswith("model_ema.") for key in state) > 100
    # diffusers infers an image size from the checkpoint's model type; the architecture states it.
    unet_config = create_unet_diffusers_config_from_ldm(config, state)
    unet_config["sample_size"] = architecture.unet["image_size"]
    unet_state = convert_ldm_unet_checkpoint(state, unet_config, extract_ema=ema)

    vq_config = create_vae_diffusers_config_from_ldm(config, state, scaling_factor=architecture.scale_factor)
    vq_config["sample_size"] = architecture.image_size
    vq_state = convert_ldm_vae_checkpoint(state, vq_config)
    codebook = FIRST_STAGE_PREFIX + "quantize.embedding.weight"
    if codebook not in state:
        raise CheckpointError(f"the first stage has no codebook ({codebook}): not a VQ autoencoder")
    vq_state["quantize.embedding.weight"] = state[codebook]
    for prefix, converted in ((UNET_PREFIX, unet_state), (FIRST_STAGE_PREFIX, vq_state)):
        count = sum(key.startswith(prefix) for key in state)
        if len(converted) != count and not (ema and prefix == UNET_PREFIX):
            raise CheckpointError(f"{count - len(converted)} of the checkpoint's {count} {prefix}* tensors have no "
                                  "place in the expected architecture")

    embedding_weight = state[CLASS_EMBEDDING_KEY]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
        vqvae = VQModel(num_vq_embeddings=architecture.first_stage["n_embed"],
                        vq_embed_dim=architecture.first_stage["embed_dim"], **vq_config)
        embedding = nn.Embedding(*embedding_weight.shape)
    _load_strict(unet, unet_state, "UNet")
    _load_strict(vqvae, vq_state, "VQ autoencoder")
    if embedding_weight.shape[0] != architecture.n_classes:
        raise CheckpointError(f"the class embedding has {embedding_weight.shape[0]} rows, expected "
                              f"{architecture.n_classes} (the classes and the null class)")
    _load_strict(embedding, {"weight": embedding_weight}, "class embedding")
    denoiser = ClassConditionalUNet(unet, embedding).eval()
    return LatentDiffusionModel(denoiser, vqvae.eval(), _scheduler(state, architecture))


def _scheduler(state: dict[str, torch.Tensor], architecture: LDMArchitecture) -> DDIMScheduler:
    betas = state.get("betas")
    settings = dict(clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    if betas is not None:
        return ddim_scheduler(len(betas), trained_betas=betas.double().numpy(), **settings)
    return ddim_scheduler(architecture.timesteps, "scaled_linear", architecture.linear_start, architecture.linear_end,
                          **settings)


def load_class_conditional_ldm(path: str | Path, architecture: LDMArchitecture = CIN256_V2) -> LatentDiffusionModel:
    """:func:`load_state_dict` then :func:`convert_class_conditional_ldm`."""
    return convert_class_conditional_ldm(load_state_dict(path), architecture)
