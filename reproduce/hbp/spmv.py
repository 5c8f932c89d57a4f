"""HBP SpMV against CSR on the detected device (paper: up to 3.32x on Orin, 3.01x on an RTX 4090).

Each unit is one matrix. Every executor computes ``y = A @ x`` for the same random ``x``;
each result is checked against scipy first (componentwise error), then timed: a warm-up,
then ``repeats`` rounds in which every executor in turn calls for ``min_round_ms`` (at least
once) and keeps its fastest call (interleaved, so drift in the machine's state hits them alike;
the fastest, so a call of microseconds that loses its core for a time slice does not count;
on the GPU each call timed by CUDA events), the median over rounds reported with their count
and every round's time kept in the record. Reported per
executor: time, GFLOP/s (2 nnz / t), effective GB/s counting the CSR arrays, x and y
once (docs/design.md) and its fraction of the device's bandwidth (the CPU's
measured STREAM triad, the GPU's theoretical peak). Per matrix and per preprocessed
format (HBP with the hash ordering, and the Regu2D-style 2D partitioning that the paper
also compares with, ``methods.spmv.regu2d``): its preprocessing time, bytes per nonzero,
speed-up over the CSR baseline (the mean over rounds of the baseline's time / the format's
time in the same round) and break-even number of iterations (preprocessing time / time saved
per SpMV, from the medians); HBP's speed-up over Regu2D; and merge-spmv's row statistics.
On a CUDA device the claims ("max over matrices") are judged from the interval of the max
over matrices of HBP's speed-up, each matrix's rounds resampled on their own
(:mod:`reproduce.hbp.samples`).

CSR baseline: on CUDA the scalar one-thread-per-row kernel (the paper's), with the
vector kernel and cuSPARSE beside it; on the CPU the parallel numba CSR kernel, with
scipy's serial loop beside it.

On the emulated CUDA device (``--device cuda-emu``) the CUDA executors but cuSPARSE are
checked the same way, each timed by its one checked call (no warm-up, no repetitions), and
their memory traffic is recorded (:func:`reproduce.hbp.executors.run_emulated`). Those
times are recorded but say nothing of a GPU's: the record's data has
``"timing_comparable": false``, the summary says so, and no claim is judged. Matrices above
the limits of :func:`~reproduce.hbp.executors.check_emulator_size` are skipped there.
"""

from __future__ import annotations

import functools
import statistics
import time

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import gmean

from methods.spmv.accuracy import componentwise_error
from methods.spmv.csr import spmv_scipy
from methods.spmv.formats import FORMATS, hbp_block_shape
from methods.spmv.machine import cpu_caches
from methods.spmv.stats import row_length_stats
from reproduce.harness.artifact import Artifact, Context, Outcome, Summary, Unit
from reproduce.harness.data.matrix_sets import MATRIX_SWEEP, load_unit_matrix
from reproduce.harness.device import cpu_bandwidth
from reproduce.harness.records import Record, metric
from reproduce.harness.timing import Timing, time_cuda
from reproduce.hbp import matrices
from reproduce.hbp.executors import (
    BASELINE,
    EMULATED,
    HBP,
    REGU2D,
    check_emulator_size,
    csr_bytes,
    device_context,
    device_executors,
    run_emulated,
    traffic_columns,
    traffic_executors,
    traffic_notes,
    traffic_plot,
)
from reproduce.hbp.samples import ClaimSamples, claim_samples, interleaved_rounds, round_speedups

COMPARED = {"hbp": HBP, "regu2d": REGU2D}  # format -> its executor per device, compared with the CSR baseline
LARGE_NNZ = 1_000_000  # the notes on the CPU executor single out matrices from this size on
ROUNDS = "ms_rounds"  # record data: executor -> its time (ms) in each timed round, rounds in order
CLAIMS = ("spmv-orin-max", "spmv-4090-max")  # both: HBP's speed-up over the CSR baseline, max over matrices


def run_unit(unit: Unit, ctx: Context) -> Outcome:
    with device_context(ctx.device):  # on a GPU: its layouts, executors and timings all on that device
        return _run_unit(unit, ctx)


