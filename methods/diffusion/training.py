"""Training an epsilon-predicting diffusion model (DDPM, Ho et al. 2020, Algorithm 1).

Every random draw (batch rows, timesteps, noise) comes from the caller's generator on the
generator's own device and is then moved to the images' device, so a run is a function of
the initial weights, the data and the generator's seed, and a CPU generator gives the same
draws whatever device the model is on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention
from diffusers import DDPMScheduler, UNet2DModel


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless row-index batches (batch_size,) from successive random permutations of ``range(n)``.

    Each pass over the data is one permutation (sampling without replacement within an epoch);
    a batch may straddle two passes. Indices are int64 on the generator's device.
    """
    pending = torch.empty(0, dtype=torch.long, device=generator.device)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=generator, device=generator.device)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def lr_multiplier(schedule: str, steps: int, warmup: int = 0) -> Callable[[int], float]:
    """The learning-rate factor of optimiser step ``k`` (0-based) of ``steps``, for ``LambdaLR``.

    ``"constant"``: 1 after a linear warm-up, ``min(1, (k + 1) / warmup)``; ``"cosine"``: the same warm-up,
    then ``(1 + cos(pi k' / K')) / 2`` over the ``K' = steps - warmup`` steps after it (Loshchilov & Hutter
    2017, annealed to 0 without restarts). A short run ends on noisy weights at a constant rate; the
    cosine decay settles them, as an EMA of the weights does in long runs.
    """
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose constant or cosine")
    warmup = max(warmup, 0)

    def factor(k: int) -> float:
        if k < warmup:
            return (k + 1) / warmup
        if schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (k - warmup) / max(steps - warmup, 1)))

    return factor


def train_ddpm(unet: UNet2DModel, scheduler: DDPMScheduler, images: torch.Tensor, *, steps: int, batch_size: int,
               lr: float, generator: torch.Generator, weight_decay: float = 0.0, max_grad_norm: float | None = 1.0,
               lr_schedule: str = "constant",
               on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``unet`` in place to predict the noise: minimise ``E ||eps - eps_theta(x_t, t)||^2``.

    One step draws a batch ``x_0`` of images, ``t ~ U{0, ..., T-1}`` and ``eps ~ N(0, I)`` per image,
    forms ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (``scheduler.add_noise``, DDPM eq. 4) and
    takes one AdamW step on the mean squared error (DDPM eq. 14, the "simple" loss). Gradients are
    clipped to ``max_grad_norm`` (as diffusers' unconditional training example does); the
    rate follows ``lr_schedule``; no EMA of the weights is kept. The model is left in training mode.

    Parameters
    ----------
    unet : diffusers.UNet2DModel
        The epsilon model; trained in place.
    scheduler : diffusers.DDPMScheduler
        The noise schedule (its ``num_train_timesteps`` is T).
    images : torch.Tensor
        Training images (N, C, H, W), floating point, normalised to [-1, 1], on the unet's device.
    steps : int
        Optimiser steps.
    batch_size : int
        Images per step, drawn by :func:`shuffled_batches`.
    lr, weight_decay : float
        AdamW learning rate and decoupled weight decay.
    generator : torch.Generator
        The source of every random draw; the run is deterministic given its state.
    max_grad_norm : float or None
        Global gradient-norm clip; ``None`` disables it.
    lr_schedule : str
        ``"constant"`` or ``"cosine"`` (:func:`lr_multiplier`, no warm-up).
    on_step : callable, optional
        ``on_step(step, loss)`` after each step (0-based step, the batch loss as a float).

    Returns
    -------
    list of float
        The batch loss of every step, in order.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    low, high = images.aminmax()
    if low < -1.0 - 1e-4 or high > 1.0 + 1e-4:
        raise ValueError(f"images must be normalised to [-1, 1], got values in [{low:.3g}, {high:.3g}]")
    device, draw = images.device, generator.device
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(lr_schedule, steps))
    batches = shuffled_batches(len(images), batch_size, generator)
    num_timesteps = scheduler.config.num_train_timesteps
    unet.train()
    losses = []
    for step in range(steps):
        x0 = images[next(batches).to(device)]
        noise = torch.randn(x0.shape, generator=generator, device=draw).to(device, x0.dtype)
        t = torch.randint(0, num_timesteps, (len(x0),), generator=generator, device=draw).to(device)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(unet.parameters(), max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return losses
