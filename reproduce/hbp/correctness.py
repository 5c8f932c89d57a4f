"""Correctness of every SpMV executor against scipy on every matrix.

Each unit is one matrix: ``y = A @ x`` for a random ``x`` in [-1, 1) (not all ones, which
hides errors), by scipy's CSR loop (the oracle) and by every executor of the device
(CPU: the numba CSR kernel, HBP with each ordering and the Regu2D-style format; CUDA: the
CSR kernels, cuSPARSE, HBP with each ordering and Regu2D). Errors are componentwise,
relative to ``|A||x|``, and Ginkgo's relative 2-norm. A matrix passes when every executor's componentwise error is at
most ``tolerance``. Complex matrices are checked on their real part (HBP is real).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from methods.spmv.accuracy import componentwise_error, norm2_error  # noqa: E402
from methods.spmv.csr import spmv_scipy  # noqa: E402
from methods.spmv.hbp import ORDERINGS, build_hbp  # noqa: E402
from methods.spmv.regu2d import build_regu2d  # noqa: E402
from reproduce.harness.artifact import Artifact, Context, Outcome, Summary, Unit  # noqa: E402
from reproduce.harness.data.matrix_sets import MATRIX_SWEEP, load_unit_matrix  # noqa: E402
from reproduce.harness.records import Record, metric  # noqa: E402
from reproduce.hbp import matrices  # noqa: E402
from reproduce.hbp.executors import REGU2D_SLICE_HEIGHT, cpu_executors, cuda_executors  # noqa: E402

# A short named list: correctness needs variety, not the whole SpMV set.
FULL_MATRICES = matrices.FULL[:12]
LAYOUT = {"block_height": 512, "block_width": 4096}


def run_unit(unit: Unit, ctx: Context) -> Outcome:
    matrix, provenance = load_unit_matrix(unit, ctx)
    real_part_only = bool(np.iscomplexobj(matrix.data))
    matrix = matrix.real if real_part_only else matrix
    x = ctx.rng(unit).uniform(-1.0, 1.0, matrix.shape[1])
    y_ref = spmv_scipy(matrix, x)
    layouts = {o: build_hbp(matrix, o, ctx.config["block_height"], ctx.config["block_width"]) for o in ORDERINGS}
    regu2d = build_regu2d(matrix, ctx.config["block_height"], slice_height=REGU2D_SLICE_HEIGHT[ctx.device.kind])
    metrics = {"nrows": metric(matrix.shape[0]), "ncols": metric(matrix.shape[1]), "nnz": metric(matrix.nnz)}
    for name, y in _results(matrix, layouts, regu2d, x, ctx).items():
        metrics[f"{name}_error"] = metric(componentwise_error(matrix, x, y, y_ref))
        metrics[f"{name}_norm2_error"] = metric(norm2_error(y, y_ref))
    worst = max(v["value"] for k, v in metrics.items() if k.endswith("_error") and "norm2" not in k)
    metrics["max_error"] = metric(worst)
    metrics["passed"] = metric(bool(worst <= ctx.config["tolerance"]))
    return Outcome(metrics=metrics, data={**provenance, "real_part_only": real_part_only})


def _results(matrix, layouts, regu2d, x, ctx: Context) -> dict:
    """Every executor's ``A @ x`` on the run's device, as NumPy arrays (scipy, the oracle, left out)."""
    if ctx.device.kind == "cuda":
        import cupy

        with cupy.cuda.Device(ctx.device.index):
            executors = cuda_executors(matrix, layouts, regu2d)
            x_gpu = cupy.asarray(x)
            return {name: cupy.asnumpy(run(x_gpu)) for name, run in executors.items() if not name.endswith("merge")}
    executors, close = cpu_executors(matrix, layouts, regu2d=regu2d)
    try:
        return {name: np.array(run(x)) for name, run in executors.items() if name != "csr_scipy"}
    finally:
        close()


def summarize(records: list[Record], ctx: Context) -> Summary:
    executors = sorted({k[:-len("_error")] for r in records for k in r.metrics
                        if k.endswith("_error") and not k.endswith("norm2_error") and k != "max_error"})
    table = pd.DataFrame([{
        "matrix": r.data.get("name") or r.unit, "rows": r.value("nrows"), "cols": r.value("ncols"),
        "nnz": r.value("nnz"), **{name: r.value(f"{name}_error") for name in executors},
        "passed": r.value("passed"),
    } for r in records]).sort_values("nnz", ignore_index=True)
    failed = table.loc[~table["passed"], "matrix"].tolist()
    notes = [f"{table['passed'].sum()} of {len(table)} matrices within {ctx.config['tolerance']:g} for every "
             f"executor ({', '.join(executors)}); the numbers are the componentwise errors against scipy."]
    if failed:
        notes.append(f"outside tolerance: {', '.join(failed)}")
    figure = _error_plot(table, executors, ctx.config["tolerance"])
    return Summary(table=table, figures=[("Error of each executor per matrix", figure)], notes=notes)


def _error_plot(table: pd.DataFrame, executors: list[str], tolerance: float):
    """Componentwise error against nnz per executor; exact results (error 0) are drawn at the floor."""
    floor = np.finfo(np.float64).eps / 16
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
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
        "smoke": {**LAYOUT, "generated": matrices.SMOKE, "tolerance": 1e-12},
        "quick": {**LAYOUT, "local": True, "generated": matrices.QUICK_LARGE, "tolerance": 1e-12},
        "full": {**LAYOUT, "named": FULL_MATRICES, "tolerance": 1e-12},
    },
    needs={
        "smoke": "nothing: 7 generated edge-case matrices.",
        "quick": "the .mtx files in REPRO_MATRIX_DIRS (offline) and three generated 1-4 M-row matrices; ~1 min.",
        "full": f"{len(FULL_MATRICES)} SuiteSparse matrices, downloaded on first use (repro fetch hbp/correctness).",
    },
    run_unit=run_unit,
    summarize=summarize,
    **MATRIX_SWEEP,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