def _run_unit(unit: Unit, ctx: Context) -> Outcome:
    cfg, device = ctx.config, ctx.device
    matrix, provenance = load_unit_matrix(unit, ctx)
    if device.kind == EMULATED:
        check_emulator_size(matrix)
    matrix = (matrix.real if np.iscomplexobj(matrix.data) else matrix).astype(cfg["dtype"])
    x = ctx.rng(unit).uniform(-1.0, 1.0, matrix.shape[1]).astype(cfg["dtype"])
    y_ref = spmv_scipy(matrix.astype(np.float64), x.astype(np.float64))
    layouts, pre_seconds = _preprocess(matrix, device.kind, cfg["preprocess_repeats"])
    height, width = hbp_block_shape(matrix, device.kind)
    metrics = {"nrows": metric(matrix.shape[0]), "ncols": metric(matrix.shape[1]), "nnz": metric(matrix.nnz),
               **{f"{name}_preprocess_ms": metric(seconds * 1e3, "ms") for name, seconds in pre_seconds.items()},
               **{f"{name}_bytes_per_nnz": metric(FORMATS[name].bytes_per_nonzero(layout), "B")
                  for name, layout in layouts.items()},
               "hbp_preprocess_vs_copy": metric(pre_seconds["hbp"] / pre_seconds["csr"]
                                                if pre_seconds["csr"] > 0 else None, "x"),
               "hbp_block_height": metric(height), "hbp_block_width": metric(width),
               "regu2d_padding_fraction": metric(layouts["regu2d"].padding_fraction),
               "regu2d_block_width": metric(layouts["regu2d"].block_width),
               **{k: metric(v) for k, v in row_length_stats(matrix).items()}}
    data = {**provenance, "dtype": cfg["dtype"], "preprocessing_device": device.kind,
            "hbp_block_shape": [height, width]}
    if device.kind == "cpu":
        data["x_exceeds_llc"] = bool(matrix.shape[1] * matrix.dtype.itemsize > cpu_caches()["L3"])
    executors = device_executors(matrix, layouts, device.kind)
    if device.kind == EMULATED:
        bandwidth = None
        timings = _measure_emulated(executors, matrix, x, y_ref, metrics)
        data["timing_comparable"] = False
    elif device.kind == "cuda":
        import cupy

        bandwidth = device.peak_bandwidth_gbs
        timings = _measure(executors, cupy.asarray(x), cupy.asnumpy, matrix, x, y_ref, metrics, device.kind, cfg)
    else:
        bandwidth = cpu_bandwidth()["triad_gbs"]
        timings = _measure(executors, x, np.asarray, matrix, x, y_ref, metrics, device.kind, cfg)
    for name, timing in timings.items():
        metrics.update(_time_metrics(name, timing, matrix, bandwidth))
    data[ROUNDS] = {name: [seconds * 1e3 for seconds in timing.seconds] for name, timing in timings.items()}
    metrics["bandwidth_gbs"] = metric(bandwidth, "GB/s")
    metrics.update(_speedup_metrics(data[ROUNDS], metrics, pre_seconds, device.kind))
    return Outcome(metrics=metrics, data=data)


def _speedup_metrics(rounds: dict[str, list[float]], metrics: dict, pre_seconds: dict[str, float], kind: str) -> dict:
    """Each compared format's speed-up over the CSR baseline (mean over rounds of baseline / format in the same
    round) and break-even SpMVs (preprocessing / time saved per SpMV, from the median times), and HBP's speed-up
    over Regu2D; ``rounds`` are each executor's times (ms) per round, ``metrics`` hold the medians (``<e>_ms``)."""
    base = BASELINE[kind]
    out = {}
    for name, executor in COMPARED.items():
        # "speedup" and "break_even_iterations" (HBP's) keep their names: the claims read them.
        prefix = "" if name == "hbp" else f"{name}_"
        out[f"{prefix}speedup"] = metric(float(np.mean(round_speedups(rounds[base], rounds[executor[kind]]))), "x")
        saved = (metrics[f"{base}_ms"]["value"] - metrics[f"{executor[kind]}_ms"]["value"]) / 1e3
        out[f"{prefix}break_even_iterations"] = metric(pre_seconds[name] / saved if saved > 0 else None, "SpMV")
    out["hbp_vs_regu2d"] = metric(float(np.mean(round_speedups(rounds[REGU2D[kind]], rounds[HBP[kind]]))), "x")
    return out


