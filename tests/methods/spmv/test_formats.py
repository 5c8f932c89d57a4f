"""The registry of SpMV formats: builds per device, executors per device, bytes per nonzero."""

import numpy as np
import pytest
import scipy.sparse as sp

from methods.spmv.accuracy import componentwise_error
from methods.spmv.formats import CPU, CUDA, DEVICES, EMULATED, FORMATS, hbp_block_shape
from methods.spmv.hbp import GPU_BLOCK_SHAPE, cpu_block_shape


@pytest.fixture(scope="module")
def matrix():
    return sp.random(300, 500, density=0.02, format="csr", rng=np.random.default_rng(3))


def test_every_cpu_executor_of_every_format_matches_scipy(matrix):
    x = np.random.default_rng(4).uniform(-1.0, 1.0, matrix.shape[1])
    names = []
    for spmv_format in FORMATS.values():
        layout, seconds = spmv_format.build(matrix, CPU)
        assert seconds["total"] >= 0
        for name, make in spmv_format.executors(CPU).items():
            names.append(name)
            y = make(matrix, layout, CPU)(x)
            assert componentwise_error(matrix, x, y, matrix @ x) <= 1e-12, name
    assert names == ["csr_scipy", "csr_numba", "hbp_cpu", "regu2d_cpu"]


def test_the_emulated_device_has_every_cuda_executor_but_cusparse():
    for spmv_format in FORMATS.values():
        on_gpu, emulated = spmv_format.executors(CUDA), spmv_format.executors(EMULATED)
        assert set(emulated) == set(on_gpu) - spmv_format.gpu_only
    assert "csr_cusparse" in FORMATS["csr"].executors(CUDA)
    assert "csr_cusparse" not in FORMATS["csr"].executors(EMULATED)
    with pytest.raises(ValueError, match="device must be one of"):
        FORMATS["hbp"].executors("tpu")
    assert DEVICES == (CPU, CUDA, EMULATED)


def test_builds_follow_the_device(matrix):
    assert hbp_block_shape(matrix, CUDA) == hbp_block_shape(matrix, EMULATED) == GPU_BLOCK_SHAPE
    assert hbp_block_shape(matrix, CPU) == cpu_block_shape(matrix.shape, 8)
    assert hbp_block_shape(matrix.astype(np.float32), CPU) == cpu_block_shape(matrix.shape, 4)
    cpu_layout, _ = FORMATS["hbp"].build(matrix, CPU)
    gpu_layout, _ = FORMATS["hbp"].build(matrix, EMULATED, ordering="sort")  # built by the GPU kernels
    dp_layout, _ = FORMATS["hbp"].build(matrix, EMULATED, ordering="dp")
    assert (cpu_layout.block_height, cpu_layout.block_width) == cpu_block_shape(matrix.shape, 8)
    assert (gpu_layout.block_height, gpu_layout.block_width, gpu_layout.ordering) == (*GPU_BLOCK_SHAPE, "sort")
    assert (dp_layout.block_height, dp_layout.block_width, dp_layout.ordering) == (*GPU_BLOCK_SHAPE, "dp")
    assert FORMATS["regu2d"].build(matrix, CUDA)[0].slice_height == 32
    assert FORMATS["regu2d"].build(matrix, CPU)[0].slice_height == 8  # the AVX-512 width in fp64


def test_csr_build_is_a_copy_and_its_bytes_are_the_csr_arrays(matrix):
    copy, _ = FORMATS["csr"].build(matrix, CPU)
    assert (copy != matrix).nnz == 0
    assert not np.shares_memory(copy.data, matrix.data) and not np.shares_memory(copy.indices, matrix.indices)
    expected = (12 * matrix.nnz + 4 * (matrix.shape[0] + 1)) / matrix.nnz
    assert FORMATS["csr"].bytes_per_nonzero(copy) == pytest.approx(expected)
    assert np.isnan(FORMATS["csr"].bytes_per_nonzero(sp.csr_matrix((3, 3))))
    hbp, _ = FORMATS["hbp"].build(matrix, CPU)
    assert FORMATS["hbp"].bytes_per_nonzero(hbp) == hbp.nbytes() / matrix.nnz
