"""Correctness of every SpMV executor against scipy on every matrix.

Each unit is one matrix: ``y = A @ x`` for a random ``x`` in [-1, 1) (not all ones, which
hides errors), by scipy's CSR loop (the oracle) and by every executor of the device
(CPU: the numba CSR kernel, HBP with each ordering and the Regu2D-style format; CUDA: the
CSR kernels, cuSPARSE, HBP with each ordering and Regu2D). Errors are componentwise,
relative to ``|A||x|``, and Ginkgo's relative 2-norm. A matrix passes when every executor's componentwise error is at
most ``tolerance``. Complex matrices are checked on their real part (HBP is real).

On the emulated CUDA device (``--device cuda-emu``) the CUDA executors but cuSPARSE run the
same kernels with every access checked, each once, and their memory traffic is recorded too:
bytes per nonzero in 32-byte sectors with no reuse and with x reused within a thread block,
beside the CSR minimum (:func:`reproduce.hbp.executors.run_emulated`). Matrices above
the limits of :func:`~reproduce.hbp.executors.check_emulator_size` are skipped there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from methods.spmv.accuracy import componentwise_error, norm2_error
from methods.spmv.csr import spmv_scipy
from methods.spmv.formats import FORMATS, hbp_block_shape
from methods.spmv.hbp import ORDERINGS
from methods.spmv.stats import row_length_stats
from reproduce.harness.artifact import Artifact, Context, Outcome, Summary, Unit
from reproduce.harness.data.matrix_sets import MATRIX_SWEEP, load_unit_matrix
from reproduce.harness.records import Record, metric
from reproduce.hbp import matrices
from reproduce.hbp.executors import (
    EMULATED,
    check_emulator_size,
    device_context,
    device_executors,
    run_emulated,
    traffic_columns,
    traffic_executors,
    traffic_notes,
    traffic_plot,
)

# A short named list: correctness needs variety, not the whole SpMV set.
FULL_MATRICES = matrices.FULL[:12]


def run_unit(unit: Unit, ctx: Context) -> Outcome:
    with device_context(ctx.device):  # on a GPU: its layouts and executors on that device
        return _run_unit(unit, ctx)


def _run_unit(unit: Unit, ctx: Context) -> Outcome:
    matrix, provenance = load_unit_matrix(unit, ctx)
    if ctx.device.kind == EMULATED:
        check_emulator_size(matrix)
    real_part_only = bool(np.iscomplexobj(matrix.data))
    matrix = matrix.real if real_part_only else matrix
    x = ctx.rng(unit).uniform(-1.0, 1.0, matrix.shape[1])
    y_ref = spmv_scipy(matrix, x)
    device = ctx.device.kind
    layouts = {"csr": matrix, "hbp": {o: FORMATS["hbp"].build(matrix, device, ordering=o)[0] for o in ORDERINGS},
               "regu2d": FORMATS["regu2d"].build(matrix, device)[0]}
    metrics = {"nrows": metric(matrix.shape[0]), "ncols": metric(matrix.shape[1]), "nnz": metric(matrix.nnz),
               "row_length_skewness": metric(row_length_stats(matrix)["row_length_skewness"])}
    results, traffic = _results(matrix, layouts, x, ctx)
    for name, y in results.items():
        metrics[f"{name}_error"] = metric(componentwise_error(matrix, x, y, y_ref))
        metrics[f"{name}_norm2_error"] = metric(norm2_error(y, y_ref))
    worst = max(v["value"] for k, v in metrics.items() if k.endswith("_error") and "norm2" not in k)
    metrics["max_error"] = metric(worst)
    metrics["passed"] = metric(bool(worst <= ctx.config["tolerance"]))
    metrics.update(traffic)
    data = {**provenance, "real_part_only": real_part_only, "hbp_block_shape": list(hbp_block_shape(matrix, device))}
    return Outcome(metrics=metrics, data=data)


def _results(matrix, layouts, x, ctx: Context) -> tuple[dict, dict]:
    """Every executor's ``A @ x`` on the run's device, as NumPy arrays (scipy, the oracle, left out), and the
    memory-traffic metrics (on the emulated device only; otherwise none)."""
    if ctx.device.kind == EMULATED:
        calls, traffic = run_emulated(device_executors(matrix, layouts, EMULATED), x, matrix)
        return {name: call.result for name, call in calls.items()}, traffic
    if ctx.device.kind == "cuda":
        import cupy

        executors = device_executors(matrix, layouts, "cuda")
        x_gpu = cupy.asarray(x)
        return {name: cupy.asnumpy(run(x_gpu)) for name, run in executors.items()}, {}
    executors = device_executors(matrix, layouts, "cpu")
    return {name: np.array(run(x)) for name, run in executors.items() if name != "csr_scipy"}, {}


def summarize(records: list[Record], ctx: Context) -> Summary:
    executors = sorted({k[:-len("_error")] for r in records for k in r.metrics
                        if k.endswith("_error") and not k.endswith("norm2_error") and k != "max_error"})
    counted = traffic_executors(records)  # executors whose traffic was counted (on the emulated device)
    table = pd.DataFrame([{
        "matrix": r.data.get("name") or r.unit, "rows": r.value("nrows"), "cols": r.value("ncols"),
        "nnz": r.value("nnz"), **{name: r.value(f"{name}_error") for name in executors},
        "passed": r.value("passed"), **traffic_columns(r, counted),
    } for r in records]).sort_values("nnz", ignore_index=True)
    failed = table.loc[~table["passed"], "matrix"].tolist()
    notes = [f"{table['passed'].sum()} of {len(table)} matrices within {ctx.config['tolerance']:g} for every "
             f"executor ({', '.join(executors)}); the numbers are the componentwise errors against scipy."]
    if failed:
        notes.append(f"outside tolerance: {', '.join(failed)}")
    notes += traffic_notes(table, counted)
    if "hbp_cuda" in counted:
        notes += _hbp_traffic_notes(records)
    figures = [("Error of each executor per matrix", _error_plot(table, executors, ctx.config["tolerance"]))]
    if counted:
        figures.append(("Memory traffic per nonzero of each executor (median)", traffic_plot(table, counted)))
    return Summary(table=table, figures=figures, notes=notes)


# Row-length skewness above which a matrix counts as skewed (HBP's case against one warp per row).
SKEWED = 10.0


def _hbp_traffic_notes(records: list[Record]) -> list[str]:
    """HBP's (hash) traffic under perfect x reuse against csr_scalar's on every matrix, and against
    csr_vector's on the skewed ones (row-length skewness > :data:`SKEWED`)."""
    def ratio(record, other):
        return (record.value("hbp_cuda_sector_bytes_per_nnz_xreuse")
                / record.value(f"{other}_sector_bytes_per_nnz_xreuse"))

    counted = [r for r in records if r.value("nnz") and r.value("hbp_cuda_sector_bytes_per_nnz_xreuse")]
    if not counted:
        return []
    worst = max(counted, key=lambda r: ratio(r, "csr_scalar"))
    above = sum(ratio(r, "csr_scalar") > 1 for r in counted)
    notes = [f"HBP (hash) traffic with x reused / csr_scalar's: at most {ratio(worst, 'csr_scalar'):.2f} "
             f"({worst.data.get('name') or worst.unit}), above 1 on {above} of {len(counted)} matrices."]
    skewed = [r for r in counted if (r.value("row_length_skewness") or 0) > SKEWED]
    if skewed:
        worst = max(skewed, key=lambda r: ratio(r, "csr_vector"))
        name = worst.data.get("name") or worst.unit
        notes.append(f"On the {len(skewed)} matrices with row-length skewness > {SKEWED:g}, HBP / csr_vector traffic "
                     f"(x reused) is at most {ratio(worst, 'csr_vector'):.2f} ({name}).")
    return notes


