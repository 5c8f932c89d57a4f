"""DDIM sampling (Song et al. 2021) of an epsilon-predicting model, with a pluggable noise predictor.

One DDIM step (eq. 12, with ``sigma_t = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev)``)::

    x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma_t^2) eps + sigma_t z,   z ~ N(0, I)

is :meth:`diffusers.DDIMScheduler.step`; this module owns the loop around it.
:func:`ddim_trajectory` walks the states one at a time (for online distillation of a quantized
model along the full-precision trajectory, MPQ-DM section 3 "Training and TRD");
:func:`ddim_sample` runs it to the end for batches of fresh noise.

Both call ``scheduler.set_timesteps(steps)``, which changes the scheduler: do not interleave two
trajectories with different step counts on one scheduler.

A conditional model (e.g. :class:`methods.diffusion.conditional.ClassConditionalUNet`) takes its
condition as keyword tensors aligned with the batch, ``model(x_t, t, **condition)``: a
:data:`Condition` such as ``{"class_labels": (N,), "guidance_scale": (N,)}``. Being batch-aligned,
conditions are sliced and concatenated with the samples they belong to; ``None`` is an
unconditional model's.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

import torch
from diffusers import DDIMScheduler, UNet2DModel

# Keyword tensors of a conditional model's call, each (N, ...) aligned with the batch x_t (N, C, H, W).
Condition = dict[str, torch.Tensor]
# model_fn(x_t, t, step_index, condition) -> eps: x_t (N, C, H, W), t the integer timestep,
# step_index 0..steps-1, condition a Condition for x_t or None.
ModelFn = Callable[[torch.Tensor, int, int, "Condition | None"], torch.Tensor]


def predict_eps(model: torch.nn.Module, x: torch.Tensor, t, condition: Condition | None = None) -> torch.Tensor:
    """``model(x, t, **condition)``, unwrapped from diffusers' output object: eps (N, C, H, W)."""
    out = model(x, t, **(condition or {}))
    return out.sample if hasattr(out, "sample") else out


def slice_condition(condition: Condition | None, start: int, stop: int) -> Condition | None:
    """Rows ``start:stop`` of every tensor of ``condition`` (None stays None)."""
    return None if condition is None else {key: value[start:stop] for key, value in condition.items()}


def cat_conditions(conditions: Sequence[Condition | None]) -> Condition | None:
    """The conditions of consecutive batches as one; all None gives None, a mix is a ValueError."""
    if all(c is None for c in conditions):
        return None
    if any(c is None for c in conditions) or len({tuple(sorted(c)) for c in conditions}) != 1:
        raise ValueError("cannot concatenate batches with different conditions (keys, or conditional and not)")
    return {key: torch.cat([c[key] for c in conditions]) for key in conditions[0]}


def unet_model_fn(unet: UNet2DModel) -> ModelFn:
    """The plain noise predictor ``(x_t, t, step_index, condition) -> eps`` (the index is unused)."""
    return lambda x, t, step_index, condition=None: predict_eps(unet, x, t, condition)


def ddim_trajectory(unet: UNet2DModel, scheduler: DDIMScheduler, x_start: torch.Tensor, *, steps: int,
                    eta: float = 0.0, generator: torch.Generator | None = None,
                    model_fn: ModelFn | None = None, condition: Condition | None = None,
                    ) -> Generator[tuple[int, int, torch.Tensor], None, torch.Tensor]:
    """Yield the DDIM states ``(step_index, t, x_t)`` before each of ``steps`` denoising steps.

    The state is yielded *before* the step at ``t`` is taken; when the caller asks for the next
    one, ``eps = model_fn(x_t, t, step_index, condition)`` (default: the full-precision ``unet``) moves
    ``x_t`` one DDIM step on. So in MPQ-DM's online distillation the caller, at each yielded state, runs
    the full-precision and quantized models on ``x_t`` and takes an optimiser step, and the next
    state comes from the full-precision eps. To avoid a second full-precision forward, pass a
    ``model_fn`` that returns the eps the caller already computed for this ``x_t``.

    The steps run under ``torch.no_grad()``, but the caller's code between states runs in the
    caller's own grad mode (the generator never yields inside ``no_grad``).

    Parameters
    ----------
    unet : diffusers.UNet2DModel
        The full-precision epsilon model.
    scheduler : diffusers.DDIMScheduler
        Noise schedule; its timesteps are set to ``steps`` DDIM steps on ``x_start``'s device.
    x_start : torch.Tensor
        The initial noise x_T (N, C, H, W).
    steps : int
        DDIM steps S; step_index runs 0..S-1 from the noisiest timestep down.
    eta : float
        DDIM stochasticity: 0 is deterministic DDIM, 1 is DDPM-like ancestral sampling.
    generator : torch.Generator, optional
        Source of the ``sigma_t z`` noise when ``eta > 0``.
    model_fn : callable, optional
        ``model_fn(x_t, t, step_index, condition) -> eps`` (N, C, H, W) that moves the trajectory on.
    condition : Condition, optional
        The condition of the N samples (e.g. class labels and guidance scales).

    Yields
    ------
    (int, int, torch.Tensor)
        step_index, the integer timestep t, and x_t (N, C, H, W).

    Returns
    -------
    torch.Tensor
        The final sample x_0 (N, C, H, W), unclipped, as the generator's ``StopIteration.value``
        (``x0 = yield from ddim_trajectory(...)`` inside another generator, or :func:`run_trajectory`).
    """
    model_fn = model_fn or unet_model_fn(unet)
    scheduler.set_timesteps(steps, device=x_start.device)
    x = x_start
    for step_index, t in enumerate(scheduler.timesteps.tolist()):
        yield step_index, t, x
        with torch.no_grad():
            eps = model_fn(x, t, step_index, condition)
            x = scheduler.step(eps, t, x, eta=eta, generator=generator).prev_sample
    return x


