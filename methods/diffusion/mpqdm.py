"""MPQ-DM: mixed-precision quantization for extremely low-bit diffusion models (AAAI 2025, arXiv 2412.11549).

Written from the public code ``cantbebetter2/MPQ-DM`` as docs/papers/mpqdm.md describes it (the
paper's own equations were not available to us). The quantizer, QA-LoRA
layers and calibration it builds on are in :mod:`methods.diffusion.quant`.

- **OMQ**, outlier-driven mixed quantization (:func:`apply_omq`, :func:`omq_allocate`): per layer,
  SmoothQuant-like factors ``s = sqrt(max|X| / max|W|)`` per input channel (weights times ``s``,
  activations divided by ``s``); the kurtosis ``E[(w - mu)^4] / sigma^4`` (unbiased ``sigma``) of
  each smoothed output channel; the ``k`` most kurtic channels at ``b + 1`` bits, the ``k`` least
  kurtic at ``b - 1`` (at least 1), the rest at ``b``, so the mean stays ``b``; ``k`` chosen from an
  explicit list by the MSE between the layer's full-precision and weight-quantized outputs on the
  calibration batch.
- **TRD**, time-smoothed relation distillation (:func:`trd_loss`, :class:`TimeSmoothedRelation`):
  the last up block's output of both UNets, averaged over ``N = 2`` adjacent steps, L2-normalised
  over channels; per sample the ``HW x HW`` relation ``F^T F`` with a softmax over the last axis
  (``tau = 1``); ``100 * sum KL(p_fp || p_q)``.
- **Data-free online distillation** (:class:`MPQDMTrainer`): along a full-precision DDIM trajectory
  (``eta = 0``), at each step both UNets predict ``eps``; one AdamW step on the summed MSE (+ TRD);
  the next ``x_t`` comes from the FP ``eps``.

Defects of the public code avoided here (docs/papers/mpqdm.md): the quantized-side TRD features stay
attached to the graph (the public hooks store detached clones, so TRD sends no gradient); the OMQ
search list is explicit and recorded (public: ``k in {0, c_out // 10}`` with the wider loop
commented out); the number of quantized layers comes from the model (public: 265).

Choices of ours where the public code is silent or does not fit this suite:

- Default OMQ search ``k = j * (c_out // 10)``, ``j = 0 .. 5``: ``k = 0`` (uniform) plus five group
  counts of size ``c_out / 10`` (the secondary summary's "group size c_out/10, at most 5 group
  counts"; the same list as the public code's commented-out loop). Each candidate's weights use the
  layer's "mse" range per channel (public: "max" during the search, "mse" afterwards); activations
  are not quantized during the search (as in the public code).
- Smoothing factors and OMQ use full-precision activations of the calibration batch (public: the
  partially quantized network of its single initialising forward). Where ``max|X|`` or ``max|W|`` of
  a channel is 0, ``s = 1``.
- One optimizer step per DDIM step means the quantized features of the earlier step in a TRD window
  had their graph freed by that step's backward, and their parameters have since changed; the
  window's gradient therefore flows through the current step's features only (the earlier ones are
  kept as constants). The trainer detaches the history after each step.
- Conditional models (the class-conditional LDM-4 with classifier-free guidance,
  :class:`~methods.diffusion.conditional.ClassConditionalUNet`) take their condition as batch-aligned
  keyword tensors (:data:`~methods.diffusion.sampling.Condition`): the calibration inputs keep the
  condition they were collected under, and the trainer draws one per epoch (the public code: 4
  random classes x 4 samples, CFG 3.0), which the full-precision and quantized models share.
- LoRA learning rate per layer: the mean per-channel weight step size (the ``delta`` each channel
  uses) / 2500; the public code sums the three masked quantizers' ``delta`` (placeholders included)
  and divides by ``C_out``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.diffusion.quant import (
    CalibrationBatch,
    QuantLayer,
    calibrate,
    fake_quantize,
    init_range,
    quant_layers,
    quantize_model,
    set_step,
    stack_calibration,
)
from methods.diffusion.sampling import (
    Condition,
    ddim_trajectory,
    predict_eps,
    run_trajectory,
)

# ---------------------------------------------------------------------------------------------
# OMQ
# ---------------------------------------------------------------------------------------------

def smoothing_factors(act_absmax: torch.Tensor, weight_absmax: torch.Tensor) -> torch.Tensor:
    """Per-input-channel smoothing ``s = sqrt(max|X| / max|W|)``; weights are multiplied by ``s``.

    Parameters
    ----------
    act_absmax, weight_absmax : Tensor
        ``(C_in,)`` maxima of ``|X|`` (over batch and positions) and ``|W|`` (over output channels and
        kernel taps).

    Returns
    -------
    Tensor
        ``(C_in,)``; 1 where either maximum is 0. Activations are divided by ``s``, so
        ``f(X / s, W * s) = f(X, W)`` before quantization (the paper's activation-side factor
        ``delta_i = sqrt(max|W_i| / max|X_i|) = 1 / s_i``, per the secondary summary).
    """
    valid = (act_absmax > 0) & (weight_absmax > 0)
    ratio = torch.where(valid, act_absmax / torch.where(valid, weight_absmax, 1.0), torch.ones_like(act_absmax))
    return ratio.sqrt()


def activation_absmax(x: torch.Tensor, kind: str) -> torch.Tensor:
    """``max|X|`` per input channel: conv inputs ``(B, C, H, W)``, linear inputs ``(..., C)``."""
    if kind == "conv":
        return x.abs().amax(dim=(0, 2, 3))
    return x.abs().reshape(-1, x.shape[-1]).amax(dim=0)


def weight_absmax(weight: torch.Tensor) -> torch.Tensor:
    """``max|W|`` per input channel of a ``(C_out, C_in, ...)`` weight."""
    return weight.abs().transpose(0, 1).reshape(weight.shape[1], -1).amax(dim=1)


def kurtosis(weight: torch.Tensor) -> torch.Tensor:
    """Kurtosis of each output channel, ``E[(w - mu)^4] / sigma^4`` with the unbiased ``sigma``.

    Not the excess kurtosis and not the biased ``sigma`` of ``scipy.stats.kurtosis``'s default
    (normal ~ 3, Laplace ~ 6 for large samples).

    Parameters
    ----------
    weight : Tensor
        ``(C_out, ...)``; each channel's entries are flattened.

    Returns
    -------
    Tensor
        ``(C_out,)``.
    """
    w = weight.reshape(weight.shape[0], -1)
    centred = w - w.mean(dim=1, keepdim=True)
    return centred.pow(4).mean(dim=1) / w.std(dim=1, unbiased=True).pow(4)


def omq_masks(kurt: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OMQ's three channel groups from the kurtosis.

    Parameters
    ----------
    kurt : Tensor
        ``(C_out,)`` kurtosis per output channel.
    k : int
        Group size, ``0 <= 2 k <= C_out``.

    Returns
    -------
    high, mid, low : Tensor
        ``(C_out,)`` boolean masks, an exact partition: the ``k`` highest-kurtosis channels
        (``b + 1`` bits), the rest (``b``), the ``k`` lowest (``b - 1``). Ties are broken by a stable
        sort on the channel index.
    """
    n = kurt.numel()
    if not 0 <= 2 * k <= n:
        raise ValueError(f"need 0 <= 2k <= C_out, got k={k}, C_out={n}")
    order = torch.argsort(kurt, stable=True)
    low = torch.zeros(n, dtype=torch.bool, device=kurt.device)
    high = torch.zeros_like(low)
    low[order[:k]] = True
    high[order[n - k:]] = True
    return high, ~(high | low), low


