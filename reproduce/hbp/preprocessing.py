"""HBP's preprocessing against the sorting approach and Regu2D's DP (paper: 3.53x and 3.67x).

Each unit is one matrix, converted to the HBP layout (the paper's 512 x 4096 blocks) by each of
the three orderings. They share every line of the fused preprocessing (``methods.spmv.hbp``: a
counting pass, then one pass per row block that splits, reorders and writes) but the call that
orders a block's rows (``methods.spmv.ordering.order_block``), so the ratios compare hashing with
sorting and with the DP, not implementations of different care. The reordering runs inside the
fused pass, so only the whole preprocessing is timed, in ``repeats`` warm rounds (hash, sort, dp,
hash, ...), each ordering's time in a round the fastest of the builds it makes in ``min_round_ms``
(at least one: a large matrix builds once per round): times are the median of the rounds, beside
the copy of the CSR arrays, the floor of any conversion. A matrix's speed-up over a baseline is the mean over
rounds of baseline / hash of the same round; the record keeps every round's times, and the claims
("mean over matrices") are judged from the interval of the mean over matrices with each matrix's
rounds resampled on their own (:mod:`reproduce.hbp.samples`). On the CPU the
fused numba build runs; on a GPU (``--device cuda``, as in the paper) the build kernels of
``methods.spmv.hbp_build_cuda``, whose orderings differ in the same few lines, and the copy is a
device copy.
"""

from __future__ import annotations

import functools
import statistics
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
from matplotlib.figure import Figure
from scipy.stats import gmean

from methods.spmv.hbp import ORDERINGS, preprocess_timed
from methods.spmv.hbp_build_cuda import build_hbp_cuda
from reproduce.harness.artifact import Artifact, Context, Outcome, Summary, Unit
from reproduce.harness.data.matrix_sets import MATRIX_SWEEP, load_unit_matrix
from reproduce.harness.records import Record, metric
from reproduce.harness.stats import Samples
from reproduce.hbp import matrices
from reproduce.hbp.executors import device_context
from reproduce.hbp.samples import claim_samples, interleaved_rounds, round_speedups

PHASES = ("count", "build", "total")
ROUNDS = "total_ms_rounds"  # record data: ordering -> the whole preprocessing's ms in each round
CLAIMS = {"pre-vs-sort": "sort", "pre-vs-regu2d": "dp"}  # claim -> the baseline ordering it compares hash with


def _builder(device: str):
    """``build(matrix, ordering, height, width) -> (layout, seconds)`` on ``device`` ("cpu" or "cuda")."""
    if device == "cuda":
        return lambda matrix, *layout: build_hbp_cuda(matrix, *layout, device="cuda")
    return preprocess_timed


def _warm_up(build, block_height: int, block_width: int) -> None:
    """Compile every ordering's kernels once, so no timed run includes compilation."""
    tiny = sp.random(64, 64, density=0.1, format="csr", rng=np.random.default_rng(0))
    for ordering in ORDERINGS:
        build(tiny, ordering, block_height, block_width)


def run_unit(unit: Unit, ctx: Context) -> Outcome:
    with device_context(ctx.device):  # on a GPU: the builds and the copy on that device
        return _run_unit(unit, ctx)


def _run_unit(unit: Unit, ctx: Context) -> Outcome:
    matrix, provenance = load_unit_matrix(unit, ctx)
    matrix = matrix.real if np.iscomplexobj(matrix.data) else matrix
    height, width, repeats = ctx.config["block_height"], ctx.config["block_width"], ctx.config["repeats"]
    build = _builder(ctx.device.kind)
    _warm_up(build, height, width)
    metrics = {"nrows": metric(matrix.shape[0]), "ncols": metric(matrix.shape[1]), "nnz": metric(matrix.nnz)}
    # Interleaved (hash, sort, dp, hash, ...) so that drift in the machine's state hits all three alike.
    sizes = {}
    runs, batches = interleaved_rounds(
        {ordering: functools.partial(_timed_build, build, matrix, ordering, height, width, sizes)
         for ordering in ORDERINGS}, repeats, ctx.config["min_round_ms"] / 1e3)
    metrics.update({f"{ordering}_builds_per_round": metric(batch) for ordering, batch in batches.items()})
    metrics.update({f"{ordering}_bytes_per_nnz": metric(size, "B") for ordering, size in sizes.items()})
    medians = {}
    for ordering, samples in runs.items():
        for phase in PHASES:
            medians[ordering, phase] = statistics.median(seconds[phase] for seconds in samples)
            metrics[f"{ordering}_{phase}_ms"] = metric(medians[ordering, phase] * 1e3, "ms")
    total_ms = {ordering: [seconds["total"] * 1e3 for seconds in samples] for ordering, samples in runs.items()}
    for baseline in ("sort", "dp"):
        metrics[f"speedup_vs_{baseline}"] = metric(float(np.mean(round_speedups(total_ms[baseline],
                                                                                total_ms["hash"]))), "x")
    metrics["copy_ms"] = metric(_copy_seconds(matrix, repeats, ctx.device.kind) * 1e3, "ms")
    metrics["hash_vs_copy"] = metric(medians["hash", "total"] / (metrics["copy_ms"]["value"] / 1e3), "x")
    return Outcome(metrics=metrics, data={**provenance, "real_part_only": bool(np.iscomplexobj(matrix.data)),
                                          "preprocessing_device": ctx.device.kind, ROUNDS: total_ms})