def run_trajectory(trajectory: Generator[tuple[int, int, torch.Tensor], None, torch.Tensor],
                   on_state: Callable[[int, int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Run a :func:`ddim_trajectory` to its end and return its final sample x_0.

    ``on_state(step_index, t, x_t)`` is called at each state, before the step from it is taken.
    """
    while True:
        try:
            state = next(trajectory)
        except StopIteration as stop:
            return stop.value
        if on_state is not None:
            on_state(*state)


def ddim_sample(unet: UNet2DModel, scheduler: DDIMScheduler, n: int, *, steps: int, eta: float = 0.0,
                generator: torch.Generator, batch_size: int, shape: tuple[int, int, int] | None = None,
                model_fn: ModelFn | None = None, condition: Condition | None = None,
                on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Draw ``n`` samples by DDIM from fresh Gaussian noise, ``batch_size`` at a time.

    Batch by batch, ``x_T ~ N(0, I)`` is drawn from ``generator`` (on the generator's device, then
    moved to the unet's device and dtype, so a CPU generator gives the same noise on any device),
    then :func:`ddim_trajectory` runs ``steps`` steps with ``model_fn`` (default: ``unet``). Where the
    scheduler clips (``clip_sample=True``, a pixel-space model) the result is clamped to [-1, 1]
    (with ``set_alpha_to_one=True`` the last DDIM step already lands in that range); a latent model's
    scheduler does not clip, and its latents are returned as they are.

    Parameters
    ----------
    unet : diffusers.UNet2DModel
        The epsilon model; its device and dtype are the samples'.
    scheduler : diffusers.DDIMScheduler
        Noise schedule (see :func:`methods.diffusion.models.ddim_scheduler`).
    n : int
        Number of samples.
    steps : int
        DDIM steps per sample.
    eta : float
        DDIM stochasticity (0: deterministic given x_T).
    generator : torch.Generator
        Source of x_T and of the ``eta > 0`` noise; the samples are a function of its state.
    batch_size : int
        Samples per batch (the last batch may be smaller).
    shape : (C, H, W), optional
        Sample shape; default ``(unet.config.in_channels, sample_size, sample_size)``.
    model_fn : callable, optional
        ``model_fn(x_t, t, step_index, condition) -> eps``, e.g. a quantized model whose temporal
        activation quantizer picks its scale by step_index.
    condition : Condition, optional
        The condition of all ``n`` samples, sliced batch by batch.
    on_step : callable, optional
        ``on_step(batch_index, step_index)`` before each DDIM step, for progress.

    Returns
    -------
    torch.Tensor
        Samples (n, C, H, W) on the unet's device, in [-1, 1] where the scheduler clips.
    """
    parameter = next(unet.parameters())
    if shape is None:
        size = unet.config.sample_size
        shape = (unet.config.in_channels, *((size, size) if isinstance(size, int) else size))
    batches = []
    for batch_index, start in enumerate(range(0, n, batch_size)):
        count = min(batch_size, n - start)
        noise = torch.randn((count, *shape), generator=generator, device=generator.device)
        trajectory = ddim_trajectory(unet, scheduler, noise.to(parameter.device, parameter.dtype), steps=steps,
                                     eta=eta, generator=generator, model_fn=model_fn,
                                     condition=slice_condition(condition, start, start + count))
        report = None if on_step is None else (lambda step_index, t, x, b=batch_index: on_step(b, step_index))
        batches.append(run_trajectory(trajectory, report))
    samples = torch.cat(batches)
    return samples.clamp_(-1.0, 1.0) if scheduler.config.clip_sample else samples
