"""pytest-benchmark micro-benchmarks: one per SpMV kernel and one per preprocessing routine.

The matrices are the seeded asv factories of ``benchmarks/common.py`` (banded, power-law and
uniform, 50k-200k rows, float64). Each kernel and each routine is its own test function,
parametrised by matrix only, so ``--benchmark-group-by=param`` puts every format side by side
for one matrix (SpMV groups are ``spmv-<matrix>``, preprocessing groups ``build-<matrix>``).
Every result is checked against scipy before it is timed: an SpMV against ``A @ x``, a
preprocessed layout by its round trip to CSR and by its SpMV.
"""

from collections.abc import Callable

import numpy as np
import pytest
import scipy.sparse as sp

from benchmarks.common import MATRICES, matrix, vector
from methods.spmv.accuracy import componentwise_error
from methods.spmv.csr import spmv_numba, spmv_scipy
from methods.spmv.hbp import build_hbp
from methods.spmv.hbp_cpu import HBPCpuExecutor
from methods.spmv.regu2d import build_regu2d, spmv_regu2d

TOLERANCE = 1e-12
SPMV_CASES = pytest.mark.parametrize("name", list(MATRICES), ids=[f"spmv-{name}" for name in MATRICES])
BUILD_CASES = pytest.mark.parametrize("name", list(MATRICES), ids=[f"build-{name}" for name in MATRICES])


def _cpu_kernel(csr: sp.csr_matrix) -> dict[str, Callable]:
    """Makers of each CPU kernel: ``make() -> (run(x) -> y, close())``; layouts are built outside the timing."""
    out = np.empty(csr.shape[0])

    def hbp():
        executor = HBPCpuExecutor(build_hbp(csr, "hash"))
        return executor, executor.close

    def regu2d():
        layout = build_regu2d(csr)
        return (lambda x: spmv_regu2d(layout, x, out=out)), (lambda: None)

    return {"csr_scipy": lambda: ((lambda x: spmv_scipy(csr, x)), lambda: None),
            "csr_numba": lambda: ((lambda x: spmv_numba(csr, x, out=out)), lambda: None),
            "hbp_cpu": hbp, "regu2d_cpu": regu2d}


def _cuda_kernel(csr: sp.csr_matrix) -> dict[str, Callable]:
    """Makers of each CUDA executor over the matrix on the current device (CuPy vectors in and out)."""
    import cupyx.scipy.sparse as gpu_sparse

    from methods.spmv import cuda

    return {"csr_scalar": lambda: cuda.CsrScalarCuda(gpu_sparse.csr_matrix(csr)),
            "csr_vector": lambda: cuda.CsrVectorCuda(gpu_sparse.csr_matrix(csr)),
            "csr_cusparse": lambda: cuda.CsrCusparse(gpu_sparse.csr_matrix(csr)),
            "hbp_cuda": lambda: cuda.HBPCuda(build_hbp(csr, "hash")),
            "regu2d_cuda": lambda: cuda.Regu2DCuda(build_regu2d(csr, slice_height=32))}


def _assert_matches_scipy(csr: sp.csr_matrix, x: np.ndarray, y: np.ndarray, what: str) -> None:
    error = componentwise_error(csr, x, np.asarray(y), csr @ x)
    assert error <= TOLERANCE, f"{what}: componentwise error {error:.3g} against scipy"


def _cpu_spmv_benchmark(kernel: str):
    @SPMV_CASES
    def test(benchmark, name):
        csr, x = matrix(name), vector(matrix(name).shape[1])
        run, close = _cpu_kernel(csr)[kernel]()
        try:
            _assert_matches_scipy(csr, x, run(x), kernel)
            benchmark(run, x)
        finally:
            close()

    test.__doc__ = f"SpMV by {kernel}, checked against scipy first."
    return test


def _cuda_spmv_benchmark(kernel: str):
    @pytest.mark.cuda
    @SPMV_CASES
    def test(benchmark, name):
        import cupy

        csr, x = matrix(name), vector(matrix(name).shape[1])
        executor = _cuda_kernel(csr)[kernel]()
        x_gpu = cupy.asarray(x)
        _assert_matches_scipy(csr, x, cupy.asnumpy(executor(x_gpu)), kernel)

        def run():
            executor(x_gpu)
            cupy.cuda.get_current_stream().synchronize()  # host timing: wait for the kernel

        benchmark(run)

    test.__doc__ = f"SpMV by {kernel} on the GPU (host time, synchronised), checked against scipy first."
    return test


# (routine, build(csr) -> layout): the HBP orderings (the paper's hash, the sorting approach, the
# Regu2D-style DP grouping) and the Regu2D format itself.
BUILDS = {
    "hbp_hash": lambda csr: build_hbp(csr, "hash"),
    "hbp_sort": lambda csr: build_hbp(csr, "sort"),
    "hbp_dp": lambda csr: build_hbp(csr, "dp"),
    "regu2d": build_regu2d,
}


def _build_benchmark(routine: str):
    @BUILD_CASES
    def test(benchmark, name):
        csr = matrix(name)
        build = BUILDS[routine]
        layout = build(csr)  # compiles the numba kernels outside the timing
        back = layout.to_csr()
        assert (back != csr).nnz == 0 and back.nnz == csr.nnz, f"{routine}: round trip differs from the matrix"
        x = vector(csr.shape[1])
        if routine == "regu2d":
            _assert_matches_scipy(csr, x, spmv_regu2d(layout, x), routine)
        else:
            with HBPCpuExecutor(layout) as executor:
                _assert_matches_scipy(csr, x, executor(x), routine)
        benchmark(build, csr)

    test.__doc__ = f"Preprocessing by {routine}, its layout checked against scipy first."
    return test


test_spmv_csr_scipy = _cpu_spmv_benchmark("csr_scipy")
test_spmv_csr_numba = _cpu_spmv_benchmark("csr_numba")
test_spmv_hbp_cpu = _cpu_spmv_benchmark("hbp_cpu")
test_spmv_regu2d_cpu = _cpu_spmv_benchmark("regu2d_cpu")
test_spmv_csr_scalar_cuda = _cuda_spmv_benchmark("csr_scalar")
test_spmv_csr_vector_cuda = _cuda_spmv_benchmark("csr_vector")
test_spmv_cusparse_cuda = _cuda_spmv_benchmark("csr_cusparse")
test_spmv_hbp_cuda = _cuda_spmv_benchmark("hbp_cuda")
test_spmv_regu2d_cuda = _cuda_spmv_benchmark("regu2d_cuda")
test_build_hbp_hash = _build_benchmark("hbp_hash")
test_build_hbp_sort = _build_benchmark("hbp_sort")
test_build_hbp_dp = _build_benchmark("hbp_dp")
test_build_regu2d = _build_benchmark("regu2d")