def _timed_build(build, matrix, ordering: str, height: int, width: int, sizes: dict) -> dict[str, float]:
    """One build of ``ordering``'s layout, freed at once (those of large matrices take hundreds of MB): its seconds
    per phase (:data:`PHASES`); its bytes per nonzero go into ``sizes[ordering]``."""
    hbp, seconds = build(matrix, ordering, height, width)
    sizes[ordering] = hbp.bytes_per_nonzero()
    return seconds


def _copy_seconds(matrix, repeats: int, device: str) -> float:
    """Median time to copy the CSR arrays where the build runs (on a GPU, device to device, synchronised):
    the floor of any format conversion."""
    arrays = (matrix.indices, matrix.data, matrix.indptr)
    if device == "cuda":
        import cupy

        arrays = tuple(cupy.asarray(array) for array in arrays)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        copies = tuple(array.copy() for array in arrays)
        if device == "cuda":
            cupy.cuda.get_current_stream().synchronize()
        samples.append(time.perf_counter() - start)
        del copies
    return statistics.median(samples)


def summarize(records: list[Record], ctx: Context) -> Summary:
    table = pd.DataFrame([{
        "matrix": r.data.get("name") or r.unit, "source": r.data.get("source"), "nnz": r.value("nnz"),
        **{f"{o} ms": r.value(f"{o}_total_ms") for o in ORDERINGS},
        "copy ms": r.value("copy_ms"),
        "vs sort": r.value("speedup_vs_sort"), "vs dp": r.value("speedup_vs_dp"),
        "hash / copy": r.value("hash_vs_copy"),
        "hash B/nnz": r.value("hash_bytes_per_nnz"),
    } for r in records]).sort_values("nnz", ignore_index=True)
    judged = table[table["nnz"] >= ctx.config["min_nnz"]]
    samples, withheld, left_out = _claim_samples([r for r in records
                                                  if (r.value("nnz") or 0) >= ctx.config["min_nnz"]])
    notes = [
        f"Claims use the {len(judged)} of {len(table)} matrices with at least {ctx.config['min_nnz']:,} nonzeros "
        "(below that, runs take microseconds and timer noise dominates). The paper's statistic is the mean over "
        f"matrices (arithmetic: it says 'on average'); each matrix's speed-up is the mean over its "
        f"{ctx.config['repeats']} interleaved rounds of baseline / hash (each the fastest of the builds made in "
        f"{ctx.config['min_round_ms']} ms, at least one), and the interval resamples every matrix's rounds on "
        "their own.",
        *_spread_notes(samples),
        "Geometric means over the same matrices: " + ", ".join(
            f"{col} {_geomean(judged[col]):.2f}x" for col in ("vs sort", "vs dp", "hash / copy")),
        *_median_notes(table),
        _device_note({r.data.get("preprocessing_device", "cpu") for r in records}),
        *left_out,
    ]
    measured = {claim: drawn.point() for claim, drawn in samples.items()}
    return Summary(table=table, measured=measured, samples=samples, withheld=withheld, notes=notes,
                   figures=[("Preprocessing speed-up of hashing per matrix", _speedup_plot(table))])


def _claim_samples(records: list[Record]) -> tuple[dict[str, Samples], dict[str, str], list[str]]:
    """Per claim, hash's per-round speed-ups over the claim's baseline, one stratum per matrix, their mean over
    matrices the claim's value (:func:`reproduce.hbp.samples.claim_samples`: matrices whose rounds measured a busy
    machine left out, the claim withheld when many are); the reasons to withhold; notes on the matrices left out
    and on records without per-round times (an older version's)."""
    timed = {r.unit: r.data[ROUNDS] for r in records if ROUNDS in r.data}
    samples, withheld, notes = {}, {}, []
    for claim, baseline in CLAIMS.items():
        judged = claim_samples(timed, baseline, "hash", "mean")
        if judged.samples is not None:
            samples[claim] = judged.samples
        if judged.withheld:
            withheld[claim] = judged.withheld
        if judged.note:
            notes.append(f"{claim}: {judged.note}")
    missing = len(records) - len(timed)
    if missing:
        notes.append(f"{missing} matrices' records have no per-round times (an older version of this artifact "
                     "wrote them) and are left out of the claims; rerun with --force.")
    return samples, withheld, notes