def omq_channel_bits(masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor], bits: int) -> torch.Tensor:
    """``(C_out,)`` int bit widths: ``b + 1`` (high), ``b`` (mid), ``max(b - 1, 1)`` (low).

    With ``b >= 2`` the mean is exactly ``b``.
    """
    high, _, low = masks
    channel_bits = torch.full(high.shape, bits, dtype=torch.long, device=high.device)
    channel_bits[high] = bits + 1
    channel_bits[low] = max(bits - 1, 1)
    return channel_bits


def default_k_choices(c_out: int, group_fraction: float = 0.1, max_groups: int = 5) -> list[int]:
    """OMQ search list ``k = j * floor(group_fraction * C_out)``, ``j = 0 .. max_groups``, deduplicated."""
    group = int(group_fraction * c_out)
    return sorted({j * group for j in range(max_groups + 1) if 2 * j * group <= c_out})


@dataclass
class OMQResult:
    """One layer's OMQ allocation.

    Attributes
    ----------
    k : int
        Chosen group size.
    k_choices : list of int
        The searched sizes, in order.
    errors : list of float
        Output MSE of each candidate (same order).
    kurtosis : Tensor
        ``(C_out,)`` kurtosis of the smoothed weight.
    smooth : Tensor
        ``(C_in,)`` smoothing factors.
    """

    k: int
    k_choices: list[int]
    errors: list[float]
    kurtosis: torch.Tensor
    smooth: torch.Tensor


