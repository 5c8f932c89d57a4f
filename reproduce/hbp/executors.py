"""The SpMV executors the HBP artifacts compare, built for one matrix on one device, and the
emulated CUDA device's measurements that both HBP artifacts share.

Each executor is a callable ``f(x) -> y``: on the CPU over NumPy arrays, on CUDA over
CuPy arrays on the current device, on the emulated CUDA device (``cuda-emu``,
:mod:`cuda_emu`) over its device arrays. HBP executors are named ``hbp_<device>``
for the paper's hash ordering and ``hbp_<device>_<ordering>`` for the others; the
Regu2D-style format (the paper's "2D partitioning" baseline) is ``regu2d_<device>``. The
emulated device runs the CUDA executors under the same names (``csr_scalar``,
``hbp_cuda``, ...), without cuSPARSE, which it does not have.

On ``cuda-emu`` (:func:`run_emulated`) every executor is called once inside
``cuda_emu.recorded()``: the result is checked as on a GPU, and the launches' 32-byte
sectors give the memory traffic per nonzero under two bounds, no cache reuse at all and
perfect reuse of ``x`` within a thread block (``<executor>_sector_bytes_per_nnz`` and
``..._xreuse``), beside the CSR minimum :func:`csr_bytes` (``csr_min_bytes_per_nnz``). Its
times say nothing of a GPU's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from methods.spmv.formats import FORMATS
from reproduce.harness.artifact import SkipUnit
from reproduce.harness.device import EMULATED
from reproduce.harness.records import Record, metric

# The CSR kernel each device's HBP speed-up is measured against, and the HBP executor.
BASELINE = {"cpu": "csr_numba", "cuda": "csr_scalar", EMULATED: "csr_scalar"}
HBP = {"cpu": "hbp_cpu", "cuda": "hbp_cuda", EMULATED: "hbp_cuda"}
REGU2D = {"cpu": "regu2d_cpu", "cuda": "regu2d_cuda", EMULATED: "regu2d_cuda"}

# The largest matrices the HBP artifacts run on the emulated device, which checks and counts every
# thread's every access (about 10-20 M accesses a second on two cores): every executor reads
# every nonzero (csr_vector runs 32 threads and five shuffles per row), so a unit's cost follows
# its nonzeros (tools/emulator_cost.py measures it). The limit keeps a unit within a few minutes;
# the quick sets' generated 16-28 M nonzero matrices are beyond it.
EMULATOR_MAX_NNZ = 2_000_000


def device_executors(matrix: sp.csr_matrix, layouts: dict[str, object], device: str) -> dict[str, Callable]:
    """Every executor on ``device`` of every format in ``layouts``, by name (:mod:`methods.spmv.formats`).

    ``layouts`` maps a format name to its layout built for ``device``, or, for ``"hbp"``, to a
    dict ordering -> layout: HBP executors are named ``hbp_<device>`` for the paper's hash ordering
    and ``hbp_<device>_<ordering>`` for the others.
    """
    executors = {}
    for format_name, layout in layouts.items():
        variants = layout if isinstance(layout, dict) else {"hash": layout}
        for ordering, variant in variants.items():
            for name, make in FORMATS[format_name].executors(device).items():
                executors[name if ordering == "hash" else f"{name}_{ordering}"] = make(matrix, variant, device)
    return executors


def device_context(device) -> contextlib.AbstractContextManager:
    """The CuPy context of a CUDA ``device`` (a harness Device; its index), so that layouts and executors are
    built and run there; a no-op on any other device."""
    if device.kind == "cuda":
        import cupy

        return cupy.cuda.Device(device.index)
    return contextlib.nullcontext()


def csr_bytes(matrix, itemsize: int) -> int:
    """Bytes one CSR SpMV moves at least: values, int32 columns and row pointers, x and y, each once."""
    nrows, ncols = matrix.shape
    return itemsize * matrix.nnz + 4 * matrix.nnz + 4 * (nrows + 1) + itemsize * ncols + itemsize * nrows


# ---- the emulated CUDA device ------------------------------------------------------------------
def check_emulator_size(matrix) -> None:
    """Raise SkipUnit for a matrix beyond the emulated device's limit of :data:`EMULATOR_MAX_NNZ` nonzeros."""
    if matrix.nnz > EMULATOR_MAX_NNZ:
        raise SkipUnit(f"{matrix.nnz:,} nonzeros exceed the emulated CUDA device's limit of {EMULATOR_MAX_NNZ:,} "
                       "per matrix: it checks and counts every thread's every access, so this matrix would take "
                       "far too long; run it on a GPU")