def _preprocess(matrix, device: str, repeats: int) -> tuple[dict, dict[str, float]]:
    """Every format's layout for ``device`` and the median seconds of ``repeats`` warm builds of each, the
    formats interleaved (CSR's build is the copy of its arrays: the floor of any conversion)."""
    seconds = {name: [] for name in FORMATS}
    layouts = {}
    for run in range(repeats + 1):  # the first round compiles
        for name, fmt in FORMATS.items():
            layouts[name] = None  # free the previous layout before building the next
            layouts[name], phases = fmt.build(matrix, device)
            if run:
                seconds[name].append(phases["total"])
    return layouts, {name: statistics.median(samples) for name, samples in seconds.items()}


def _measure(executors, x, to_host, matrix, x_host, y_ref, metrics: dict, kind: str, cfg: dict) -> dict[str, Timing]:
    """Check each executor against scipy (``<executor>_error`` into ``metrics``), then time them all in interleaved
    rounds (:func:`_time_rounds`), returned. ``x`` is the input on the executors' device and ``to_host`` brings a
    result back."""
    for name, run in executors.items():
        metrics[f"{name}_error"] = metric(componentwise_error(matrix, x_host, to_host(run(x)), y_ref))
    return _time_rounds({name: (lambda run=run: run(x)) for name, run in executors.items()}, kind, cfg, metrics)


def _time_rounds(runs: dict, kind: str, cfg: dict, metrics: dict) -> dict[str, Timing]:
    """Each executor's seconds in each of ``cfg["repeats"]`` interleaved rounds, after ``cfg["warmup"]`` calls of
    each (:func:`reproduce.hbp.samples.interleaved_rounds`: per round each calls for ``cfg["min_round_ms"]`` and
    keeps its fastest call; the mean calls per round go into ``metrics["<executor>_calls_per_round"]``). On CUDA
    each call is timed by events."""
    for run in runs.values():
        for _ in range(cfg["warmup"]):
            run()
    calls = {name: functools.partial(_call_seconds, run, kind) for name, run in runs.items()}
    times, batches = interleaved_rounds(calls, cfg["repeats"], cfg["min_round_ms"] / 1e3)
    metrics.update({f"{name}_calls_per_round": metric(batch) for name, batch in batches.items()})
    return {name: Timing(tuple(seconds["total"] for seconds in rounds)) for name, rounds in times.items()}


def _call_seconds(run, kind: str) -> dict[str, float]:
    """One call of ``run()``: its seconds, by CUDA events on a GPU, by the host clock elsewhere."""
    if kind == "cuda":
        return {"total": time_cuda(run, warmup=0, repeats=1).seconds[0]}
    start = time.perf_counter()
    run()
    return {"total": time.perf_counter() - start}


def _measure_emulated(executors, matrix, x, y_ref, metrics: dict) -> dict[str, Timing]:
    """On the emulated device: each executor's one call checked against scipy (``<executor>_error``) and its
    memory traffic counted (:func:`reproduce.hbp.executors.run_emulated`), both into ``metrics``; the call's
    time is returned as a Timing of one round (times not comparable)."""
    calls, traffic = run_emulated(executors, x, matrix)
    metrics.update(traffic)
    for name, call in calls.items():
        metrics[f"{name}_error"] = metric(componentwise_error(matrix, x, call.result, y_ref))
    return {name: Timing((call.seconds,)) for name, call in calls.items()}


def _time_metrics(name: str, timing: Timing, matrix, bandwidth: float | None) -> dict:
    """Median time, rounds, GFLOP/s, effective GB/s (CSR arrays, x and y once) and bandwidth fraction of one
    executor."""
    seconds = timing.median
    moved = csr_bytes(matrix, matrix.dtype.itemsize)
    return {f"{name}_ms": metric(seconds * 1e3, "ms"), f"{name}_repeats": metric(timing.repeats),
            f"{name}_gflops": metric(2 * matrix.nnz / seconds / 1e9, "GFLOP/s"),
            f"{name}_gbs": metric(moved / seconds / 1e9, "GB/s"),
            f"{name}_bandwidth_fraction": metric(moved / seconds / 1e9 / bandwidth if bandwidth else None)}


