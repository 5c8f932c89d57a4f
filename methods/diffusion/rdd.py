"""RDD: relational diffusion distillation (Feng et al., arXiv 2410.07679), on one device.

Written from the public code ``cantbebetter2/RDD`` as docs/papers/rdd.md describes it.
RDD is progressive distillation (PD,
Salimans & Ho 2022) whose per-halving objective is RCFD's classifier-feature distillation (Sun et al.,
arXiv 2211.12039) plus two relational losses on the classifier's pixel features.

**Diffusion parametrisation** (the public code's). A chain of models shares one *base grid*
of ``T_b + 1`` noise levels, indices ``i = 0 .. T_b``, with the cosine schedule (Nichol & Dhariwal
2021, eq. 17) over ``T_b + 1`` intervals::

    c(u) = cos^2((u + s) / (1 + s) * pi / 2),   s = 0.008
    beta_i = min(1 - c((i + 1) / (T_b + 1)) / c(i / (T_b + 1)), 0.999),   abar_i = prod_{j <= i} (1 - beta_j)

so ``abar_0 < 1`` (the first level already carries a little noise) and only the last ``beta`` is
clipped. These are exactly diffusers' ``squaredcos_cap_v2`` betas with ``num_train_timesteps = T_b + 1``.
A model with ``T`` steps (``T`` divides ``T_b``) lives on the sub-grid ``t = 0 .. T``, base index
``t * T_b / T``; ``z_t = alpha_t x + sigma_t eps`` with ``alpha_t = sqrt(abar)``, ``sigma_t = sqrt(1 - abar)``.
The network (:class:`X0Model`) predicts ``x`` directly and is always conditioned on the *base* index,
so a student halving ``T`` keeps the teacher's time embedding. ``eps_hat = (z_t - alpha_t x_hat) / sigma_t``.

**DDIM** (Song et al. 2021, eq. 12 with ``sigma = 0``), one step ``t -> s`` (:func:`ddim_step`)::

    x_hat = clip(net(z_t, t), -1, 1);  eps_hat = (z_t - alpha_t x_hat) / sigma_t;  z_s = alpha_s x_hat + sigma_s eps_hat

:func:`sample` takes ``steps`` such steps with the integer stride ``T / steps`` from ``z_T ~ N(0, I)``
down to ``t = 0`` and returns ``clip(z_0, -1, 1)``; its network-evaluation count (NFE) is ``steps``.

**Base training** (:func:`train_base`): ``t ~ U{0 .. T}``; per sample the truncated-SNR loss
``max(||x_hat - x||^2, ||eps_hat - eps||^2)`` (PD paper section 4, "truncated SNR weighting";
means over pixels), batch mean.

**PD target** (:func:`pd_target`, PD Algorithm 2): two *unclipped* teacher DDIM steps
``t -> t - 1 -> t - 2`` on the teacher grid, then the single-step target that sends a DDIM step
``t -> t - 2`` from ``z_t`` to the teacher's ``z_{t-2}``::

    x~ = (z_{t-2} - (sigma_{t-2} / sigma_t) z_t) / (alpha_{t-2} - (sigma_{t-2} / sigma_t) alpha_t),
    eps~ = (z_t - alpha_t x~) / sigma_t.

:func:`distill_round` trains the student for ``T / 2`` steps on ``t in 2 * {1 .. T/2}`` (teacher grid):
plain PD by default (truncated-SNR loss against ``(x~, eps~)``), RDD's objective with ``relational``.

**RDD losses** (:class:`RelationalDistillation`): the student's ``x_hat`` and the
target ``x~`` pass through a fixed classifier, giving pooled features ``f`` (N, d) and pixel features
``F`` (N, C, h, w):

1. CFD, :func:`cfd_loss`: ``KL(softmax(f_T / 0.9) || softmax(f_S))``, batch mean (weight 1);
2. IS_P2P, :func:`is_p2p_loss`: cosine similarities of all pixel pairs for every ordered pair of
   samples (:func:`pixel_relations`, B x B x HW x HW), row-wise ``KL(softmax(R_T) || softmax(R_S))``,
   mean over rows (weight 1.0, temperature 1.0);
3. M_P2P, :func:`m_p2p_loss`: unit teacher pixels pushed into a FIFO memory (:class:`PixelQueue`,
   20,000 entries, 128 random pixels a step); 4,096 entries at fixed evenly spaced slots form the
   contrast set ``Q``; student pixels through a projection head (1x1 conv, BN, ReLU, 1x1 conv, its own
   Adam); logits ``p Q^T / 0.1``; ``KL(softmax(teacher) || softmax(student))`` per pixel, mean over
   pixels (weight 0.1, KD temperature 1).

``L = L_CFD + 1.0 L_IS_P2P + 0.1 L_M_P2P`` (no PD MSE, as ``train_rdd.sh``; ``pd_weight`` adds it).

Defects of the public code not repeated (docs/papers/rdd.md):

- No ``torch.distributed``, ``SyncBatchNorm`` or ``all_gather``: one process sees the whole batch, so
  the queue takes its pixels from the whole batch and the head uses ``BatchNorm2d``. IS_P2P then
  relates every ordered pair of the whole batch (public: of each GPU's shard, 32 of 128 samples); its
  row mean keeps the loss on the same scale.
- The missing ``diffkd_modules`` import is not needed: nothing here depends on it.
- The queue is a true ring buffer (the public pointer, when ``ptr + K`` passes the end, overwrites
  the *last* K slots and restarts at 0, so some newer entries are replaced before older ones).
- Teacher pixels are the real per-position channel vectors: the public ``keys.view(C, -1)`` of a
  (B, C, H, W) tensor mixes channels and positions instead of transposing them.
- Every random draw (batches, timesteps, noise, the queue's pixel choice) comes from the caller's
  generator; the queue's initial content and the projection head's weights from a fixed seed.

Choices where the public code is silent or does not fit this suite:

- The classifier is any module with ``features(x)`` (N, d) and ``spatial(x)``: a map (N, C, h, w), or
  a flattened one (N, C * h * w) of a square map whose ``C`` is given (``channels``, default
  ``classifier.spatial_channels``), as :class:`~methods.diffusion.features.ProxyClassifier` gives;
  where it has ``extract`` (both extractors of :mod:`methods.diffusion.features`) one pass gives both.
  Its ``logits`` are not used (RCFD's entropy and diversity terms on them are off in the public code).
  The paper's DenseNet-201 map is its final BN map and the pooled feature its average; the proxy's
  ``spatial`` map is a mid-level one (pass ``ProxyClassifier(spatial_channels=2 * width)`` for all of
  its channels).
- The sampler is our own loop rather than :func:`methods.diffusion.sampling.ddim_sample`: diffusers'
  DDIM predicts from a ``num_train_timesteps`` grid with its own final-step rule and does not
  recompute ``eps`` from the clipped ``x``, both of which differ from the public code's sampler.
- Base training with Adam (as the public code), linear warm-up over ``warmup`` steps starting at
  ``lr / warmup`` (the public LambdaLR gives the first step a zero learning rate), optional EMA.
  Distillation: Adam, cosine annealing over the round, student gradients clipped to norm 1 (the
  head's are not), as PD.py and train_rdd.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from diffusers import UNet2DModel
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.diffusion.training import lr_multiplier, shuffled_batches

COSINE_S = 0.008
MAX_BETA = 0.999


# ---------------------------------------------------------------------------------------------
# Schedule and network
# ---------------------------------------------------------------------------------------------

def cosine_alpha_bar(base_steps: int, s: float = COSINE_S, max_beta: float = MAX_BETA) -> torch.Tensor:
    """``abar_i``, ``i = 0 .. T_b``, of the cosine schedule over ``T_b + 1`` intervals (module docstring).

    Parameters
    ----------
    base_steps : int
        ``T_b``, the last index of the base grid (``T_b + 1`` noise levels).
    s : float
        Offset of the cosine (Nichol & Dhariwal 2021, eq. 17).
    max_beta : float
        Upper clip of each ``beta_i``.

    Returns
    -------
    torch.Tensor
        ``(T_b + 1,)`` float64, strictly decreasing in (0, 1).
    """
    if base_steps < 1:
        raise ValueError(f"base_steps must be >= 1, got {base_steps}")
    u = torch.arange(base_steps + 2, dtype=torch.float64) / (base_steps + 1)
    c = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - c[1:] / c[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, dim=0)


class X0Model(nn.Module):
    """A :class:`diffusers.UNet2DModel` whose output is read as ``x_hat``, the predicted clean image.

    ``forward(z_t, i)`` with ``z_t`` (N, C, H, W) and base-grid indices ``i`` (N,) int64 returns
    ``unet(z_t, i).sample`` (N, C, H, W): the UNet is unchanged, only its output is interpreted as
    ``x`` (``prediction_type="sample"`` in diffusers' terms). Any module ``unet(z_t, i)`` that returns
    the (N, C, H, W) tensor itself also fits (e.g. an analytic denoiser in a test; :func:`sample` then
    needs ``shape``). The model also carries its base grid: ``base_steps`` ``T_b`` and the buffer
    ``alpha_bar`` (``T_b + 1``,) float64 of :func:`cosine_alpha_bar`. A student is a ``copy.deepcopy``
    of its teacher and keeps both.

    Parameters
    ----------
    unet : diffusers.UNet2DModel or nn.Module
        E.g. :func:`methods.diffusion.models.tiny_unet`; ``out_channels == in_channels``.
    base_steps : int
        ``T_b``; every model of a distillation chain has ``T`` dividing it.
    """

    def __init__(self, unet: UNet2DModel | nn.Module, base_steps: int):
        super().__init__()
        self.unet = unet
        self.base_steps = base_steps
        self.register_buffer("alpha_bar", cosine_alpha_bar(base_steps), persistent=False)

    def forward(self, z_t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``x_hat`` (N, C, H, W) from ``z_t`` (N, C, H, W) at base-grid indices (N,)."""
        out = self.unet(z_t, index)
        return out if isinstance(out, torch.Tensor) else out.sample

    def scale(self, steps: int) -> int:
        """Base-grid indices per step of a ``steps``-step grid, ``T_b / T``."""
        if steps < 1 or self.base_steps % steps:
            raise ValueError(f"a {steps}-step grid does not divide the base grid of {self.base_steps} steps")
        return self.base_steps // steps

    def coefficients(self, t: torch.Tensor, steps: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``alpha_t, sigma_t`` as (N, 1, ..., 1) in ``like``'s dtype for ``t`` (N,) on a ``steps``-step grid."""
        abar = self.alpha_bar[t.to(self.alpha_bar.device) * self.scale(steps)].to(like.device)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return abar.sqrt().to(like.dtype).view(shape), (1 - abar).sqrt().to(like.dtype).view(shape)


def _steps_tensor(t: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Grid indices (N,) int64 on ``like``'s device from an int or a tensor."""
    if isinstance(t, torch.Tensor):
        return t.to(like.device, torch.long).expand(len(like))
    return torch.full((len(like),), t, dtype=torch.long, device=like.device)


def diffuse(net: X0Model, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, steps: int) -> torch.Tensor:
    """``z_t = alpha_t x + sigma_t eps`` (N, C, H, W) for ``t`` (N,) on a ``steps``-step grid."""
    alpha, sigma = net.coefficients(t, steps, x0)
    return alpha * x0 + sigma * noise


def predict(net: X0Model, z_t: torch.Tensor, t: int | torch.Tensor, steps: int, *,
            clip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's ``(x_hat, eps_hat)`` at ``t`` of a ``steps``-step grid.

    ``x_hat = net(z_t, t T_b / T)``, optionally clipped to [-1, 1]; ``eps_hat = (z_t - alpha_t x_hat) / sigma_t``
    (from the clipped ``x_hat`` where ``clip``). Both (N, C, H, W).
    """
    t = _steps_tensor(t, z_t)
    x0 = net(z_t, t * net.scale(steps))
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
    alpha, sigma = net.coefficients(t, steps, z_t)
    return x0, (z_t - alpha * x0) / sigma


def ddim_step(net: X0Model, z_t: torch.Tensor, t: int | torch.Tensor, s: int | torch.Tensor, steps: int, *,
              clip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One deterministic DDIM step ``z_t -> z_s`` (Song et al. 2021, eq. 12 with ``sigma = 0``).

    Parameters
    ----------
    net : X0Model
        The ``x``-predicting model.
    z_t : torch.Tensor
        (N, C, H, W).
    t, s : int or torch.Tensor
        From and to, indices (scalars or (N,)) of a ``steps``-step grid, ``0 <= s < t <= steps``.
    steps : int
        The grid's ``T``.
    clip : bool
        Clip ``x_hat`` to [-1, 1] before ``eps_hat`` is derived (the sampler's rule; PD targets do not).

    Returns
    -------
    z_s, x_hat : torch.Tensor
        (N, C, H, W) each.
    """
    x0, eps = predict(net, z_t, t, steps, clip=clip)
    alpha, sigma = net.coefficients(_steps_tensor(s, z_t), steps, z_t)
    return alpha * x0 + sigma * eps, x0


class Samples(NamedTuple):
    """What :func:`sample` and :func:`ddim` return."""

    images: torch.Tensor
    """(N, C, H, W) in [-1, 1]."""
    nfe: int
    """Network evaluations per sample (each evaluation covers a whole batch)."""


@torch.no_grad()
def ddim(net: X0Model, z_start: torch.Tensor, T: int, steps: int, *, clip: bool = True) -> Samples:  # noqa: N803
    """Run DDIM from ``z_T`` = ``z_start`` (N, C, H, W) down to ``t = 0`` in ``steps`` steps of stride ``T / steps``.

    ``T`` is the model's grid; visits ``t = T, T - k, ..., k`` (``k`` the stride), one network
    evaluation each, and returns ``clip(z_0, -1, 1)`` with the number of evaluations. Runs without
    gradients in the net's current mode (``eval()`` it first if it has dropout).
    """
    if steps < 1 or T % steps:
        raise ValueError(f"steps={steps} must divide the model's {T} steps")
    stride = T // steps
    z, evaluations = z_start, 0
    for t in range(T, 0, -stride):
        z, _ = ddim_step(net, z, t, t - stride, T, clip=clip)
        evaluations += 1
    return Samples(z.clamp(-1.0, 1.0), evaluations)


def sample(net: X0Model, T: int, steps: int, n: int, generator: torch.Generator, *,  # noqa: N803 - the paper's T
           batch_size: int | None = None, clip: bool = True, shape: tuple[int, int, int] | None = None) -> Samples:
    """Draw ``n`` samples by DDIM with ``steps`` network evaluations each (stride ``T / steps``).

    Parameters
    ----------
    net : X0Model
        The model; its device and dtype are the samples'.
    T : int
        The model's number of steps (its grid ``t = 0 .. T``), dividing ``net.base_steps``.
    steps : int
        Sampling steps, dividing ``T`` (``steps = T`` is the model's own grid).
    n : int
        Number of samples.
    generator : torch.Generator
        Source of ``z_T ~ N(0, I)``, drawn on its own device and moved to the net's, batch by batch.
    batch_size : int, optional
        Samples per batch; default all ``n`` at once.
    clip : bool
        Clip ``x_hat`` to [-1, 1] at every step (the public code's sampler).
    shape : (C, H, W), optional
        Default ``(in_channels, sample_size, sample_size)`` of the UNet.

    Returns
    -------
    Samples
        ``images`` (n, C, H, W) in [-1, 1]; ``nfe`` evaluations per sample, counted (= ``steps``).
    """
    parameter = next(net.parameters())
    if shape is None:
        size = net.unet.config.sample_size
        shape = (net.unet.config.in_channels, *((size, size) if isinstance(size, int) else size))
    batch_size = batch_size or n
    batches, nfe = [], 0
    for start in range(0, n, batch_size):
        noise = torch.randn((min(batch_size, n - start), *shape), generator=generator, device=generator.device)
        images, nfe = ddim(net, noise.to(parameter.device, parameter.dtype), T, steps, clip=clip)
        batches.append(images)
    return Samples(torch.cat(batches), nfe)


# ---------------------------------------------------------------------------------------------
# Base training and progressive distillation
# ---------------------------------------------------------------------------------------------

def truncated_snr_loss(x_hat: torch.Tensor, x: torch.Tensor, eps_hat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``mean_n max(MSE_n(x_hat, x), MSE_n(eps_hat, eps))``: PD's truncated-SNR weighting.

    Per sample the larger of the two per-pixel mean squared errors, i.e. the ``x`` error weighted by
    ``max(1, alpha_t^2 / sigma_t^2)``; all inputs (N, ...). Returns a scalar.
    """
    per_sample = [F.mse_loss(a, b, reduction="none").flatten(1).mean(dim=1) for a, b in ((x_hat, x), (eps_hat, eps))]
    return torch.maximum(*per_sample).mean()


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    low, high = images.aminmax()
    if low < -1.0 - 1e-4 or high > 1.0 + 1e-4:
        raise ValueError(f"images must be normalised to [-1, 1], got values in [{low:.3g}, {high:.3g}]")


@torch.no_grad()
def _ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """``ema = decay ema + (1 - decay) net`` over the floating entries of the state dicts."""
    source = net.state_dict()
    for name, value in ema.state_dict().items():
        if value.is_floating_point():
            value.lerp_(source[name], 1 - decay)
        else:
            value.copy_(source[name])


def train_base(net: X0Model, images: torch.Tensor, T: int, *, steps: int, batch_size: int,  # noqa: N803
               lr: float, generator: torch.Generator, weight_decay: float = 0.0, max_grad_norm: float | None = 1.0,
               warmup: int = 0, lr_schedule: str = "constant", ema: X0Model | None = None,
               ema_decay: float = 0.9999, on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Train the ``x``-predicting base model in place with the truncated-SNR loss.

    One step draws a batch ``x`` (:func:`~methods.diffusion.training.shuffled_batches`),
    ``t ~ U{0 .. T}`` and ``eps ~ N(0, I)`` per image, forms ``z_t = alpha_t x + sigma_t eps`` and takes one
    Adam step on :func:`truncated_snr_loss` of ``(x_hat, x)`` and ``(eps_hat, eps)``.

    Parameters
    ----------
    net : X0Model
        Trained in place; left in training mode.
    images : torch.Tensor
        (N, C, H, W) in [-1, 1] on the net's device.
    T : int
        The model's steps (usually ``net.base_steps``; the public code's CIFAR-10 value is 1024).
    steps, batch_size : int
        Optimiser steps and images per step.
    lr : float
        Adam learning rate (public code: 2e-4 for CIFAR-10).
    generator : torch.Generator
        Source of every draw, on its own device; the run is a function of its seed and the weights.
    weight_decay : float
        Adam's (coupled) L2 coefficient.
    max_grad_norm : float or None
        Global gradient-norm clip (public code: 1); ``None`` disables it.
    warmup : int
        Linear learning-rate warm-up steps, ``lr * min(1, (step + 1) / warmup)`` (public code: 5,000).
    lr_schedule : str
        After the warm-up, ``"constant"`` (public code) or ``"cosine"`` decay to 0 (ours, for short runs:
        :func:`~methods.diffusion.training.lr_multiplier`).
    ema : X0Model, optional
        A copy of ``net`` updated in place after each step with ``ema_decay`` (public code: 0.9999).
    on_step : callable, optional
        ``on_step(step, loss)`` after each step.

    Returns
    -------
    list of float
        The batch loss of every step.
    """
    _check_images(images)
    device, draw = images.device, generator.device
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(lr_schedule, steps, warmup))
    batches = shuffled_batches(len(images), batch_size, generator)
    net.train()
    losses = []
    for step in range(steps):
        x0 = images[next(batches).to(device)]
        noise = torch.randn(x0.shape, generator=generator, device=draw).to(device, x0.dtype)
        t = torch.randint(0, T + 1, (len(x0),), generator=generator, device=draw).to(device)
        x_hat, eps_hat = predict(net, diffuse(net, x0, noise, t, T), t, T)
        loss = truncated_snr_loss(x_hat, x0, eps_hat, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)
        optimizer.step()
        schedule.step()
        if ema is not None:
            _ema_update(ema, net, ema_decay)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return losses


class PDTarget(NamedTuple):
    """The single-step targets of progressive distillation, (N, C, H, W) each."""

    x0: torch.Tensor
    """``x~``, which a DDIM step ``t -> t - 2`` sends from ``z_t`` to the teacher's ``z_{t-2}``."""
    eps: torch.Tensor
    """``eps~ = (z_t - alpha_t x~) / sigma_t``."""


@torch.no_grad()
def pd_target(teacher: X0Model, z_t: torch.Tensor, t: torch.Tensor, T_teacher: int) -> PDTarget:  # noqa: N803
    """Progressive distillation's target (Salimans & Ho 2022, Algorithm 2) from two teacher DDIM steps.

    Parameters
    ----------
    teacher : X0Model
        Evaluated twice, unclipped, in its current mode and without gradients.
    z_t : torch.Tensor
        (N, C, H, W) noisy images at ``t``.
    t : torch.Tensor
        (N,) int64 indices on the teacher grid, ``2 <= t <= T_teacher``.
    T_teacher : int
        The teacher's steps.

    Returns
    -------
    PDTarget
        ``x~ = (z_{t-2} - r z_t) / (alpha_{t-2} - r alpha_t)``, ``r = sigma_{t-2} / sigma_t``, and ``eps~``.
    """
    t = _steps_tensor(t, z_t)
    if (t < 2).any() or (t > T_teacher).any():
        raise ValueError(f"PD needs 2 <= t <= {T_teacher} on the teacher grid")
    z = z_t
    for k in (0, 1):
        z, _ = ddim_step(teacher, z, t - k, t - k - 1, T_teacher, clip=False)
    alpha_t, sigma_t = teacher.coefficients(t, T_teacher, z_t)
    alpha_s, sigma_s = teacher.coefficients(t - 2, T_teacher, z_t)
    ratio = sigma_s / sigma_t
    x0 = (z - ratio * z_t) / (alpha_s - ratio * alpha_t)
    return PDTarget(x0, (z_t - alpha_t * x0) / sigma_t)


class DistillRound(NamedTuple):
    """What :func:`distill_round` returns."""

    student: X0Model
    """The trained student (the object passed in)."""
    T: int
    """The student's steps, ``T_teacher / 2``."""
    losses: list[float]
    """The optimised batch loss of every step."""
    terms: dict[str, list[float]]
    """Per step: ``"pd"`` (truncated-SNR PD loss, logged even when not optimised) and, with the
    relational objective, ``"cfd"``, ``"is_p2p"``, ``"m_p2p"`` (unweighted)."""


def distill_round(teacher: X0Model, student: X0Model, images: torch.Tensor, T_teacher: int, *,  # noqa: N803
                  steps: int, batch_size: int, lr: float, generator: torch.Generator,
                  relational: RelationalDistillation | None = None, weight_decay: float = 0.0,
                  max_grad_norm: float | None = 1.0,
                  on_step: Callable[[int, float], None] | None = None) -> DistillRound:
    """One halving of progressive distillation: a ``T/2``-step student from a ``T``-step teacher.

    Each step draws ``x``, ``t = 2 j`` with ``j ~ U{1 .. T/2}`` (teacher grid; student index ``j``,
    same base index) and ``eps``, forms ``z_t``, the :func:`pd_target` ``(x~, eps~)`` and the student's
    ``x_hat`` (its ``eps_hat`` derived). Without ``relational`` the loss is PD's
    :func:`truncated_snr_loss` against the targets; with it, RDD's objective
    ``relational(x_hat, x~).total + relational.pd_weight * PD``. Student: Adam with cosine annealing
    over ``steps``, gradient-norm clip; projection head (RDD): its own Adam, same ``lr``, no clip.

    Parameters
    ----------
    teacher : X0Model
        Put in eval mode, never changed.
    student : X0Model
        Trained in place (usually ``copy.deepcopy(teacher)``), left in training mode; same base grid.
    images : torch.Tensor
        (N, C, H, W) in [-1, 1] on the models' device.
    T_teacher : int
        The teacher's steps: even and dividing the base grid.
    steps, batch_size : int
        Optimiser steps and images per step (public code, CIFAR-10: 10k per halving, 20k for the last two,
        batch 128; RDD stage 20k).
    lr : float
        Adam learning rate (public code: 5e-5).
    generator : torch.Generator
        Source of every draw (also the queue's pixel choice); the round is a function of its seed.
    relational : RelationalDistillation, optional
        RDD's losses; its classifier stays frozen, its head and queue are updated.
    weight_decay : float
        Adam's L2 coefficient (public code: 0).
    max_grad_norm : float or None
        Student gradient-norm clip (public code: 1).
    on_step : callable, optional
        ``on_step(step, loss)`` after each step.

    Returns
    -------
    DistillRound
        The student, its ``T_teacher / 2`` steps and the loss history.
    """
    _check_images(images)
    if T_teacher < 2 or T_teacher % 2:
        raise ValueError(f"T_teacher must be even and >= 2, got {T_teacher}")
    if student.base_steps != teacher.base_steps:
        raise ValueError(f"student base grid {student.base_steps} != teacher base grid {teacher.base_steps}")
    teacher.scale(T_teacher)
    T_student = T_teacher // 2  # noqa: N806
    device, draw = images.device, generator.device
    teacher.eval()
    student.train()
    optimizer = torch.optim.Adam(student.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    head_optimizer = None
    if relational is not None:
        relational.train()
        head_optimizer = torch.optim.Adam(relational.head.parameters(), lr=lr, weight_decay=weight_decay)
    batches = shuffled_batches(len(images), batch_size, generator)
    losses: list[float] = []
    terms: dict[str, list[float]] = {"pd": []}
    for step in range(steps):
        x0 = images[next(batches).to(device)]
        noise = torch.randn(x0.shape, generator=generator, device=draw).to(device, x0.dtype)
        t = 2 * torch.randint(1, T_student + 1, (len(x0),), generator=generator, device=draw).to(device)
        z_t = diffuse(teacher, x0, noise, t, T_teacher)
        target = pd_target(teacher, z_t, t, T_teacher)
        x_hat, eps_hat = predict(student, z_t, t // 2, T_student)
        pd = truncated_snr_loss(x_hat, target.x0, eps_hat, target.eps)
        terms["pd"].append(pd.item())
        if relational is None:
            loss = pd
        else:
            rel = relational(x_hat, target.x0, generator=generator)
            loss = rel.total + relational.pd_weight * pd if relational.pd_weight else rel.total
            for name in ("cfd", "is_p2p", "m_p2p"):
                terms.setdefault(name, []).append(getattr(rel, name).item())
        optimizer.zero_grad(set_to_none=True)
        if head_optimizer is not None:
            head_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(student.parameters(), max_grad_norm)
        optimizer.step()
        if head_optimizer is not None:
            head_optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return DistillRound(student, T_student, losses, terms)


# ---------------------------------------------------------------------------------------------
# RDD's losses
# ---------------------------------------------------------------------------------------------

def _row_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(teacher) || softmax(student))`` along the last axis, (...,); the teacher is a constant.

    Written as ``sum p_T (log p_T - log p_S)`` from log-softmaxes (no log of probabilities), which is
    also cheaper than ``F.kl_div`` on large contrast sets.
    """
    log_student = F.log_softmax(student_logits, dim=-1)
    with torch.no_grad():
        log_teacher = F.log_softmax(teacher_logits, dim=-1)
    return (log_teacher.exp() * (log_teacher - log_student)).sum(dim=-1)


def cfd_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, temperature: float = 0.9) -> torch.Tensor:
    """RCFD's classifier-feature distillation ``KL(softmax(f_T / tau) || softmax(f_S))``, batch mean.

    The teacher's distribution is sharpened by ``tau < 1``; the student's is not tempered. Both
    inputs (N, d) pooled classifier features; the teacher's is detached. Returns a scalar.
    """
    return _row_kl(student_features, teacher_features / temperature).mean()


def pixel_relations(maps: torch.Tensor) -> torch.Tensor:
    """Cosine similarities of all pixel pairs for every ordered pair of samples.

    Parameters
    ----------
    maps : torch.Tensor
        (B, C, h, w) feature maps; each pixel's C-vector is L2-normalised.

    Returns
    -------
    torch.Tensor
        ``R`` (B, B, hw, hw) with ``R[b, d, i, j] = <f_{b,i}, f_{d,j}>`` in [-1, 1];
        ``R[b, d] = R[d, b]^T``.
    """
    pixels = F.normalize(maps.flatten(2), p=2, dim=1)
    return torch.einsum("bci,dcj->bdij", pixels, pixels)


def is_p2p_loss(student_maps: torch.Tensor, teacher_maps: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """IS_P2P: ``KL(softmax(R_T / tau) || softmax(R_S / tau))`` along each row of length hw, row mean.

    ``R`` is :func:`pixel_relations` of each side's (B, C, h, w) maps, so the mean runs over the
    ``B * B * hw`` rows; the teacher side is detached. Returns a scalar.
    """
    with torch.no_grad():
        teacher = pixel_relations(teacher_maps)
    return _row_kl(pixel_relations(student_maps) / temperature, teacher / temperature).mean()


def m_p2p_loss(student_maps: torch.Tensor, teacher_maps: torch.Tensor, contrast: torch.Tensor, *,
               contrast_temperature: float = 0.1, kd_temperature: float = 1.0) -> torch.Tensor:
    """M_P2P: pixel-to-memory relations of the student distilled from the teacher's.

    Each pixel vector of either side is L2-normalised; its logits against the memory are
    ``p Q^T / contrast_temperature``; per pixel ``kd^2 KL(softmax(l_T / kd) || softmax(l_S / kd))``,
    averaged over the ``B * hw`` pixels.

    Parameters
    ----------
    student_maps : torch.Tensor
        (B, C, h, w) student pixel features after the projection head.
    teacher_maps : torch.Tensor
        (B, C, h, w) teacher pixel features; detached.
    contrast : torch.Tensor
        ``Q`` (K, C) unit memory entries (:meth:`PixelQueue.contrast`).
    contrast_temperature, kd_temperature : float
        0.1 and 1 in the public code.

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    scaled = contrast.T / (contrast_temperature * kd_temperature)  # both temperatures on the small (C, K) side

    def logits(maps):
        return F.normalize(maps.flatten(2), p=2, dim=1).transpose(1, 2) @ scaled

    with torch.no_grad():
        teacher = logits(teacher_maps)
    return _row_kl(logits(student_maps), teacher).mean() * kd_temperature ** 2


class PixelQueue(nn.Module):
    """A FIFO memory of ``size`` unit pixel vectors of ``dim`` channels (M_P2P's online queue).

    It always holds ``size`` entries: it starts with random unit vectors (seeded) and each
    :meth:`push` overwrites the oldest entries, wrapping around the end (a ring buffer). The storage
    order is the slot order; :meth:`ordered` gives the entries oldest first. Buffers: ``memory``
    (size, dim) and ``pointer`` (the slot of the oldest entry); neither takes gradients.
    """

    def __init__(self, size: int, dim: int, *, seed: int | None = 0):
        super().__init__()
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        self.register_buffer("memory", F.normalize(torch.randn(size, dim, generator=generator), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.memory.shape[0]

    @torch.no_grad()
    def push(self, pixels: torch.Tensor) -> None:
        """Write (K, dim) pixels, L2-normalised, over the K oldest entries (``K <= size``)."""
        if pixels.ndim != 2 or pixels.shape[1] != self.memory.shape[1] or len(pixels) > self.size:
            raise ValueError(f"pixels must be (K <= {self.size}, {self.memory.shape[1]}), got {tuple(pixels.shape)}")
        slots = (self.pointer + torch.arange(len(pixels), device=self.memory.device)) % self.size
        self.memory[slots] = F.normalize(pixels.detach().to(self.memory), dim=1)
        self.pointer.copy_((self.pointer + len(pixels)) % self.size)

    def ordered(self) -> torch.Tensor:
        """(size, dim) entries from the oldest to the newest."""
        return torch.roll(self.memory, shifts=-int(self.pointer), dims=0)

    def contrast(self, count: int) -> torch.Tensor:
        """(count, dim) entries at the fixed, evenly spaced slots ``round(linspace(0, size - 1, count))``."""
        if not 1 <= count <= self.size:
            raise ValueError(f"count must be in [1, {self.size}], got {count}")
        slots = torch.linspace(0, self.size - 1, count, device=self.memory.device).round().long()
        return self.memory[slots]


class ProjectionHead(nn.Sequential):
    """M_P2P's student head on pixel features: 1x1 conv, BatchNorm, ReLU, 1x1 conv (no biases), C -> C."""

    def __init__(self, channels: int, out_channels: int | None = None):
        out_channels = out_channels or channels
        super().__init__(nn.Conv2d(channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(),
                         nn.Conv2d(out_channels, out_channels, 1, bias=False))


class RelationalTerms(NamedTuple):
    """RDD's loss terms, scalars: ``total = cfd + is_p2p_weight is_p2p + m_p2p_weight m_p2p``."""

    total: torch.Tensor
    cfd: torch.Tensor
    is_p2p: torch.Tensor
    m_p2p: torch.Tensor


class RelationalDistillation(nn.Module):
    """RDD's objective on a fixed classifier: CFD + IS_P2P + M_P2P (module docstring, items 1-3).

    The classifier is put in eval mode with its parameters frozen (and stays in eval mode when this
    module is trained); the projection head (``head``) and the memory (``queue``) are this module's own.
    Calling it (``forward``) pushes ``pixels_per_step`` random teacher pixels into the queue *before*
    the contrast set is read, as the public code does.

    Parameters
    ----------
    classifier : nn.Module
        With ``features(x)`` (N, d) and ``spatial(x)`` (N, C, h, w) or (N, C * h * w), e.g.
        :class:`~methods.diffusion.features.ProxyClassifier` (see the module docstring).
    channels : int, optional
        Pixel channels C; default ``classifier.spatial_channels``.
    cfd_temperature : float
        CFD's teacher temperature (public code: 0.9).
    is_p2p_weight, is_p2p_temperature : float
        1.0 and 1.0.
    m_p2p_weight, contrast_temperature, kd_temperature : float
        0.1, 0.1 and 1.0.
    memory_size, contrast_size, pixels_per_step : int
        20,000, 4,096 and 128.
    pd_weight : float
        Weight of the plain PD loss added by :func:`distill_round` (the public ``--logits``); 0.
    seed : int or None
        Seed of the head's initial weights and the queue's initial content.
    """

    def __init__(self, classifier: nn.Module, channels: int | None = None, *, cfd_temperature: float = 0.9,
                 is_p2p_weight: float = 1.0, is_p2p_temperature: float = 1.0, m_p2p_weight: float = 0.1,
                 contrast_temperature: float = 0.1, kd_temperature: float = 1.0, memory_size: int = 20_000,
                 contrast_size: int = 4096, pixels_per_step: int = 128, pd_weight: float = 0.0,
                 seed: int | None = 0):
        super().__init__()
        channels = channels or getattr(classifier, "spatial_channels", None)
        if channels is None:
            raise ValueError("give the classifier's pixel channels (channels=...)")
        if not 1 <= pixels_per_step <= memory_size or not 1 <= contrast_size <= memory_size:
            raise ValueError("pixels_per_step and contrast_size must be in [1, memory_size]")
        self.classifier = classifier.eval().requires_grad_(False)
        self.channels = channels
        self.cfd_temperature, self.is_p2p_temperature = cfd_temperature, is_p2p_temperature
        self.is_p2p_weight, self.m_p2p_weight, self.pd_weight = is_p2p_weight, m_p2p_weight, pd_weight
        self.contrast_temperature, self.kd_temperature = contrast_temperature, kd_temperature
        self.contrast_size, self.pixels_per_step = contrast_size, pixels_per_step
        if seed is None:
            self.head = ProjectionHead(channels)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.head = ProjectionHead(channels)
        self.queue = PixelQueue(memory_size, channels, seed=seed)

    def train(self, mode: bool = True) -> RelationalDistillation:
        super().train(mode)
        self.classifier.eval()
        return self

    def classify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features (N, d) and pixel maps (N, C, h, w) of images (N, C_img, H, W)."""
        if hasattr(self.classifier, "extract"):
            out = self.classifier.extract(images)
            pooled, spatial = out.pool, out.spatial
        else:
            pooled, spatial = self.classifier.features(images), self.classifier.spatial(images)
        if spatial.ndim == 4:
            return pooled, spatial
        side = math.isqrt(spatial.shape[1] // self.channels)
        if self.channels * side * side != spatial.shape[1]:
            raise ValueError(f"spatial features of {spatial.shape[1]} values are not {self.channels} square maps")
        return pooled, spatial.view(len(spatial), self.channels, side, side)

    def forward(self, student_x0: torch.Tensor, target_x0: torch.Tensor, *, generator: torch.Generator | None = None,
                update_queue: bool = True) -> RelationalTerms:
        """RDD's terms for the student's ``x_hat`` and the PD target ``x~``, (N, C_img, H, W) each.

        ``generator`` (default: the global RNG) chooses the teacher pixels pushed into the queue.
        Gradients reach the student's ``x_hat`` and the head, never the classifier, the target or the queue.
        """
        with torch.no_grad():
            teacher_pooled, teacher_maps = self.classify(target_x0)
        student_pooled, student_maps = self.classify(student_x0)
        if update_queue:
            pixels = teacher_maps.permute(0, 2, 3, 1).reshape(-1, self.channels)
            draw = generator.device if generator is not None else pixels.device
            chosen = torch.randperm(len(pixels), generator=generator, device=draw)[:self.pixels_per_step]
            self.queue.push(pixels[chosen.to(pixels.device)])
        cfd = cfd_loss(student_pooled, teacher_pooled, self.cfd_temperature)
        is_p2p = is_p2p_loss(student_maps, teacher_maps, self.is_p2p_temperature)
        m_p2p = m_p2p_loss(self.head(student_maps), teacher_maps, self.queue.contrast(self.contrast_size),
                           contrast_temperature=self.contrast_temperature, kd_temperature=self.kd_temperature)
        total = cfd + self.is_p2p_weight * is_p2p + self.m_p2p_weight * m_p2p
        return RelationalTerms(total, cfd, is_p2p, m_p2p)