@torch.no_grad()
def omq_allocate(layer: QuantLayer, calib_inputs: torch.Tensor, bits: int | None = None,
                 k_choices: Sequence[int] | None = None, *, weight_method: str = "mse") -> OMQResult:
    """OMQ for one layer: smoothing, kurtosis, and the group size with the smallest output MSE.

    Sets ``layer.smooth``, the weight quantizer's ``channel_bits`` and its ranges (those of the
    chosen candidate).

    Parameters
    ----------
    layer : QuantLayer
        The layer (its merged weight ``W + dW`` is used).
    calib_inputs : Tensor
        The layer's full-precision input on the calibration batch, ``(B, C_in, H, W)`` or ``(..., C_in)``.
    bits : int, optional
        Base weight width ``b`` (default: ``layer.w_bits``).
    k_choices : sequence of int, optional
        Group sizes to search (default :func:`default_k_choices`). Ties keep the earlier entry.
    weight_method : {"mse", "max"}
        Per-channel range of each candidate's weight quantizer.

    Returns
    -------
    OMQResult
    """
    bits = layer.w_bits if bits is None else int(bits)
    x = calib_inputs.detach()
    weight = layer.merged_weight().detach()
    smooth = smoothing_factors(activation_absmax(x, layer.kind), weight_absmax(weight))
    smoothed = weight * smooth.view((1, -1) + (1,) * (weight.dim() - 2))
    x_smoothed = x / layer._input_view(smooth, x.dim())
    kurt = kurtosis(smoothed)
    choices = default_k_choices(layer.out_channels) if k_choices is None else [int(k) for k in k_choices]
    fp_out = layer.apply_weight(x, weight)
    errors, candidates = [], []
    for k in choices:
        channel_bits = omq_channel_bits(omq_masks(kurt, k), bits)
        delta, zero_point = init_range(smoothed, channel_bits, method=weight_method, channel_dim=0)
        shape = layer.weight_quantizer.delta.shape
        w_q = fake_quantize(smoothed, delta.view(shape), zero_point.view(shape), channel_bits.view(shape))
        errors.append(float(F.mse_loss(layer.apply_weight(x_smoothed, w_q), fp_out)))
        candidates.append((channel_bits, delta.view(shape), zero_point.view(shape)))
    best = min(range(len(choices)), key=lambda i: (errors[i], i))
    layer.smooth = smooth
    quantizer = layer.weight_quantizer
    quantizer.channel_bits.copy_(candidates[best][0])
    quantizer.delta.copy_(candidates[best][1])
    quantizer.zero_point.copy_(candidates[best][2])
    return OMQResult(k=choices[best], k_choices=choices, errors=errors, kurtosis=kurt, smooth=smooth)