def _error_plot(table: pd.DataFrame, executors: list[str], tolerance: float):
    """Componentwise error against nnz per executor; exact results (error 0) are drawn at the floor."""
    floor = np.finfo(np.float64).eps / 16
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    for name in executors:
        ax.scatter(np.maximum(table["nnz"], 1), np.maximum(table[name].astype(float), floor), s=14, label=name)
    ax.axhline(tolerance, color="tab:red", lw=1, label="tolerance")
    ax.set(xscale="log", yscale="log", xlabel="nonzeros", ylabel="max |y - y_ref| / (|A||x|)",
           title="SpMV executors against scipy (exact results at the floor)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


ARTIFACT = Artifact(
    paper="hbp",
    name="correctness",
    title="SpMV correctness: every executor against scipy",
    scales={
        "smoke": {"generated": matrices.SMOKE, "tolerance": 1e-12},
        "quick": {"local": True, "generated": matrices.QUICK_LARGE, "tolerance": 1e-12},
        "full": {"named": FULL_MATRICES, "tolerance": 1e-12},
    },
    needs={
        "smoke": "nothing: 7 generated edge-case matrices.",
        "quick": "the .mtx files in REPRO_MATRIX_DIRS (offline) and four generated 1-4 M-row matrices; ~2 min "
                 "(on --device cuda-emu the generated ones are skipped, being above its 2 M nonzero limit).",
        "full": f"{len(FULL_MATRICES)} SuiteSparse matrices, downloaded on first use (repro fetch hbp/correctness).",
    },
    run_unit=run_unit,
    summarize=summarize,
    devices=("cpu", "cuda", EMULATED),
    **MATRIX_SWEEP,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