@dataclass(frozen=True)
class EmulatedCall:
    """One call of an executor on the emulated device: its result on the host and its wall time."""

    result: np.ndarray
    seconds: float


def run_emulated(executors: dict[str, Callable], x: np.ndarray, matrix) -> tuple[dict[str, EmulatedCall], dict]:
    """Call every executor once on the emulated device, each inside ``cuda_emu.recorded()``.

    ``x`` is the host input (uploaded here). Returns each executor's :class:`EmulatedCall`
    and the traffic metrics: per executor ``<name>_sector_bytes_per_nnz`` (the 32-byte
    sectors of all its launches in that call, no reuse) and ``<name>_sector_bytes_per_nnz_xreuse``
    (each sector of x counted once per thread block), and ``csr_min_bytes_per_nnz``, the CSR
    minimum (:func:`csr_bytes`); all None for a matrix without nonzeros.
    """
    import cuda_emu

    nnz = matrix.nnz
    x_device = cuda_emu.asarray(x)
    calls, traffic = {}, {}
    for name, run in executors.items():
        with cuda_emu.recorded() as reports:
            start = time.perf_counter()
            y = run(x_device)
            seconds = time.perf_counter() - start
        calls[name] = EmulatedCall(cuda_emu.asnumpy(y), seconds)
        for suffix, reused in (("", ()), ("_xreuse", ("x",))):
            moved = sum(report.sector_bytes(reused=reused) for report in reports)
            traffic[f"{name}_sector_bytes_per_nnz{suffix}"] = metric(moved / nnz if nnz else None, "B")
    traffic["csr_min_bytes_per_nnz"] = metric(csr_bytes(matrix, matrix.dtype.itemsize) / nnz if nnz else None, "B")
    return calls, traffic


TRAFFIC_SUFFIX = "_sector_bytes_per_nnz"
CSR_MINIMUM = "CSR min B/nnz"


def traffic_executors(records: list[Record]) -> list[str]:
    """The executors whose traffic the records hold (none off the emulated device), sorted by name."""
    return sorted({key[:-len(TRAFFIC_SUFFIX)] for record in records for key in record.metrics
                   if key.endswith(TRAFFIC_SUFFIX)})


def traffic_columns(record: Record, executors: list[str]) -> dict:
    """The summary-table cells of one record's traffic: the CSR minimum, then per executor both bounds."""
    if not executors:
        return {}
    columns = {CSR_MINIMUM: record.value("csr_min_bytes_per_nnz")}
    for name in executors:
        columns[f"{name} B/nnz"] = record.value(f"{name}{TRAFFIC_SUFFIX}")
        columns[f"{name} B/nnz x reuse"] = record.value(f"{name}{TRAFFIC_SUFFIX}_xreuse")
    return columns


def _medians(table: pd.DataFrame, executors: list[str]) -> tuple[float, dict[str, tuple[float, float]]]:
    def median(column: str) -> float:
        return float(pd.to_numeric(table[column], errors="coerce").median())

    return median(CSR_MINIMUM), {name: (median(f"{name} B/nnz"), median(f"{name} B/nnz x reuse"))
                                 for name in executors}


def traffic_notes(table: pd.DataFrame, executors: list[str]) -> list[str]:
    """One sentence on the medians of the traffic columns (none if the table has none)."""
    if not executors:
        return []
    csr, medians = _medians(table, executors)
    figures = ", ".join(f"{name} {reuse:.1f} to {no_reuse:.1f}" for name, (no_reuse, reuse) in medians.items())
    return [f"Memory traffic counted on the emulated CUDA device, bytes per nonzero in 32-byte sectors, median over "
            f"the matrices with nonzeros, from perfect reuse of x within a thread block to no reuse at all: {figures}; "
            f"the CSR minimum (every array read or written once) is {csr:.1f}."]


def traffic_plot(table: pd.DataFrame, executors: list[str]):
    """Median bytes per nonzero of each executor, both bounds, against the CSR minimum."""
    from matplotlib.figure import Figure

    csr, medians = _medians(table, executors)
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    positions = np.arange(len(executors))
    ax.bar(positions - 0.2, [medians[e][0] for e in executors], width=0.4, color="tab:red", label="no reuse")
    ax.bar(positions + 0.2, [medians[e][1] for e in executors], width=0.4, color="tab:blue",
           label="x reused within a thread block")
    ax.axhline(csr, color="black", lw=1, ls="--", label="CSR minimum")
    ax.set_xticks(positions, executors, rotation=20, fontsize=8)
    ax.set(ylabel="bytes per nonzero (median)", title="Memory traffic on the emulated CUDA device")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