@torch.no_grad()
def apply_omq(model: nn.Module, x: torch.Tensor, t: torch.Tensor, condition: Condition | None = None, *,
              k_choices: Callable[[int], Sequence[int]] | None = None,
              weight_method: str = "mse") -> dict[str, OMQResult]:
    """Run OMQ on every inner (non-boundary) quantized layer of ``model``.

    One full-precision forward of the calibration batch; each layer's allocation runs on the input
    it receives. Call before :func:`~methods.diffusion.quant.calibrate` (the activation ranges are
    then set on the smoothed inputs ``x / s``).

    Parameters
    ----------
    model : nn.Module
        Output of :func:`~methods.diffusion.quant.quantize_model`, called as ``model(x, t, **condition)``.
    x, t : Tensor
        Calibration batch ``(B, C, H, W)`` and its timesteps ``(B,)`` (the public code uses 32
        samples across time steps).
    condition : Condition, optional
        The batch's condition (a conditional model's).
    k_choices : callable, optional
        ``C_out -> list of k`` (default :func:`default_k_choices`).

    Returns
    -------
    dict
        Module name -> :class:`OMQResult`.
    """
    layers = quant_layers(model)
    saved = [(layer.quantize_weights, layer.quantize_acts) for _, layer in layers]
    results: dict[str, OMQResult] = {}
    handles = []
    for name, layer in layers:
        layer.quantize_weights = layer.quantize_acts = False
        if layer.is_boundary:
            continue

        def hook(module, args, name=name):
            choices = None if k_choices is None else k_choices(module.out_channels)
            results[name] = omq_allocate(module, args[0], k_choices=choices, weight_method=weight_method)

        handles.append(layer.register_forward_pre_hook(hook))
    try:
        predict_eps(model, x, t, condition)
    finally:
        for handle in handles:
            handle.remove()
        for (_, layer), (weights, acts) in zip(layers, saved):
            layer.quantize_weights, layer.quantize_acts = weights, acts
    return results


GROUP_LABEL_BITS = 2  # which of OMQ's three groups an output channel is in: ceil(log2 3) bits


@dataclass(frozen=True)
class OMQStorage:
    """What OMQ's allocation stores beyond uniform ``b``-bit weights of the same layers, in bits.

    Over the inner (non-boundary) quantized layers, each with base width ``b``, output-channel widths
    ``b_c`` and ``n_c`` weights per output channel:

    Attributes
    ----------
    mixed_bits : float
        ``sum_c (b_c - b) n_c``: the weight bits the mean-preserving allocation adds (0 whenever the low
        group's ``b - 1`` is at least 1 bit, so at W2 too).
    outlier_bits : float
        ``sum_{c: b_c > b} (b_c - b) n_c``: the outlier (high-kurtosis) channels' extra bits alone, i.e. the
        allocation with its outliers raised and no channel lowered (our reading of "MPQ-DM[+]").
    smoothing_bits : float
        32 bits per input channel of each layer with smoothing factors ``s`` (stored at full precision).
    group_bits : float
        :data:`GROUP_LABEL_BITS` per output channel of each layer whose widths are mixed (which group a
        channel is in).
    """

    mixed_bits: float
    outlier_bits: float
    smoothing_bits: float
    group_bits: float

    @property
    def plus_mb(self) -> float:
        """Outlier bits + smoothing factors + group labels, in MB (2^20 bytes)."""
        return (self.outlier_bits + self.smoothing_bits + self.group_bits) / 8.0 / 2**20

    @property
    def mean_preserving_mb(self) -> float:
        """Mixed weight bits + smoothing factors + group labels, in MB (2^20 bytes)."""
        return (self.mixed_bits + self.smoothing_bits + self.group_bits) / 8.0 / 2**20


def omq_storage(model: nn.Module) -> OMQStorage:
    """:class:`OMQStorage` of a quantized model: zero for one without OMQ (uniform widths, no smoothing)."""
    mixed = outlier = smoothing = groups = 0.0
    for _, layer in quant_layers(model):
        if layer.is_boundary:
            continue
        extra = (layer.weight_quantizer.channel_bits - layer.w_bits).double()
        per_channel = layer.weight[0].numel()
        mixed += float(extra.sum()) * per_channel
        outlier += float(extra.clamp_min(0).sum()) * per_channel
        smoothing += 0.0 if layer.smooth is None else 32.0 * layer.smooth.numel()
        groups += GROUP_LABEL_BITS * extra.numel() if bool((extra != 0).any()) else 0.0
    return OMQStorage(mixed, outlier, smoothing, groups)


