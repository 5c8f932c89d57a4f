"""HBP preprocessing on a CUDA device (methods/spmv/hbp_build_cuda.py, kernels/hbp_build.cu).

The layout the kernels build must be the CPU build's, array for array, bit for bit: on every
shared SuiteSparse matrix, the shared edge cases and hypothesis matrices, for the hash, the sort
and the DP, at the paper's block shape and small odd ones. Each test runs on a GPU
(``@pytest.mark.cuda``, skipped without one) and on the emulated CUDA device, where every
access is also bounds- and race-checked.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from methods.spmv.hbp import ORDERINGS, build_hbp
from methods.spmv.hbp_build_cuda import build_hbp_cuda
from tests.methods.spmv.cases import EDGE_CASES, edge_matrix, matrix_files, shared_matrix

DEVICES = [pytest.param("cuda", marks=pytest.mark.cuda), pytest.param("cuda-emu", marks=pytest.mark.cuda_emu)]
SHAPES = [(512, 4096), (8, 16), (33, 7)]


def assert_same_layout(matrix, ordering: str, shape: tuple[int, int], device: str, what: str) -> None:
    expected = build_hbp(matrix, ordering, *shape)
    built, seconds = build_hbp_cuda(matrix, ordering, *shape, device=device)
    assert (built.shape, built.block_height, built.block_width, built.ordering) == \
        (expected.shape, expected.block_height, expected.block_width, ordering)
    for name, array in expected.arrays().items():
        got = built.arrays()[name]
        assert got.dtype == array.dtype and np.array_equal(got, array), f"{what} {ordering} {shape}: {name} differs"
    assert seconds["total"] == pytest.approx(seconds["count"] + seconds["build"]) and seconds["count"] >= 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("file_name", matrix_files())
def test_the_gpu_build_is_the_cpu_build_on_suitesparse(file_name, ordering, device, suitesparse_dir):
    matrix = shared_matrix(suitesparse_dir / file_name)
    for shape in SHAPES:
        assert_same_layout(matrix, ordering, shape, device, file_name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize(("case", "spec", "height", "width"), EDGE_CASES, ids=[case[0] for case in EDGE_CASES])
def test_the_gpu_build_is_the_cpu_build_on_edge_cases(case, spec, height, width, ordering, device):
    matrix = edge_matrix(spec)
    assert_same_layout(matrix, ordering, (height, width), device, case)
    assert_same_layout(matrix.astype(np.float32), ordering, (height, width), device, f"{case} fp32")


@settings(max_examples=25, deadline=None)
@given(nrows=st.integers(0, 80), ncols=st.integers(0, 80), density=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
       seed=st.integers(0, 2**16), height=st.integers(1, 40), width=st.integers(1, 40),
       ordering=st.sampled_from(ORDERINGS))
@pytest.mark.cuda_emu
def test_the_gpu_build_is_the_cpu_build_on_random_matrices(nrows, ncols, density, seed, height, width, ordering):
    matrix = sp.random(nrows, ncols, density=density, format="csr", rng=np.random.default_rng(seed))
    assert_same_layout(matrix, ordering, (height, width), "cuda-emu", f"{nrows}x{ncols} density {density}")


@pytest.mark.cuda_emu
def test_the_gpu_build_refuses_what_it_does_not_build():
    matrix = sp.random(10, 10, density=0.3, format="csr", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="ordering must be one of"):
        build_hbp_cuda(matrix, "heap", device="cuda-emu")
    with pytest.raises(ValueError, match="block_width must be an int in"):
        build_hbp_cuda(matrix, "hash", 512, 65537, device="cuda-emu")
    with pytest.raises(ValueError, match="shared memory"):  # 65536-row blocks: a 1 MB ordering scratch per warp
        build_hbp_cuda(matrix, "hash", 65536, 4096, device="cuda-emu")