def _spread_notes(samples: dict[str, Samples]) -> list[str]:
    """How much the rounds of one matrix disagree: the median over matrices of the per-round speed-ups'
    coefficient of variation (std / mean), per claim."""
    notes = []
    for claim, drawn in samples.items():
        spreads = [np.std(v, ddof=1) / np.mean(v) for v in drawn.strata.values() if len(v) > 1]
        if spreads:
            notes.append(f"{claim}: per-round speed-ups within a matrix vary by {np.median(spreads):.1%} "
                         f"(median coefficient of variation over {len(spreads)} matrices).")
    return notes


def _device_note(devices: set[str]) -> str:
    """Where the layouts were built, and how that relates to the paper's GPU preprocessing."""
    if devices == {"cuda"}:
        return ("Preprocessing ran on the GPU (methods.spmv.hbp_build_cuda: one lane orders each block, as in the "
                "paper's kernel), timed with the device synchronised; the copy is a device copy.")
    return ("Preprocessing ran on the CPU (numba, all cores): the paper's numbers come from a GPU kernel in which "
            "each thread reorders one block serially, where sorting costs relatively more; --device cuda runs "
            "the GPU build.")


def _median_notes(table: pd.DataFrame) -> list[str]:
    """Median ratios over the real (SuiteSparse) matrices, and the ratios of each generated one."""
    ratios = ("vs sort", "vs dp", "hash / copy")
    real = table[table["source"] != "generated"]
    notes = []
    if len(real):
        notes.append(f"Medians over the {len(real)} SuiteSparse matrices: "
                     + ", ".join(f"{col} {real[col].median():.2f}x" for col in ratios))
    for row in table[table["source"] == "generated"].itertuples(index=False):
        values = dict(zip(table.columns, row))
        notes.append(f"{values['matrix']} ({values['nnz']:,} nonzeros): "
                     + ", ".join(f"{col} {values[col]:.2f}x" for col in ratios))
    return notes


def _geomean(values: pd.Series) -> float:
    return float(gmean(values.astype(float))) if len(values) else float("nan")


def _speedup_plot(table: pd.DataFrame):
    """Speed-up of hash over sort and over DP against nnz."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for column, marker in (("vs sort", "o"), ("vs dp", "s")):
        ax.scatter(table["nnz"].clip(lower=1), table[column], marker=marker, s=22, label=column)
    ax.axhline(3.53, color="tab:blue", ls="--", lw=1, label="paper vs sort (3.53x)")
    ax.axhline(3.67, color="tab:orange", ls="--", lw=1, label="paper vs DP (3.67x)")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="nonzeros", ylabel="time of baseline / time of hash",
           title="HBP preprocessing: hash against sort and DP")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


# min_round_ms: in each round each ordering builds for this long (at least once) and keeps its fastest build
# (below a millisecond per build, one lost time slice would swamp a single build's time).
COMMON = {"block_height": 512, "block_width": 4096, "min_nnz": 2000, "min_round_ms": 20}

ARTIFACT = Artifact(
    paper="hbp",
    name="preprocessing",
    title="Preprocessing time: hash reordering against the sorting approach and Regu2D's DP",
    claims=tuple(CLAIMS),
    scales={
        "smoke": {**COMMON, "generated": matrices.SMOKE, "repeats": 2},
        "quick": {**COMMON, "local": True, "generated": matrices.QUICK_LARGE, "repeats": 5},
        "full": {**COMMON, "named": matrices.FULL, "repeats": 10},
    },
    needs={
        "smoke": "nothing: generated edge cases; no claim is judged.",
        "quick": "the .mtx files in REPRO_MATRIX_DIRS (offline) and four generated 1-4 M-row matrices; "
                 "judges both preprocessing claims; a few minutes on 2 cores.",
        "full": f"{len(matrices.FULL)} SuiteSparse matrices, downloaded on first use (repro fetch hbp --scale full).",
    },
    run_unit=run_unit,
    summarize=summarize,
    timed=True,  # the claims are speed-ups timed inside units: no two units may share the cores
    **MATRIX_SWEEP,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