# ---------------------------------------------------------------------------------------------
# TRD
# ---------------------------------------------------------------------------------------------

def relation_map(features: torch.Tensor, tau: float = 1.0, *, log: bool = False) -> torch.Tensor:
    """Per-sample spatial relation distribution of channel-L2-normalised features.

    ``p = softmax(F^T F / tau)`` over the last axis, with ``F`` the ``(C, HW)`` feature of one sample
    normalised to unit L2 norm over channels at each position.

    Parameters
    ----------
    features : Tensor
        ``(B, C, H, W)``.
    tau : float
        Softmax temperature.
    log : bool
        Return ``log p`` (numerically stable) instead of ``p``.

    Returns
    -------
    Tensor
        ``(B, HW, HW)``; each row sums to 1 (``log=False``).
    """
    f = F.normalize(features.flatten(2), p=2, dim=1)
    logits = torch.bmm(f.transpose(1, 2), f) / tau
    return F.log_softmax(logits, dim=-1) if log else F.softmax(logits, dim=-1)


def trd_loss(fp_feats: torch.Tensor, q_feats: torch.Tensor, *, weight: float = 100.0, tau: float = 1.0) -> torch.Tensor:
    """Relation distillation ``weight * sum_{b, i} KL(p_fp[b, i, :] || p_q[b, i, :])``.

    Parameters
    ----------
    fp_feats, q_feats : Tensor
        ``(B, C, H, W)`` full-precision (target) and quantized features; gradients flow into
        ``q_feats`` (and into ``fp_feats`` too if it requires them).
    weight, tau : float
        Loss weight (100 in the public code) and softmax temperature (1).

    Returns
    -------
    Tensor
        0-d, summed over samples and relation rows.
    """
    log_p_fp = relation_map(fp_feats, tau, log=True)
    log_p_q = relation_map(q_feats, tau, log=True)
    return weight * F.kl_div(log_p_q, log_p_fp, reduction="sum", log_target=True)


class TimeSmoothedRelation:
    """TRD over windows of ``N`` adjacent steps: average the stored features, then :func:`trd_loss`.

    Parameters
    ----------
    window : int
        ``N``, steps per window (2 in the public code).
    weight, tau : float
        Passed to :func:`trd_loss`.

    Notes
    -----
    :meth:`push` stores one step's features and returns the loss at the window's last step (None
    before). Stored tensors are kept as given; a trainer that steps the optimizer between pushes
    calls :meth:`detach_history` after each backward, since the earlier graphs are then freed.
    """

    def __init__(self, window: int = 2, *, weight: float = 100.0, tau: float = 1.0):
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window, self.weight, self.tau = int(window), float(weight), float(tau)
        self._fp: list[torch.Tensor] = []
        self._q: list[torch.Tensor] = []

    def push(self, fp_feats: torch.Tensor, q_feats: torch.Tensor) -> torch.Tensor | None:
        """Store ``(B, C, H, W)`` features of one step; the window's loss at its last step, else None."""
        self._fp.append(fp_feats.detach())
        self._q.append(q_feats)
        if len(self._q) < self.window:
            return None
        fp_mean = torch.stack(self._fp).mean(dim=0)
        q_mean = torch.stack(self._q).mean(dim=0)
        self.reset()
        return trd_loss(fp_mean, q_mean, weight=self.weight, tau=self.tau)

    def detach_history(self) -> None:
        """Keep the stored quantized features as constants (their graph is gone after a backward)."""
        self._q = [q.detach() for q in self._q]

    def reset(self) -> None:
        """Drop the stored features (start of a trajectory)."""
        self._fp.clear()
        self._q.clear()


class _OutputTap:
    """Forward hook that keeps a module's latest output (detached or attached to the graph)."""

    def __init__(self, module: nn.Module, *, detach: bool):
        self.output: torch.Tensor | None = None
        self._detach = detach
        self._handle = module.register_forward_hook(self._store)

    def _store(self, module, args, output):
        output = output[0] if isinstance(output, tuple) else output
        self.output = output.detach() if self._detach else output

    def remove(self) -> None:
        self._handle.remove()


