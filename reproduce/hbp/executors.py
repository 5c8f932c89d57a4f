"""The SpMV executors the HBP artifacts compare, built for one matrix on one device.

Each executor is a callable ``f(x) -> y``: on the CPU over NumPy arrays, on CUDA over
CuPy arrays on the current device. HBP executors are named ``hbp_<device>`` for the
paper's hash ordering and ``hbp_<device>_<ordering>`` for the others; the Regu2D-style
format (the paper's "2D partitioning" baseline) is ``regu2d_<device>``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from methods.spmv.csr import spmv_numba, spmv_scipy
from methods.spmv.hbp import HBPMatrix
from methods.spmv.hbp_cpu import HBPCpuExecutor
from methods.spmv.regu2d import Regu2DMatrix, spmv_regu2d

# The CSR kernel each device's HBP speed-up is measured against, and the HBP executor.
BASELINE = {"cpu": "csr_numba", "cuda": "csr_scalar"}
HBP = {"cpu": "hbp_cpu", "cuda": "hbp_cuda"}
REGU2D = {"cpu": "regu2d_cpu", "cuda": "regu2d_cuda"}
# Regu2D's slice height per device: the AVX-512 width on the CPU (the format's default), a warp on CUDA.
REGU2D_SLICE_HEIGHT = {"cpu": None, "cuda": 32}


def hbp_name(device_kind: str, ordering: str) -> str:
    return HBP[device_kind] if ordering == "hash" else f"{HBP[device_kind]}_{ordering}"


def cpu_executors(matrix: sp.csr_matrix, layouts: dict[str, HBPMatrix], threads: int | None = None,
                  regu2d: Regu2DMatrix | None = None) -> tuple[dict[str, Callable], Callable[[], None]]:
    """scipy, numba CSR, one threaded HBP executor per layout and Regu2D (if given); and a function that stops
    the HBP executors' threads. Regu2D runs on numba's thread pool."""
    out = np.empty(matrix.shape[0], matrix.dtype)
    hbp = {ordering: HBPCpuExecutor(layout, threads=threads) for ordering, layout in layouts.items()}
    executors = {"csr_scipy": lambda x: spmv_scipy(matrix, x), "csr_numba": lambda x: spmv_numba(matrix, x, out=out)}
    executors.update({hbp_name("cpu", ordering): executor for ordering, executor in hbp.items()})
    if regu2d is not None:
        regu2d_out = np.empty(matrix.shape[0], regu2d.dtype)
        executors[REGU2D["cpu"]] = lambda x: spmv_regu2d(regu2d, x, out=regu2d_out)

    def close():
        for executor in hbp.values():
            executor.close()

    return executors, close


def cuda_executors(matrix: sp.csr_matrix, layouts: dict[str, HBPMatrix],
                   regu2d: Regu2DMatrix | None = None) -> dict[str, Callable]:
    """The CSR kernels (scalar, vector), cuSPARSE, HBP per layout, HBP without its merge (hash only) and Regu2D
    (if given; build it with ``slice_height=32``)."""
    import cupyx.scipy.sparse as gpu_sparse

    from methods.spmv import cuda

    on_gpu = gpu_sparse.csr_matrix(matrix)
    executors = {"csr_scalar": cuda.CsrScalarCuda(on_gpu), "csr_vector": cuda.CsrVectorCuda(on_gpu),
                 "csr_cusparse": cuda.CsrCusparse(on_gpu)}
    for ordering, layout in layouts.items():
        executors[hbp_name("cuda", ordering)] = cuda.HBPCuda(layout)
    if "hash" in layouts:
        executors["hbp_cuda_no_merge"] = executors["hbp_cuda"].spmv_only
    if regu2d is not None:
        executors[REGU2D["cuda"]] = cuda.Regu2DCuda(regu2d)
    return executors