def summarize(records: list[Record], ctx: Context) -> Summary:
    kind = ctx.device.kind
    executors = sorted({k[:-3] for r in records for k in r.metrics
                        if k.endswith("_ms") and not k.endswith("_preprocess_ms")})
    counted = traffic_executors(records)  # executors whose traffic was counted (on the emulated device)
    rows = []
    for r in records:
        row = {"matrix": r.data.get("name") or r.unit, "source": r.data.get("source"), "rows": r.value("nrows"),
               "nnz": r.value("nnz"),
               "row len mean": r.value("row_length_mean"), "row len skew": r.value("row_length_skewness")}
        row.update({f"{e} ms": r.value(f"{e}_ms") for e in executors})
        row.update({f"{e} GFLOP/s": r.value(f"{e}_gflops") for e in executors})
        if kind != EMULATED:  # no bandwidth to compare with there
            row.update({f"{e} bw fraction": r.value(f"{e}_bandwidth_fraction")
                        for e in (BASELINE[kind], HBP[kind], REGU2D[kind])})
        row["max error"] = max(r.value(f"{e}_error") or 0.0 for e in executors)
        row.update({"speed-up": r.value("speedup"), "preprocess ms": r.value("hbp_preprocess_ms"),
                    "break-even SpMVs": r.value("break_even_iterations"),
                    "HBP B/nnz": r.value("hbp_bytes_per_nnz"), "CSR B/nnz": r.value("csr_bytes_per_nnz"),
                    "HBP shape": f"{r.value('hbp_block_height')}x{r.value('hbp_block_width')}",
                    "preprocess / copy": r.value("hbp_preprocess_vs_copy"),
                    "x beyond LLC": r.data.get("x_exceeds_llc"),
                    "Regu2D speed-up": r.value("regu2d_speedup"),
                    "Regu2D preprocess ms": r.value("regu2d_preprocess_ms"),
                    "Regu2D break-even SpMVs": r.value("regu2d_break_even_iterations"),
                    "Regu2D B/nnz": r.value("regu2d_bytes_per_nnz"),
                    "Regu2D padding": r.value("regu2d_padding_fraction"),
                    "HBP vs Regu2D": r.value("hbp_vs_regu2d")})
        row.update(traffic_columns(r, counted))
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("nnz", ignore_index=True)
    error_note = f"Largest error of any executor against scipy: {table['max error'].max():.2e} (componentwise)."
    if kind == EMULATED:
        notes = ["Times were measured on the emulated CUDA device, one call per executor: they are not comparable "
                 "with a GPU's (or a CPU's), so the times, speed-ups and break-even counts in the table say nothing "
                 "of HBP and no claim is judged. What this run shows: the kernels' results and their memory traffic.",
                 error_note, _cost_note(table), *traffic_notes(table, counted)]
        figures = [("Memory traffic per nonzero of each executor (median)", traffic_plot(table, counted))]
        return Summary(table=table, notes=notes, figures=figures)
    speedups = table["speed-up"].astype(float)
    notes = [
        f"Speed-up of {HBP[kind]} over {BASELINE[kind]} (the CSR baseline on this device): "
        f"max {speedups.max():.2f}x ({table.loc[speedups.idxmax(), 'matrix']}), "
        f"geometric mean {float(gmean(speedups)):.2f}x over {len(table)} matrices.",
        error_note,
        _speedup_means_note(table, kind),
        _cost_note(table),
        *(_cpu_notes(table) if kind == "cpu" else []),
        *_comparison_notes(table, executors, kind),
    ]
    samples, withheld = {}, {}
    if kind == "cuda":
        judged = _claim_samples(records, kind)
        if judged.samples is not None:
            samples = dict.fromkeys(CLAIMS, judged.samples)
        withheld = dict.fromkeys(CLAIMS, judged.withheld) if judged.withheld else {}
        notes += [judged.note] if judged.note else []
    else:
        notes.append("The paper's speed-ups are GPU claims: on the CPU they are shown as not run.")
    measured = {claim: drawn.point() for claim, drawn in samples.items()}
    return Summary(table=table, measured=measured, samples=samples, withheld=withheld, notes=notes,
                   figures=[("Speed-up of HBP and Regu2D over CSR per matrix", _speedup_plot(table, kind)),
                            ("Throughput per executor", _gflops_plot(table, executors))])