# ---------------------------------------------------------------------------------------------
# DDIM trajectories (UNets called as unet(x, t, **condition))
# ---------------------------------------------------------------------------------------------

def collect_calibration_inputs(fp_unet: nn.Module, scheduler, noise: torch.Tensor, n_steps: int, *,
                               eta: float = 1.0, generator: torch.Generator | None = None,
                               condition: Condition | None = None) -> list[CalibrationBatch]:
    """Calibration inputs ``(x_t, t, step)`` along a full-precision DDIM trajectory.

    The public code records a 250-step, ``eta = 1`` trajectory; here the trajectory uses the
    ``n_steps`` grid of the temporal quantizers, so each step's ranges come from its own inputs.

    Parameters
    ----------
    fp_unet : nn.Module
        Full-precision UNet.
    scheduler : diffusers.DDIMScheduler
    noise : Tensor
        ``x_T``, ``(B, C, H, W)``.
    n_steps : int
        DDIM steps.
    eta : float
        DDIM stochasticity (1.0 as in the public code's calibration run).
    generator : torch.Generator, optional
        For the DDIM noise when ``eta > 0``.
    condition : Condition, optional
        A conditional model's condition for the B samples (the public code: random classes, CFG 1.5).

    Returns
    -------
    list of CalibrationBatch
        ``(x_t (B, C, H, W), t (B,) long, step, condition)`` for ``step = 0 .. n_steps - 1``.
    """
    inputs = []

    def record(step: int, t: int, x: torch.Tensor) -> None:
        timesteps = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        inputs.append(CalibrationBatch(x.clone(), timesteps, step, condition))

    run_trajectory(ddim_trajectory(fp_unet, scheduler, noise, steps=n_steps, eta=eta, generator=generator,
                                   condition=condition), record)
    return inputs


# ---------------------------------------------------------------------------------------------
# Methods and the distillation
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MethodPreset:
    """A method of the comparison: QA-LoRA distillation with or without OMQ and TRD."""

    name: str
    omq: bool
    trd: bool


PRESETS = {
    # EfficientDM-like: quantizer + QA-LoRA distillation, no OMQ (no smoothing) and no TRD.
    "baseline": MethodPreset("baseline", omq=False, trd=False),
    "omq": MethodPreset("omq", omq=True, trd=False),
    "omq_trd": MethodPreset("omq_trd", omq=True, trd=True),
}


def prepare_quantized(fp_unet: nn.Module, preset: MethodPreset | str, w_bits: int, a_bits: int, n_steps: int,
                      calib: Sequence[CalibrationBatch | tuple], *, lora_rank: int = 32,
                      omq_samples: int = 32, k_choices: Callable[[int], Sequence[int]] | None = None,
                      generator: torch.Generator | None = None, weight_method: str = "mse",
                      act_method: str = "mse", full_precision: Collection[str] = ()
                      ) -> tuple[nn.Module, dict[str, OMQResult]]:
    """Quantize a copy of ``fp_unet`` for ``preset``: layers and LoRA, OMQ (if enabled), calibration.

    Parameters
    ----------
    fp_unet : nn.Module
        Full-precision UNet (left unchanged).
    preset : MethodPreset or str
        A :data:`PRESETS` entry or its name.
    w_bits, a_bits, n_steps, lora_rank : int
        See :func:`~methods.diffusion.quant.quantize_model`.
    calib : sequence of CalibrationBatch
        E.g. from :func:`collect_calibration_inputs`.
    omq_samples : int
        OMQ runs on this many calibration samples, evenly spaced over all of ``calib``.
    k_choices : callable, optional
        OMQ search list per ``C_out``.
    weight_method, act_method : {"mse", "max"}
        Range initialisation of the weight and activation quantizers (the public code's
        training script uses "mse" for both, its sampling script "max" for activations).
    full_precision : collection of str
        Further module names kept in full precision (see :func:`~methods.diffusion.quant.quantize_model`).

    Returns
    -------
    model, omq_results
        The calibrated quantized UNet and the per-layer OMQ records (empty without OMQ).
    """
    preset = PRESETS[preset] if isinstance(preset, str) else preset
    model = quantize_model(fp_unet, w_bits, a_bits, n_steps, lora_rank=lora_rank, generator=generator,
                           full_precision=full_precision)
    results: dict[str, OMQResult] = {}
    if preset.omq:
        x, t, condition = stack_calibration(calib)
        index = torch.linspace(0, x.shape[0] - 1, min(omq_samples, x.shape[0])).round().long()
        chosen = None if condition is None else {key: value[index] for key, value in condition.items()}
        results = apply_omq(model, x[index], t[index], chosen, k_choices=k_choices, weight_method=weight_method)
    calibrate(model, calib, weight_method=weight_method, act_method=act_method)
    return model, results


