"""pytest-benchmark micro-benchmarks: one per SpMV executor and one per preprocessing routine, from the registry.

The matrices are the seeded asv factories of ``benchmarks/common.py`` (banded, power-law and
uniform, 50k-200k rows, float64); the executors and builds are those of
:data:`methods.spmv.formats.FORMATS`. Each executor and each build is its own test, parametrised
by matrix only, so ``--benchmark-group-by=param`` puts every format side by side for one matrix
(SpMV groups are ``spmv-<matrix>``, preprocessing groups ``build-<matrix>``). Every result is
checked against scipy before it is timed: an SpMV against ``A @ x``, a preprocessed layout by its
round trip to CSR and by its SpMV.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from benchmarks.common import MATRICES, executor_formats, make_executor, matrix, vector
from methods.spmv.accuracy import componentwise_error
from methods.spmv.formats import CPU, CUDA, FORMATS
from methods.spmv.hbp import GPU_BLOCK_SHAPE, ORDERINGS, build_hbp

TOLERANCE = 1e-12
SPMV_CASES = pytest.mark.parametrize("name", list(MATRICES), ids=[f"spmv-{name}" for name in MATRICES])
BUILD_CASES = pytest.mark.parametrize("name", list(MATRICES), ids=[f"build-{name}" for name in MATRICES])


def _assert_matches_scipy(csr: sp.csr_matrix, x: np.ndarray, y: np.ndarray, what: str) -> None:
    error = componentwise_error(csr, x, np.asarray(y), csr @ x)
    assert error <= TOLERANCE, f"{what}: componentwise error {error:.3g} against scipy"


@SPMV_CASES
@pytest.mark.parametrize("kernel", list(executor_formats(CPU)))
def test_spmv_cpu(benchmark, name, kernel):
    """SpMV by each CPU executor (layout built outside the timing), checked against scipy first."""
    csr, x = matrix(name), vector(matrix(name).shape[1])
    run = make_executor(csr, CPU, kernel)
    _assert_matches_scipy(csr, x, run(x), kernel)
    benchmark(run, x)


@pytest.mark.cuda
@SPMV_CASES
@pytest.mark.parametrize("kernel", list(executor_formats(CUDA)))
def test_spmv_cuda(benchmark, name, kernel):
    """SpMV by each CUDA executor on the GPU (host time, synchronised), checked against scipy first."""
    import cupy

    csr, x = matrix(name), vector(matrix(name).shape[1])
    executor = make_executor(csr, CUDA, kernel)
    x_gpu = cupy.asarray(x)
    _assert_matches_scipy(csr, x, cupy.asnumpy(executor(x_gpu)), kernel)

    def run():
        executor(x_gpu)
        cupy.cuda.get_current_stream().synchronize()  # host timing: wait for the kernel

    benchmark(run)


def _check_layout(csr: sp.csr_matrix, layout, spmv_format, what: str) -> None:
    """The layout converts back to the matrix exactly and its SpMV matches scipy."""
    back = layout.to_csr() if hasattr(layout, "to_csr") else layout
    assert (back != csr).nnz == 0 and back.nnz == csr.nnz, f"{what}: round trip differs from the matrix"
    x = vector(csr.shape[1])
    name, make = next(iter(spmv_format.executors(CPU).items()))
    _assert_matches_scipy(csr, x, make(csr, layout, CPU)(x), f"{what} ({name})")


@BUILD_CASES
@pytest.mark.parametrize("format_name", list(FORMATS))
def test_build(benchmark, name, format_name):
    """Each format's preprocessing for the CPU (CSR: the copy of its arrays), its layout checked first."""
    csr, spmv_format = matrix(name), FORMATS[format_name]
    _check_layout(csr, spmv_format.build(csr, CPU)[0], spmv_format, format_name)  # also compiles the kernels
    benchmark(spmv_format.build, csr, CPU)


@BUILD_CASES
@pytest.mark.parametrize("ordering", ORDERINGS)
def test_build_hbp_paper_shape(benchmark, name, ordering):
    """HBP's preprocessing by each ordering at the paper's 512 x 4096 blocks, its layout checked first."""
    csr = matrix(name)
    _check_layout(csr, build_hbp(csr, ordering, *GPU_BLOCK_SHAPE), FORMATS["hbp"], f"hbp {ordering}")
    benchmark(build_hbp, csr, ordering, *GPU_BLOCK_SHAPE)
