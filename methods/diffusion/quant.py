"""Fake quantization of diffusion UNets: the quantizer, QA-LoRA layers and a min-max PTQ baseline.

The building blocks that MPQ-DM (Feng, Qin et al., AAAI 2025, arXiv 2412.11549) inherits from
EfficientDM, as docs/papers/mpqdm.md describes them (the quantizer, quantization-aware
LoRA); the MPQ-DM-specific parts (OMQ, TRD, the distillation) are in :mod:`methods.diffusion.mpqdm`.

- Uniform asymmetric affine fake quantization, ``x_int = clamp(round(x / delta) + z, 0, 2^b - 1)``,
  ``x_hat = (x_int - z) * delta``, with a straight-through rounding and learnable ``delta`` and ``z``
  (LSQ-style gradients).
- Range initialisation "mse": 80 candidate ranges ``(max * (1 - 0.01 i), min * (1 - 0.01 i))``,
  keeping the one with the smallest L_p error, ``p = 2.4``; and "max" (the min-max range, widened
  to contain 0).
- Weights: per output channel. Activations: per layer, one ``(delta, z)`` pair per DDIM step.
- :func:`quantize_model` swaps the ``Conv2d``/``Linear`` modules of a diffusers ``UNet2DModel`` for
  :class:`QuantLayer`. The public code keeps modules named ``skip*`` / ``*op*`` (the LDM UNet's 1x1
  skip convolutions ``skip_connection`` and downsampling convolutions ``op``) in full precision; the
  diffusers names of the same modules are ``conv_shortcut`` and ``downsamplers.<i>.conv``. We match
  whole name components (``conv_shortcut``, ``downsamplers``, ``skip_connection``, ``op``), not
  substrings. The first three and the last quantized layers (module registration order; in a
  ``UNet2DModel``: ``conv_in``, ``time_embedding.linear_1``/``linear_2`` and ``conv_out``, the same
  layers as in the LDM UNet) run at 8 bits for weights and activations, without LoRA, smoothing or
  OMQ, and are not trained, as in the public code; their count comes from the model (the public
  code hard-codes 265 quantized layers).

Choices of ours where the public code is silent:

- Steps are indexed by the DDIM iteration ``i = 0 .. n_steps - 1`` (0 = the first, noisiest step)
  and set explicitly with :func:`set_step`; the public code walks an implicit counter from
  ``n_steps - 1`` down, one tick per forward call.
- Each step's activation ``(delta, z)`` is its own scalar parameter, so AdamW's moments and weight
  decay touch a step only when it is trained (the public code stores all steps in one tensor and
  left a per-step optimizer-state workaround commented out).
- :func:`calibrate` initialises each step's activation range from that step's calibration inputs
  (the public MPQ-DM code copies one range, found on a batch that mixes time steps, into every
  step and lets the training separate them). The L_p error of activation candidates is evaluated
  on ``max_elements`` elements drawn with a fixed seed (the range itself comes from all of them),
  which keeps CPU calibration short; with the default 2^14 the chosen ``delta`` stayed within
  3 % (three candidates) of the full search on the activations of a (32, 64)-channel UNet.
- OMQ's three masked quantizers are held as one per-channel quantizer with per-channel bit widths
  (``channel_bits``); since the masks select whole output channels, the masked sum of the public
  code computes the same values and gradients.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.diffusion.sampling import Condition, cat_conditions, predict_eps

# Name components of modules kept in full precision: diffusers' names first, then the LDM names
# the public code matches (``skip`` -> ``skip_connection``, ``op`` -> the downsampling conv).
FULL_PRECISION_NAMES = ("conv_shortcut", "downsamplers", "skip_connection", "op")

_MIN_DELTA = 1e-8


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer with a straight-through gradient (d round(x)/dx := 1)."""
    return (x.round() - x).detach() + x


