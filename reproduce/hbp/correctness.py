"""HBP groundwork: is the numba CSR kernel exact against scipy on every matrix?

Each unit is one matrix: ``y = A @ x`` for a random ``x`` in [-1, 1) (not all ones, which
hides errors), by scipy's CSR loop (the oracle) and by the parallel numba CSR kernel;
the errors are the componentwise error relative to ``|A||x|`` and Ginkgo's relative
2-norm. A matrix passes when the componentwise error is at most ``tolerance``.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from methods.spmv.accuracy import componentwise_error, norm2_error  # noqa: E402
from methods.spmv.csr import spmv_numba, spmv_scipy  # noqa: E402
from reproduce.harness.artifact import Artifact, Context, Outcome, Summary, Unit  # noqa: E402
from reproduce.harness.data.matrix_sets import MATRIX_OPTIONS, fetch_named, load_unit_matrix, matrix_units  # noqa: E402
from reproduce.harness.records import Record, metric  # noqa: E402
from reproduce.hbp import matrices  # noqa: E402

# A short named list: correctness needs variety, not the whole SpMV set.
FULL_MATRICES = matrices.FULL[:12]


def run_unit(unit: Unit, ctx: Context) -> Outcome:
    matrix, provenance = load_unit_matrix(unit, ctx)
    rng = ctx.rng(unit)
    x = rng.uniform(-1.0, 1.0, matrix.shape[1])
    if np.iscomplexobj(matrix.data):
        x = x + 1j * rng.uniform(-1.0, 1.0, matrix.shape[1])
    y_ref = spmv_scipy(matrix, x)
    y = spmv_numba(matrix, x)
    error = componentwise_error(matrix, x, y, y_ref)
    return Outcome(metrics={
        "nrows": metric(matrix.shape[0]),
        "ncols": metric(matrix.shape[1]),
        "nnz": metric(matrix.nnz),
        "componentwise_error": metric(error),
        "norm2_error": metric(norm2_error(y, y_ref)),
        "passed": metric(bool(error <= ctx.config["tolerance"])),
    }, data=provenance)


def summarize(records: list[Record], ctx: Context) -> Summary:
    table = pd.DataFrame([{
        "matrix": r.data.get("name") or r.unit, "rows": r.value("nrows"), "cols": r.value("ncols"),
        "nnz": r.value("nnz"), "componentwise error": r.value("componentwise_error"),
        "norm2 error": r.value("norm2_error"), "passed": r.value("passed"),
    } for r in records])
    failed = table.loc[~table["passed"], "matrix"].tolist()
    notes = [f"{table['passed'].sum()} of {len(table)} matrices within {ctx.config['tolerance']:g} "
             "(componentwise error of the numba CSR kernel against scipy)."]
    if failed:
        notes.append(f"outside tolerance: {', '.join(failed)}")
    figure = _error_plot(table, ctx.config["tolerance"])
    return Summary(table=table, figures=[("Error of the numba CSR kernel per matrix", figure)], notes=notes)


def _error_plot(table: pd.DataFrame, tolerance: float):
    """Componentwise error against nnz; exact results (error 0) are drawn at the floor."""
    floor = np.finfo(np.float64).eps / 16
    fig, ax = plt.subplots(figsize=(6, 3.5))
    errors = np.maximum(table["componentwise error"].astype(float), floor)
    ax.scatter(np.maximum(table["nnz"], 1), errors, s=18)
    ax.axhline(tolerance, color="tab:red", lw=1, label="tolerance")
    ax.set(xscale="log", yscale="log", xlabel="nonzeros", ylabel="max |y - y_ref| / (|A||x|)",
           title="numba CSR vs scipy (exact results at the floor)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


ARTIFACT = Artifact(
    paper="hbp",
    name="correctness",
    title="CSR SpMV correctness sweep: numba kernel against scipy",
    scales={
        "smoke": {"generated": matrices.SMOKE, "tolerance": 1e-12},
        "quick": {"local": True, "generated": matrices.QUICK_LARGE, "tolerance": 1e-12},
        "full": {"named": FULL_MATRICES, "tolerance": 1e-12},
    },
    needs={
        "smoke": "nothing: 7 generated edge-case matrices.",
        "quick": "the .mtx files in REPRO_MATRIX_DIRS (offline) and three generated 1-4 M-row matrices; ~1 min.",
        "full": f"{len(FULL_MATRICES)} SuiteSparse matrices, downloaded on first use (repro fetch hbp/correctness).",
    },
    units=matrix_units,
    run_unit=run_unit,
    summarize=summarize,
    options=MATRIX_OPTIONS,
    fetch=fetch_named,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