def _claim_samples(records: list[Record], kind: str) -> ClaimSamples:
    """HBP's per-round speed-ups over the CSR baseline, one stratum per matrix, whose max over matrices is both
    claims' value (:func:`reproduce.hbp.samples.claim_samples`: matrices whose rounds measured a busy machine left
    out, the claims withheld when many are). Records without per-round times (an older version's) are left out."""
    return claim_samples({r.unit: r.data[ROUNDS] for r in records if ROUNDS in r.data}, BASELINE[kind], HBP[kind],
                         "max")


def _cpu_notes(table: pd.DataFrame) -> list[str]:
    """HBP on the CPU against the numba CSR kernel where it matters: large matrices, x beyond the last-level
    cache, bytes per nonzero and preprocessing against the copy of the CSR arrays."""
    ratio = 1.0 / table["speed-up"].astype(float)  # HBP time / CSR time
    large = table["nnz"] >= LARGE_NNZ
    beyond = table["x beyond LLC"].fillna(False).astype(bool)
    bytes_ratio = table["HBP B/nnz"].astype(float) / table["CSR B/nnz"].astype(float)
    parts = [f"hbp_cpu time / csr_numba time, geometric mean: {_geomean(ratio):.2f} over all {len(table)} matrices"]
    if large.any():
        parts.append(f"{_geomean(ratio[large]):.2f} over the {int(large.sum())} with at least {LARGE_NNZ:,} nonzeros")
    if beyond.any():
        parts.append(f"{_geomean(ratio[beyond]):.2f} where x exceeds the last-level cache "
                     f"({', '.join(table.loc[beyond, 'matrix'])})")
    notes = ["; ".join(parts) + "."]
    notes.append(f"HBP's bytes per nonzero (every array its SpMV reads) / CSR's: at most {bytes_ratio.max():.2f} "
                 f"({table.loc[bytes_ratio.idxmax(), 'matrix']}), median {bytes_ratio.median():.2f}.")
    if large.any():
        notes.append("HBP preprocessing (hash, CPU block shape) / the copy of the CSR arrays, median over the matrices "
                     f"with at least {LARGE_NNZ:,} nonzeros: "
                     f"{table.loc[large, 'preprocess / copy'].astype(float).median():.2f}x.")
    return notes


def _geomean(values: pd.Series) -> float:
    return float(gmean(values.astype(float))) if len(values) else float("nan")


def _median(table: pd.DataFrame, column: str) -> float:
    return float(table[column].astype(float).median())


def _speedup_means_note(table: pd.DataFrame, kind: str) -> str:
    """HBP against Regu2D and both against CSR: geometric means over all matrices."""
    def gm(column: str) -> float:
        return float(gmean(table[column].astype(float)))

    return (f"Geometric means over {len(table)} matrices: {BASELINE[kind]} time / {HBP[kind]} time "
            f"{gm('speed-up'):.2f}x, {BASELINE[kind]} time / {REGU2D[kind]} time {gm('Regu2D speed-up'):.2f}x, "
            f"{REGU2D[kind]} time / {HBP[kind]} time {gm('HBP vs Regu2D'):.2f}x "
            "(the paper: HBP's gains over 2D partitioning exceed those over CSR; unverified, docs/papers/hbp.md).")


def _cost_note(table: pd.DataFrame) -> str:
    """The formats' costs: preprocessing time (on the CPU), stored bytes per nonzero and Regu2D's padding."""
    return (f"Preprocessing on the CPU (median ms): HBP {_median(table, 'preprocess ms'):.3g}, "
            f"Regu2D {_median(table, 'Regu2D preprocess ms'):.3g}; bytes per nonzero (median): "
            f"HBP {_median(table, 'HBP B/nnz'):.1f}, Regu2D {_median(table, 'Regu2D B/nnz'):.1f} "
            f"(CSR: 12 + row pointers in fp64); Regu2D's padding {_median(table, 'Regu2D padding'):.1%} of its "
            "stored entries.")