def _levels(bits: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor | float:
    """``2^b - 1`` as a float (int ``bits``) or a float tensor on ``like``'s device (tensor ``bits``)."""
    if isinstance(bits, torch.Tensor):
        return (2.0 ** bits.to(device=like.device, dtype=like.dtype)) - 1.0
    return float(2**bits - 1)


def fake_quantize(
    x: torch.Tensor, delta: torch.Tensor, zero_point: torch.Tensor, bits: int | torch.Tensor
) -> torch.Tensor:
    """Uniform asymmetric affine fake quantization.

    ``x_int = clamp(round_ste(x / delta) + z, 0, 2^b - 1)`` and ``x_hat = (x_int - z) * delta``.

    Parameters
    ----------
    x : Tensor
        Values to quantize, any shape.
    delta, zero_point : Tensor
        Step size (same unit as ``x``) and zero point (in grid units, not necessarily an integer
        once learned), broadcastable to ``x``.
    bits : int or Tensor
        Bit width ``b``; a tensor (broadcastable to ``x``) gives per-element widths (OMQ).

    Returns
    -------
    Tensor
        ``x_hat``, same shape as ``x``. Gradients: straight through the rounding for ``x`` (zero
        where clipped); LSQ-style for ``delta`` (``round(x/delta) - x/delta`` inside the range,
        ``-z`` or ``2^b - 1 - z`` outside) and ``z`` (0 inside, ``-delta`` outside).
    """
    qmax = _levels(bits, x)
    x_int = round_ste(x / delta) + zero_point
    if isinstance(qmax, torch.Tensor):
        x_int = torch.clamp(x_int, torch.zeros_like(qmax), qmax)
    else:
        x_int = torch.clamp(x_int, 0.0, qmax)
    return (x_int - zero_point) * delta


def _range_to_affine(x_max: torch.Tensor, x_min: torch.Tensor, qmax) -> tuple[torch.Tensor, torch.Tensor]:
    """``delta = (max - min) / (2^b - 1)`` (at least 1e-8) and ``z = round(-min / delta)``."""
    delta = ((x_max - x_min) / qmax).clamp_min(_MIN_DELTA)
    return delta, torch.round(-x_min / delta)


def _as_rows(x: torch.Tensor, channel_dim: int | None) -> torch.Tensor:
    """``(C, N)`` view with channels first (``C = 1`` when ``channel_dim`` is None)."""
    if channel_dim is None:
        return x.reshape(1, -1)
    return x.movedim(channel_dim, 0).reshape(x.shape[channel_dim], -1)


def _row_bits(bits: int | torch.Tensor, n_rows: int, like: torch.Tensor) -> torch.Tensor:
    if isinstance(bits, torch.Tensor):
        return bits.reshape(-1, 1).expand(n_rows, 1) if bits.numel() == 1 else bits.reshape(n_rows, 1)
    return torch.full((n_rows, 1), bits, device=like.device)


def _finish(delta: torch.Tensor, zero_point: torch.Tensor, channel_dim: int | None):
    if channel_dim is None:
        return delta.reshape(()), zero_point.reshape(())
    return delta.reshape(-1), zero_point.reshape(-1)


@torch.no_grad()
def minmax_range(
    x: torch.Tensor, bits: int | torch.Tensor, *, channel_dim: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The "max" initialisation: the full range ``[min(x, 0), max(x, 0)]``.

    Parameters
    ----------
    x : Tensor
        Observed values, any shape.
    bits : int or Tensor
        Bit width; a ``(C,)`` tensor gives one width per channel.
    channel_dim : int, optional
        Channel axis for one range per channel; None gives one range for the whole tensor.

    Returns
    -------
    delta, zero_point : Tensor
        Shape ``(C,)`` with ``channel_dim``, 0-d otherwise.
    """
    rows = _as_rows(x.detach().float(), channel_dim)
    qmax = _levels(_row_bits(bits, rows.shape[0], rows), rows)
    x_max = rows.amax(dim=1, keepdim=True).clamp_min(0.0)
    x_min = rows.amin(dim=1, keepdim=True).clamp_max(0.0)
    return _finish(*_range_to_affine(x_max, x_min, qmax), channel_dim)


@torch.no_grad()
def mse_range_search(
    x: torch.Tensor,
    bits: int | torch.Tensor,
    *,
    channel_dim: int | None = None,
    candidates: int = 80,
    p: float = 2.4,
    max_elements: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The "mse" initialisation: the shrunk range with the smallest L_p quantization error.

    Candidate ``i = 0 .. candidates - 1`` is the range ``(max * (1 - 0.01 i), min * (1 - 0.01 i))``
    of the raw ``max``/``min`` (per channel with ``channel_dim``); its error is
    ``mean |x - Q_i(x)|^p`` with ``Q_i`` the hard-rounding quantizer of that range. The first
    candidate with the smallest error wins (LAPQ-style, as in the public code).

    Parameters
    ----------
    x : Tensor
        Observed values, any shape.
    bits : int or Tensor
        Bit width; a ``(C,)`` tensor gives one width per channel (OMQ's mixed widths).
    channel_dim : int, optional
        Channel axis for one range per channel; None gives one range for the whole tensor.
    candidates : int
        Number of shrink steps of 1 % each.
    p : float
        Exponent of the error.
    max_elements : int, optional
        When a channel has more elements, evaluate the error on this many drawn with replacement
        under a fixed seed (the range still comes from all elements). None uses every element.

    Returns
    -------
    delta, zero_point : Tensor
        Shape ``(C,)`` with ``channel_dim``, 0-d otherwise.
    """
    rows = _as_rows(x.detach().float(), channel_dim)
    qmax = _levels(_row_bits(bits, rows.shape[0], rows), rows)
    x_max = rows.amax(dim=1, keepdim=True)
    x_min = rows.amin(dim=1, keepdim=True)
    if max_elements is not None and rows.shape[1] > max_elements:
        # A fixed pseudo-random subset: a stride could alias with the spatial layout.
        index = torch.randint(rows.shape[1], (max_elements,), generator=torch.Generator().manual_seed(0))
        rows = rows[:, index.to(rows.device)]
    # Candidates in chunks of about 2^15 elements, one (K, C, N) block each: cache-sized
    # temporaries are several times faster on a CPU than one (80, C, N) block.
    shrink = 1.0 - 0.01 * torch.arange(candidates, dtype=rows.dtype, device=rows.device).view(-1, 1, 1)
    deltas, zero_points = _range_to_affine(x_max * shrink, x_min * shrink, qmax)  # (K, C, 1)
    chunk = max(1, 2**15 // rows.numel())
    errors = []
    for start in range(0, candidates, chunk):
        delta, zero_point = deltas[start:start + chunk], zero_points[start:start + chunk]
        x_int = torch.clamp(torch.round(rows / delta) + zero_point, torch.zeros_like(qmax), qmax)
        errors.append(((x_int - zero_point) * delta - rows).abs().pow(p).mean(dim=2))
    best = torch.cat(errors).argmin(dim=0)  # (C,), the first minimum
    channels = torch.arange(rows.shape[0], device=rows.device)
    best_delta, best_zero = deltas[best, channels], zero_points[best, channels]
    return _finish(best_delta, best_zero, channel_dim)


def init_range(x: torch.Tensor, bits, *, method: str, channel_dim: int | None = None, max_elements=None):
    """Dispatch to :func:`mse_range_search` (``"mse"``) or :func:`minmax_range` (``"max"``)."""
    if method == "mse":
        return mse_range_search(x, bits, channel_dim=channel_dim, max_elements=max_elements)
    if method == "max":
        return minmax_range(x, bits, channel_dim=channel_dim)
    raise ValueError(f"unknown range method {method!r}; use 'mse' or 'max'")


class WeightQuantizer(nn.Module):
    """Per-output-channel fake quantizer with learnable ``delta`` and ``z``.

    Parameters
    ----------
    weight_shape : sequence of int
        ``(C_out, C_in, kh, kw)`` or ``(C_out, C_in)``.
    bits : int
        Base bit width ``b``; ``channel_bits`` (buffer, ``(C_out,)`` int) holds each channel's width,
        ``b`` everywhere until OMQ sets ``b - 1`` / ``b + 1`` on some channels.

    Notes
    -----
    ``delta`` and ``zero_point`` have shape ``(C_out, 1, ...)``; call :meth:`initialize` before use.
    """

    def __init__(self, weight_shape: Sequence[int], bits: int):
        super().__init__()
        shape = (weight_shape[0],) + (1,) * (len(weight_shape) - 1)
        self.bits = int(bits)
        self.delta = nn.Parameter(torch.ones(shape))
        self.zero_point = nn.Parameter(torch.zeros(shape))
        self.register_buffer("channel_bits", torch.full((weight_shape[0],), self.bits, dtype=torch.long))

    @torch.no_grad()
    def initialize(self, weight: torch.Tensor, method: str = "mse") -> None:
        """Set ``delta``/``z`` per output channel from ``weight`` with the ``"mse"`` or ``"max"`` range."""
        delta, zero_point = init_range(weight, self.channel_bits, method=method, channel_dim=0)
        self.delta.copy_(delta.view_as(self.delta))
        self.zero_point.copy_(zero_point.view_as(self.zero_point))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        bits = self.channel_bits.view(self.delta.shape)
        return fake_quantize(weight, self.delta, self.zero_point, bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, channels={self.channel_bits.numel()}"


class TemporalActivationQuantizer(nn.Module):
    """Per-layer activation fake quantizer with one learnable ``(delta, z)`` per DDIM step.

    Parameters
    ----------
    n_steps : int
        Number of DDIM steps ``T``; the step in use is set by :meth:`set_step` (``0`` = the first,
        noisiest step).
    bits : int
        Bit width.

    Notes
    -----
    ``delta[i]``, ``zero_point[i]`` are 0-d parameters; the buffer ``calibrated`` (``(T,)`` bool)
    records which steps :meth:`initialize_step` has set.
    """

    def __init__(self, n_steps: int, bits: int):
        super().__init__()
        if n_steps < 1:
            raise ValueError("n_steps must be at least 1")
        self.n_steps = int(n_steps)
        self.bits = int(bits)
        self.step = 0
        self.delta = nn.ParameterList([nn.Parameter(torch.tensor(1.0)) for _ in range(n_steps)])
        self.zero_point = nn.ParameterList([nn.Parameter(torch.tensor(0.0)) for _ in range(n_steps)])
        self.register_buffer("calibrated", torch.zeros(n_steps, dtype=torch.bool))

    def set_step(self, step: int) -> None:
        """Select the ``(delta, z)`` pair of DDIM iteration ``step`` (0-based, 0 = noisiest)."""
        if not 0 <= step < self.n_steps:
            raise IndexError(f"step {step} outside 0..{self.n_steps - 1}")
        self.step = int(step)

    @torch.no_grad()
    def initialize_step(self, x: torch.Tensor, method: str = "mse", *, step: int | None = None,
                        max_elements: int | None = None) -> None:
        """Set the pair of ``step`` (default: the current one) from observed activations ``x``."""
        step = self.step if step is None else step
        delta, zero_point = init_range(x, self.bits, method=method, max_elements=max_elements)
        self.delta[step].copy_(delta)
        self.zero_point[step].copy_(zero_point)
        self.calibrated[step] = True

    @torch.no_grad()
    def fill_uncalibrated(self) -> None:
        """Copy each uncalibrated step's pair from the nearest calibrated step (ties: the earlier one)."""
        done = torch.nonzero(self.calibrated).flatten().tolist()
        if not done:
            return
        for step in range(self.n_steps):
            if not self.calibrated[step]:
                source = min(done, key=lambda s: (abs(s - step), s))
                self.delta[step].copy_(self.delta[source])
                self.zero_point[step].copy_(self.zero_point[source])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize(x, self.delta[self.step], self.zero_point[self.step], self.bits)

    def extra_repr(self) -> str:
        return f"n_steps={self.n_steps}, bits={self.bits}"


class QuantLayer(nn.Module):
    """A ``Conv2d`` or ``Linear`` with fake-quantized weights and inputs, optional QA-LoRA and smoothing.

    ``y = f(Q_a(x / s), Q_w((W + dW) * s)) + bias`` with ``f`` the convolution or linear map,
    ``s`` the per-input-channel smoothing factors (OMQ step 1; absent = 1), ``dW`` the LoRA update
    and ``Q_w`` / ``Q_a`` the weight and per-step activation quantizers.

    Parameters
    ----------
    module : nn.Conv2d or nn.Linear
        The full-precision layer; its weight and bias are copied into frozen buffers.
    w_bits, a_bits : int
        Weight and activation bit widths.
    n_steps : int
        DDIM steps of the temporal activation quantizer.
    lora_rank : int
        LoRA rank ``r`` (0: no LoRA). Linear: ``A`` is ``in -> r``, ``B`` is ``r -> out``. Conv:
        ``A`` has ``r`` outputs and the layer's kernel, stride, padding and dilation; ``B`` maps
        ``r -> out`` with the same kernel size (the public code). ``A`` is Kaiming-uniform
        (``a = sqrt(5)``), ``B`` zeros, so ``dW = 0`` at start.
    generator : torch.Generator, optional
        For the LoRA ``A`` initialisation.

    Attributes
    ----------
    quantize_weights, quantize_acts : bool
        Switch weight / activation quantization off (full precision) for that side.
    is_boundary : bool
        One of the first three / last quantized layers (8 bits, no LoRA/OMQ, not trained).
    smooth : Tensor or None
        ``(C_in,)`` smoothing factors ``s``.
    act_calibration : str or None
        While set (``"mse"``/``"max"``), each forward initialises the current step's activation range.
    """

    def __init__(self, module: nn.Conv2d | nn.Linear, w_bits: int, a_bits: int, n_steps: int, *,
                 lora_rank: int = 0, generator: torch.Generator | None = None):
        super().__init__()
        if isinstance(module, nn.Conv2d):
            self.kind = "conv"
            self.conv_kwargs = dict(stride=module.stride, padding=module.padding, dilation=module.dilation,
                                    groups=module.groups)
            if module.padding_mode != "zeros":
                raise ValueError("only zero-padded convolutions are supported")
        elif isinstance(module, nn.Linear):
            self.kind = "linear"
            self.conv_kwargs = {}
        else:
            raise TypeError(f"expected Conv2d or Linear, got {type(module).__name__}")
        weight = module.weight.detach().clone()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if module.bias is None else module.bias.detach().clone())
        self.register_buffer("smooth", None)
        self.out_channels, self.in_channels = weight.shape[0], weight.shape[1]
        self.w_bits, self.a_bits = int(w_bits), int(a_bits)
        self.weight_quantizer = WeightQuantizer(weight.shape, w_bits)
        self.act_quantizer = TemporalActivationQuantizer(n_steps, a_bits)
        self.quantize_weights = True
        self.quantize_acts = True
        self.is_boundary = False
        self.act_calibration: str | None = None
        self.act_max_elements: int | None = None
        self.lora_rank = int(lora_rank)
        self.lora_A: nn.Module | None = None
        self.lora_B: nn.Module | None = None
        if lora_rank > 0:
            self._build_lora(module, lora_rank, generator)

    def _build_lora(self, module, rank: int, generator) -> None:
        if self.kind == "linear":
            self.lora_A = nn.Linear(self.in_channels, rank, bias=False)
            self.lora_B = nn.Linear(rank, self.out_channels, bias=False)
        else:
            if module.groups != 1:
                raise ValueError("LoRA on grouped convolutions is not supported")
            self.lora_A = nn.Conv2d(self.in_channels, rank, module.kernel_size, module.stride, module.padding,
                                    module.dilation, bias=False)
            self.lora_B = nn.Conv2d(rank, self.out_channels, module.kernel_size, bias=False)
        self.lora_A.to(self.weight)
        self.lora_B.to(self.weight)
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5), generator=generator)
            nn.init.zeros_(self.lora_B.weight)

    def lora_delta(self) -> torch.Tensor | None:
        """LoRA weight update ``dW``, the layer's weight shape, or None without LoRA.

        Linear: ``dW = B A`` (``(out, r) @ (r, in)``). Conv: per kernel tap ``(u, v)``,
        ``dW[:, :, u, v] = B[:, :, u, v] @ A[:, :, u, v]`` (the public code's merge). For 1x1 kernels
        this equals running ``A`` then ``B``; for ``k x k`` kernels it equals, per tap, ``A``
        restricted to that tap followed by ``B``'s tap as a 1x1 conv, summed over taps (two ``k x k``
        convolutions in sequence would instead have a ``2k - 1`` receptive field).
        """
        if self.lora_A is None:
            return None
        a, b = self.lora_A.weight, self.lora_B.weight
        if self.kind == "linear":
            return b @ a
        return torch.einsum("orhw,rihw->oihw", b, a)

    def merged_weight(self) -> torch.Tensor:
        """``W + dW``: the full-precision weight with the LoRA update merged in (differentiable in ``dW``)."""
        delta = self.lora_delta()
        return self.weight if delta is None else self.weight + delta

    def _input_view(self, factors: torch.Tensor, ndim: int) -> torch.Tensor:
        """Per-input-channel factors shaped to broadcast over an input with ``ndim`` dims."""
        return factors.view(1, -1, 1, 1) if self.kind == "conv" else factors.view((1,) * (ndim - 1) + (-1,))

    def smoothed_weight(self) -> torch.Tensor:
        """``(W + dW) * s`` (``s`` on the input-channel axis), the tensor the weight quantizer sees."""
        weight = self.merged_weight()
        if self.smooth is None:
            return weight
        return weight * self.smooth.view((1, -1) + (1,) * (weight.dim() - 2))

    @property
    def omq_masks(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(high, mid, low)`` boolean ``(C_out,)`` masks: channels at ``b + 1``, ``b`` and fewer bits."""
        bits = self.weight_quantizer.channel_bits
        return bits > self.w_bits, bits == self.w_bits, bits < self.w_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.smoothed_weight()
        if self.smooth is not None:
            x = x / self._input_view(self.smooth, x.dim())
        if self.quantize_weights:
            weight = self.weight_quantizer(weight)
        if self.quantize_acts:
            if self.act_calibration is not None:
                self.act_quantizer.initialize_step(x, self.act_calibration, max_elements=self.act_max_elements)
            x = self.act_quantizer(x)
        return self.apply_weight(x, weight)

    def apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The layer's map with a given weight: ``conv2d(x, weight) + bias`` or ``x weight^T + bias``."""
        if self.kind == "conv":
            return F.conv2d(x, weight, self.bias, **self.conv_kwargs)
        return F.linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        return (f"{self.kind}, in={self.in_channels}, out={self.out_channels}, w_bits={self.w_bits}, "
                f"a_bits={self.a_bits}, lora_rank={self.lora_rank}, boundary={self.is_boundary}")


def is_full_precision_name(name: str) -> bool:
    """True for skip/shortcut 1x1 convs and downsampling convs (see :data:`FULL_PRECISION_NAMES`)."""
    return any(part in FULL_PRECISION_NAMES for part in name.split("."))


def quant_layers(model: nn.Module) -> list[tuple[str, QuantLayer]]:
    """``(name, layer)`` of every :class:`QuantLayer` in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QuantLayer)]


def quantize_model(unet: nn.Module, w_bits: int, a_bits: int, n_steps: int, *, lora_rank: int = 0,
                   first_last_8bit: bool = True, boundary_bits: int = 8, inplace: bool = False,
                   generator: torch.Generator | None = None, full_precision: Collection[str] = ()) -> nn.Module:
    """Replace the ``Conv2d``/``Linear`` layers of a UNet by :class:`QuantLayer`.

    Parameters
    ----------
    unet : nn.Module
        E.g. a diffusers ``UNet2DModel``.
    w_bits, a_bits : int
        Weight / activation bit widths of the inner layers.
    n_steps : int
        DDIM steps of the temporal activation quantizers.
    lora_rank : int
        LoRA rank of the inner layers (0: none). Boundary layers never get LoRA.
    first_last_8bit : bool
        Put the first three and the last quantized layers (registration order, counted on this
        model) at ``boundary_bits`` for weights and activations.
    inplace : bool
        Modify ``unet`` itself instead of a deep copy.
    generator : torch.Generator, optional
        For the LoRA initialisation.
    full_precision : collection of str
        Names of further ``Conv2d``/``Linear`` modules to keep in full precision (e.g. layers that
        are ``Conv1d`` in the original model, which the public code leaves unquantized).

    Returns
    -------
    nn.Module
        The model with its quantizers uninitialised: call :func:`calibrate` (and OMQ) next.
    """
    model = unet if inplace else copy.deepcopy(unet)
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
               and not is_full_precision_name(name) and name not in full_precision]
    boundary = {0, 1, 2, len(targets) - 1} if first_last_8bit else set()
    replacement = {}
    for index, (_, module) in enumerate(targets):
        is_boundary = index in boundary
        bits_w, bits_a = (boundary_bits, boundary_bits) if is_boundary else (w_bits, a_bits)
        layer = QuantLayer(module, bits_w, bits_a, n_steps, lora_rank=0 if is_boundary else lora_rank,
                           generator=generator)
        layer.is_boundary = is_boundary
        replacement[id(module)] = layer
    # Replace every attribute that refers to a target (diffusers registers some modules twice).
    for parent in list(model.modules()):
        for key, child in list(parent._modules.items()):
            if child is not None and id(child) in replacement:
                setattr(parent, key, replacement[id(child)])
    return model


def set_step(model: nn.Module, step: int) -> None:
    """Select DDIM iteration ``step`` in every temporal activation quantizer of ``model``."""
    for m in model.modules():
        if isinstance(m, TemporalActivationQuantizer):
            m.set_step(step)


def temporal_model_fn(model: nn.Module):
    """Noise predictor ``(x_t, t, step_index, condition) -> eps`` that first selects the step.

    For samplers that pass the DDIM iteration index (e.g. ``methods.diffusion.sampling``'s
    ``model_fn``); the step must be the index of the quantizers' ``n_steps`` grid.
    """

    def predict(x: torch.Tensor, t, step_index: int, condition: Condition | None = None) -> torch.Tensor:
        set_step(model, step_index)
        return predict_eps(model, x, t, condition)

    return predict


def set_quant_state(model: nn.Module, weights: bool = True, acts: bool = True) -> None:
    """Switch weight / activation fake quantization on or off in every :class:`QuantLayer`."""
    for _, layer in quant_layers(model):
        layer.quantize_weights, layer.quantize_acts = weights, acts


class CalibrationBatch(NamedTuple):
    """Inputs of one calibration forward at DDIM iteration ``step``.

    ``x`` is x_t (B, C, H, W), ``t`` the timesteps (B,) or a scalar, ``condition`` a conditional
    model's :data:`~methods.diffusion.sampling.Condition` for the B samples (None: unconditional).
    Plain ``(x, t, step)`` tuples are read as unconditional batches.
    """

    x: torch.Tensor
    t: torch.Tensor
    step: int
    condition: Condition | None = None


def _timesteps(t, batch: int) -> torch.Tensor:
    t = torch.as_tensor(t)
    return t.expand(batch) if t.dim() == 0 else t


def stack_calibration(batches: Sequence[CalibrationBatch | tuple]
                      ) -> tuple[torch.Tensor, torch.Tensor, Condition | None]:
    """The batches concatenated in order: x_t (B, C, H, W), timesteps (B,) and their condition."""
    batches = [CalibrationBatch(*b) for b in batches]
    return (torch.cat([b.x for b in batches]), torch.cat([_timesteps(b.t, b.x.shape[0]) for b in batches]),
            cat_conditions([b.condition for b in batches]))


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[CalibrationBatch | tuple], *,
              weight_method: str = "mse", act_method: str = "mse", max_elements: int | None = 2**14) -> list[int]:
    """Initialise all quantizer ranges of a quantized UNet.

    Weights: per output channel from ``(W + dW) * s`` with each channel's bit width. Activations:
    the calibration inputs are grouped by DDIM step; per step, one forward of the step's
    concatenated inputs sets every layer's pair for that step from the input it receives, layer
    after layer (upstream layers are already quantized, as in the public code's initialising
    forward). Steps without calibration inputs copy the nearest calibrated step.

    Parameters
    ----------
    model : nn.Module
        Output of :func:`quantize_model`, called as ``model(x_t, t, **condition)``.
    batches : iterable of CalibrationBatch
        ``(x_t (B, C, H, W), t (B,) or scalar, step[, condition])`` with ``step`` the DDIM iteration index.
    weight_method, act_method : {"mse", "max"}
        Range initialisation.
    max_elements : int, optional
        Subsample for the activation L_p error (see :func:`mse_range_search`).

    Returns
    -------
    list of int
        The calibrated steps, ascending.
    """
    layers = [layer for _, layer in quant_layers(model)]
    for layer in layers:
        layer.weight_quantizer.initialize(layer.smoothed_weight().detach(), weight_method)
    by_step: dict[int, list[CalibrationBatch]] = {}
    for batch in (CalibrationBatch(*b) for b in batches):
        by_step.setdefault(int(batch.step), []).append(batch)
    for step in sorted(by_step):
        set_step(model, step)
        x, t, condition = stack_calibration(by_step[step])
        for layer in layers:
            layer.act_calibration, layer.act_max_elements = act_method, max_elements
        try:
            predict_eps(model, x, t, condition)
        finally:
            for layer in layers:
                layer.act_calibration = None
    for layer in layers:
        layer.act_quantizer.fill_uncalibrated()
    return sorted(by_step)


def minmax_ptq(unet: nn.Module, w_bits: int, a_bits: int, n_steps: int,
               batches: Iterable[CalibrationBatch | tuple], *, first_last_8bit: bool = True,
               inplace: bool = False, full_precision: Collection[str] = ()) -> nn.Module:
    """Plain min-max post-training quantization: no LoRA, no range search, "max" ranges everywhere.

    Same layer selection, 8-bit boundary layers and per-step activation ranges as
    :func:`quantize_model` / :func:`calibrate`.
    """
    model = quantize_model(unet, w_bits, a_bits, n_steps, first_last_8bit=first_last_8bit, inplace=inplace,
                           full_precision=full_precision)
    calibrate(model, batches, weight_method="max", act_method="max")
    return model


@dataclass(frozen=True)
class ModelSize:
    """Storage of a fake-quantized model, with LoRA merged into the weights.

    Attributes
    ----------
    mean_weight_bits : float
        Mean bit width of the quantized layers' weights, weighted by element count.
    mean_bits : float
        Mean bit width over all original parameters and buffers of the model (weights of quantized
        layers at their widths, everything else at 32).
    size_bytes : float
        Those bits / 8, plus quantizer parameters and smoothing factors at 32 bits.
    size_mb : float
        ``size_bytes / 2**20``.
    fp32_size_mb : float
        The same model at 32 bits everywhere, without quantizer parameters, ``/ 2**20``.
    """

    mean_weight_bits: float
    mean_bits: float
    size_bytes: float
    size_mb: float
    fp32_size_mb: float


def effective_bits(model: nn.Module) -> ModelSize:
    """Average bit width and size of a quantized model (see :class:`ModelSize`)."""
    layers = quant_layers(model)
    quant_weight_bits = quant_weight_count = 0.0
    other_count = overhead_count = 0.0
    for _, layer in layers:
        per_channel = layer.weight[0].numel()
        quant_weight_bits += float(layer.weight_quantizer.channel_bits.sum()) * per_channel
        quant_weight_count += layer.weight.numel()
        other_count += 0 if layer.bias is None else layer.bias.numel()
        overhead_count += layer.weight_quantizer.delta.numel() * 2 + layer.act_quantizer.n_steps * 2
        overhead_count += 0 if layer.smooth is None else layer.smooth.numel()
    inside_layers = {id(sub) for _, layer in layers for sub in layer.modules()}
    for module in model.modules():
        if id(module) in inside_layers:
            continue
        other_count += sum(p.numel() for p in module.parameters(recurse=False))
        other_count += sum(b.numel() for b in module.buffers(recurse=False) if b.is_floating_point())
    total_count = quant_weight_count + other_count
    stored_bits = quant_weight_bits + 32.0 * other_count
    size_bytes = (stored_bits + 32.0 * overhead_count) / 8.0
    return ModelSize(
        mean_weight_bits=quant_weight_bits / quant_weight_count if quant_weight_count else float("nan"),
        mean_bits=stored_bits / total_count if total_count else float("nan"),
        size_bytes=size_bytes,
        size_mb=size_bytes / 2**20,
        fp32_size_mb=4.0 * total_count / 2**20,
    )


def bit_allocation(model: nn.Module) -> dict[str, float]:
    """Mean weight bit width of each quantized layer (over its output channels), by module name."""
    return {name: float(layer.weight_quantizer.channel_bits.float().mean()) for name, layer in quant_layers(model)}