class MPQDMTrainer:
    """Data-free online distillation of a quantized UNet from its full-precision original.

    Per DDIM step ``i`` of a full-precision trajectory from fresh noise: ``eps_fp = fp(x_t, t)``,
    ``eps_q = q(x_t, t)`` (step ``i``'s activation ranges), loss ``sum (eps_q - eps_fp)^2`` plus TRD
    at the end of every window of ``N`` steps, one AdamW step, then ``x_{t-1}`` from ``eps_fp``
    (``eta = 0``). Learning rates (public code): per layer LoRA ``mean(delta_w) / 2500``, weight
    quantizer ``delta``/``z`` 1e-6, activation ``delta``/``z`` 5e-4; AdamW with torch's defaults
    otherwise, linear decay to 0 over ``epochs * n_steps`` updates without warm-up. Boundary
    (8-bit) layers are not trained.

    Parameters
    ----------
    fp_unet, q_unet : nn.Module
        Full-precision and calibrated quantized UNets (diffusers ``UNet2DModel`` or alike, called as
        ``unet(x, t).sample``). ``fp_unet`` is frozen; only the trainable tensors of ``q_unet`` keep
        ``requires_grad``.
    scheduler : diffusers.DDIMScheduler
    n_steps : int
        DDIM steps per trajectory; must match the quantizers' step count.
    trd : bool
        Add the TRD term.
    trd_window, trd_weight, tau : float
        TRD's ``N``, loss weight and temperature.
    lora_lr_divisor, weight_quant_lr, act_quant_lr : float
        See above.
    feature_module : callable
        ``unet -> module`` whose output is the TRD feature (default: ``unet.up_blocks[-1]``, the
        output of the last up block, before the output norm and convolution).
    """

    def __init__(self, fp_unet: nn.Module, q_unet: nn.Module, scheduler, *, n_steps: int = 20, trd: bool = True,
                 trd_window: int = 2, trd_weight: float = 100.0, tau: float = 1.0, lora_lr_divisor: float = 2500.0,
                 weight_quant_lr: float = 1e-6, act_quant_lr: float = 5e-4,
                 feature_module: Callable[[nn.Module], nn.Module] = lambda unet: unet.up_blocks[-1]):
        self.fp, self.q, self.scheduler, self.n_steps = fp_unet, q_unet, scheduler, int(n_steps)
        self.fp.eval().requires_grad_(False)
        self.q.eval().requires_grad_(False)
        groups = []
        self.lora_lrs: dict[str, float] = {}
        for name, layer in quant_layers(q_unet):
            if layer.act_quantizer.n_steps != self.n_steps:
                raise ValueError(f"{name}: quantizer has {layer.act_quantizer.n_steps} steps, trainer {n_steps}")
            if layer.is_boundary:
                continue
            wq, aq = layer.weight_quantizer, layer.act_quantizer
            if layer.lora_A is not None:
                lr = float(wq.delta.detach().abs().mean()) / lora_lr_divisor
                self.lora_lrs[name] = lr
                groups.append({"params": [layer.lora_A.weight, layer.lora_B.weight], "lr": lr})
            groups.append({"params": [wq.delta, wq.zero_point], "lr": weight_quant_lr})
            groups.append({"params": [*aq.delta, *aq.zero_point], "lr": act_quant_lr})
        for group in groups:
            for p in group["params"]:
                p.requires_grad_(True)
        if not groups:
            raise ValueError("q_unet has no trainable quantized layers")
        self.optimizer = torch.optim.AdamW(groups)
        self.lr_schedule: torch.optim.lr_scheduler.LambdaLR | None = None
        self.relation = TimeSmoothedRelation(trd_window, weight=trd_weight, tau=tau) if trd else None
        self._fp_tap = _OutputTap(feature_module(fp_unet), detach=True) if trd else None
        self._q_tap = _OutputTap(feature_module(q_unet), detach=False) if trd else None

    def trainable_parameters(self) -> list[torch.Tensor]:
        """All tensors the optimizer updates."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def distill_step(self, x: torch.Tensor, t, step: int,
                     condition: Condition | None = None) -> tuple[dict[str, float], torch.Tensor]:
        """One update at DDIM iteration ``step`` on ``x_t`` ``(B, C, H, W)`` under ``condition``.

        Returns
        -------
        record, eps_fp
            ``{"loss", "mse", "trd"}`` (``trd`` NaN when not computed this step) and the
            full-precision ``eps`` ``(B, C, H, W)`` for the trajectory.
        """
        set_step(self.q, step)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            eps_fp = predict_eps(self.fp, x, t, condition)
        eps_q = predict_eps(self.q, x, t, condition)
        mse = F.mse_loss(eps_q, eps_fp, reduction="sum")
        loss, trd = mse, None
        if self.relation is not None:
            trd = self.relation.push(self._fp_tap.output, self._q_tap.output)
            if trd is not None:
                loss = loss + trd
        loss.backward()
        self.optimizer.step()
        if self.lr_schedule is not None:
            self.lr_schedule.step()
        if self.relation is not None:
            self.relation.detach_history()
            self._q_tap.output = None
        record = {"loss": float(loss.detach()), "mse": float(mse.detach()),
                  "trd": float("nan") if trd is None else float(trd.detach())}
        return record, eps_fp

    def train(self, epochs: int, batch_size: int, sample_shape: Sequence[int], *,
              generator: torch.Generator | None = None,
              conditions: Callable[[int, torch.Generator | None], Condition] | None = None) -> list[dict[str, float]]:
        """Run ``epochs`` trajectories of ``n_steps`` updates each from ``x_T ~ N(0, I)``.

        Parameters
        ----------
        epochs, batch_size : int
        sample_shape : sequence of int
            ``(C, H, W)`` of one sample.
        generator : torch.Generator, optional
            Draws each epoch's ``x_T`` (and condition; ``eta = 0``).
        conditions : callable, optional
            ``conditions(batch_size, generator) -> Condition``: a conditional model's condition for
            each epoch's trajectory, drawn after its ``x_T``.

        Returns
        -------
        list of dict
            Per update: ``epoch``, ``step``, ``timestep``, ``loss``, ``mse``, ``trd``.
        """
        total = max(1, epochs * self.n_steps)
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda k: max(0.0, 1.0 - k / total))
        device = next(iter(self.trainable_parameters())).device
        history = []
        for epoch in range(epochs):
            # Drawn where the generator lives (a CPU generator gives the same x_T on any device).
            x = torch.randn((batch_size, *sample_shape), generator=generator,
                            device=None if generator is None else generator.device).to(device)
            condition = None if conditions is None else {
                key: value.to(device) for key, value in conditions(batch_size, generator).items()}
            self.scheduler.set_timesteps(self.n_steps)
            if self.relation is not None:
                self.relation.reset()
            for step, t in enumerate(self.scheduler.timesteps):
                record, eps_fp = self.distill_step(x, t, step, condition)
                history.append({"epoch": epoch, "step": step, "timestep": int(t), **record})
                x = self.scheduler.step(eps_fp, t, x, eta=0.0).prev_sample
        return history

    def close(self) -> None:
        """Remove the feature hooks."""
        for tap in (self._fp_tap, self._q_tap):
            if tap is not None:
                tap.remove()