def _comparison_notes(table: pd.DataFrame, executors: list[str], kind: str) -> list[str]:
    """HBP against each CSR executor (median over real matrices; each generated one) and bandwidth fractions."""
    hbp, others = HBP[kind], [e for e in executors if e.startswith("csr_")]
    real = table[table["source"] != "generated"]
    notes = []
    if len(real):
        notes.append(f"Time of each CSR executor / time of {hbp}, median over the {len(real)} SuiteSparse matrices: "
                     + ", ".join(f"{e} {(real[f'{e} ms'] / real[f'{hbp} ms']).median():.2f}x" for e in others))
    for row in table[table["source"] == "generated"].to_dict("records"):
        ratios = ", ".join(f"{e} {row[f'{e} ms'] / row[f'{hbp} ms']:.2f}x" for e in others)
        fractions = ", ".join(f"{e} {row[f'{e} bw fraction']:.0%}" for e in (BASELINE[kind], hbp, REGU2D[kind]))
        notes.append(f"{row['matrix']} ({row['nnz']:,} nonzeros): CSR time / {hbp} time {ratios}; "
                     f"effective bandwidth as a fraction of the device's: {fractions}.")
    return notes


def _speedup_plot(table: pd.DataFrame, kind: str):
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    order = table.sort_values("speed-up", ignore_index=True)
    positions = np.arange(len(order))
    ax.bar(positions - 0.2, order["speed-up"], width=0.4, color="tab:blue", label=HBP[kind])
    ax.bar(positions + 0.2, order["Regu2D speed-up"], width=0.4, color="tab:orange", label=REGU2D[kind])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set(ylabel=f"{BASELINE[kind]} time / format's time", xlabel="matrices, sorted by HBP's speed-up",
           title=f"HBP and Regu2D over CSR on {kind}")
    ax.legend(fontsize=7)
    ax.set_xticks([])
    fig.tight_layout()
    return fig


def _gflops_plot(table: pd.DataFrame, executors: list[str]):
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    for name in executors:
        ax.scatter(table["nnz"].clip(lower=1), table[f"{name} GFLOP/s"], s=16, label=name)
    ax.set(xscale="log", yscale="log", xlabel="nonzeros", ylabel="GFLOP/s (2 nnz / t)", title="SpMV throughput")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# repeats: timed rounds; min_round_ms: how long each executor calls per round (at least once), its fastest kept.
COMMON = {"dtype": "float64", "warmup": 2}

ARTIFACT = Artifact(
    paper="hbp",
    name="spmv",
    title="SpMV: HBP against CSR kernels and Regu2D-style 2D partitioning (time, GFLOP/s, bandwidth, break-even)",
    claims=CLAIMS,
    scales={
        "smoke": {**COMMON, "generated": matrices.SMOKE, "repeats": 5, "min_round_ms": 0, "preprocess_repeats": 1},
        "quick": {**COMMON, "local": True, "generated": matrices.QUICK_LARGE, "repeats": 10, "min_round_ms": 10,
                  "preprocess_repeats": 3},
        "full": {**COMMON, "named": matrices.FULL, "repeats": 20, "min_round_ms": 20, "preprocess_repeats": 3},
    },
    needs={
        "smoke": "nothing: generated edge cases.",
        "quick": "the .mtx files in REPRO_MATRIX_DIRS (offline) and four generated 1-4 M-row matrices that exceed "
                 "the CPU caches; the GPU claims need a CUDA device.",
        "full": f"{len(matrices.FULL)} SuiteSparse matrices (downloaded on first use) and the GPU the claim names "
                "(Jetson AGX Orin or RTX 4090).",
    },
    run_unit=run_unit,
    summarize=summarize,
    timed=True,  # the claims are speed-ups timed inside units: no two units may share the cores
    devices=("cpu", "cuda", EMULATED),
    **{**MATRIX_SWEEP, "options": {**MATRIX_SWEEP["options"], "--dtype": {
        "choices": ["float64", "float32"], "help": "value type (default float64)"}}},
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
