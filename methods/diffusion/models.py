"""Small pixel-space diffusion models and their noise schedules, built from keyword arguments.

Nothing here touches the Hugging Face hub: :class:`diffusers.UNet2DModel`, :class:`DDPMScheduler`
and :class:`DDIMScheduler` are constructed from their arguments with random weights, as in
diffusers' own fast tests. The papers' models (LDM-4/LDM-8, Stable Diffusion) need downloaded
checkpoints; the tiny UNet stands in for them in the offline CPU checks (docs/papers/mpqdm.md).

Noise schedule (Ho et al. 2020, eq. 4): ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with
``abar_t = prod_{s<=t} (1 - beta_s)``. diffusers' ``"linear"`` schedule spaces ``beta_t`` linearly
from ``beta_start`` to ``beta_end``; the latent-diffusion configs' ``linear`` schedule
(``linear_start=0.0015``, ``linear_end=0.0195`` for LDM-4) spaces ``sqrt(beta_t)`` linearly, which is
diffusers' ``"scaled_linear"``.
"""

from __future__ import annotations

import math

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel


def tiny_unet(sample_size: int = 32, in_channels: int = 1, block_out_channels: tuple[int, ...] = (32, 64),
              layers_per_block: int = 2, *, attention: tuple[bool, ...] | None = None,
              norm_num_groups: int | None = None, seed: int | None = 0, **kwargs) -> UNet2DModel:
    """A small randomly initialised :class:`diffusers.UNet2DModel` predicting the noise ``eps``.

    Each resolution level ``i`` has ``layers_per_block`` ResNet blocks of ``block_out_channels[i]``
    channels, and self-attention after each of them where ``attention[i]`` is true: the down path
    uses ``AttnDownBlock2D`` there and ``DownBlock2D`` elsewhere, the up path mirrors it with
    ``AttnUpBlock2D`` / ``UpBlock2D``. The default is attention on the lowest-resolution level only
    (``DownBlock2D, AttnDownBlock2D``), the layout of diffusers' fast tests; the middle block
    (ResNet, attention, ResNet) is always there. Each level but the last halves the resolution.

    Parameters
    ----------
    sample_size : int
        Image height and width H = W (pixels); must be divisible by ``2 ** (len(block_out_channels) - 1)``.
    in_channels : int
        Image channels C; the output (the predicted noise) has the same number.
    block_out_channels : tuple of int
        Channels per resolution level.
    layers_per_block : int
        ResNet blocks per level on the down path (the up path has one more, as in diffusers).
    attention : tuple of bool, optional
        Self-attention per level; default ``(False, ..., False, True)``.
    norm_num_groups : int, optional
        GroupNorm groups; default ``gcd(block_out_channels)`` capped at 32 (diffusers' default is 32,
        which fails for fewer than 32 channels).
    seed : int or None
        Seed of the weight initialisation, drawn in a forked CPU RNG so the global RNG is left
        alone; ``None`` draws from the global RNG.
    **kwargs
        Passed on to :class:`diffusers.UNet2DModel` (e.g. ``dropout``, ``attention_head_dim``).

    Returns
    -------
    diffusers.UNet2DModel
        ``unet(x_t, t).sample`` maps (N, C, H, W) and timesteps (N,) or a scalar to eps (N, C, H, W).
    """
    levels = len(block_out_channels)
    attention = attention if attention is not None else (False,) * (levels - 1) + (True,)
    if len(attention) != levels:
        raise ValueError(f"attention has {len(attention)} entries for {levels} levels in block_out_channels")
    down = tuple("AttnDownBlock2D" if attn else "DownBlock2D" for attn in attention)
    up = tuple("AttnUpBlock2D" if attn else "UpBlock2D" for attn in reversed(attention))
    groups = norm_num_groups or min(32, math.gcd(*block_out_channels))
    config = dict(sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
                  block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                  down_block_types=down, up_block_types=up, norm_num_groups=groups, **kwargs)
    if seed is None:
        return UNet2DModel(**config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(**config)


def _schedule(num_train_timesteps: int, beta_schedule: str, beta_start: float, beta_end: float,
              clip_sample: bool, kwargs: dict) -> dict:
    """The keyword arguments both schedulers share (one noise schedule, epsilon prediction)."""
    return dict(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, beta_start=beta_start,
                beta_end=beta_end, clip_sample=clip_sample, prediction_type="epsilon", **kwargs)


def ddpm_scheduler(num_train_timesteps: int = 1000, beta_schedule: str = "linear", beta_start: float = 1e-4,
                   beta_end: float = 0.02, *, clip_sample: bool = True, **kwargs) -> DDPMScheduler:
    """The training-time noise schedule (DDPM, Ho et al. 2020) for an epsilon-predicting model.

    Defaults are DDPM's CIFAR-10 schedule: 1000 steps, beta linear from 1e-4 to 0.02.
    ``scheduler.add_noise(x0, eps, t)`` gives ``x_t`` of eq. 4 (see the module docstring).
    Extra ``kwargs`` go to :class:`diffusers.DDPMScheduler`.
    """
    return DDPMScheduler(**_schedule(num_train_timesteps, beta_schedule, beta_start, beta_end, clip_sample, kwargs))


def ddim_scheduler(num_train_timesteps: int = 1000, beta_schedule: str = "linear", beta_start: float = 1e-4,
                   beta_end: float = 0.02, *, clip_sample: bool = True, set_alpha_to_one: bool = True,
                   **kwargs) -> DDIMScheduler:
    """The DDIM sampler (Song et al. 2021, eq. 12) over the same noise schedule as :func:`ddpm_scheduler`.

    With the same arguments it samples from a model trained under :func:`ddpm_scheduler`;
    ``DDIMScheduler.from_config(ddpm.config)`` does the same from an existing scheduler.
    ``set_alpha_to_one`` makes the last step land on ``abar = 1`` (the clean image); timesteps are
    diffusers' ``"leading"`` spacing, ``t_i = (S - 1 - i) * (T // S) + steps_offset`` for ``S`` sampling
    steps (latent-diffusion's DDIM uses ``steps_offset=1``). Extra ``kwargs`` go to :class:`diffusers.DDIMScheduler`.
    """
    return DDIMScheduler(set_alpha_to_one=set_alpha_to_one,
                         **_schedule(num_train_timesteps, beta_schedule, beta_start, beta_end, clip_sample, kwargs))
