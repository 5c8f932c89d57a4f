"""tools/cuda_occupancy.py reads ptxas's resource report of every kernel the executors launch."""

import shutil

import numpy as np
import pytest

from methods.spmv import cuda_kernels
from tests.tools import load_tool

tool = load_tool("cuda_occupancy")

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None,
                                reason="nvcc not found: the report needs the CUDA toolkit")


@needs_nvcc
@pytest.mark.parametrize("file", ["csr", "hbp", "regu2d"])
def test_every_entry_function_gets_registers_and_static_shared_memory(file):
    usage = tool.resource_usage(cuda_kernels.kernel_source(file, tool.defines(file, np.float64)), "sm_90")
    kernels = {kernel for kernel, launch in tool.LAUNCHES.items() if launch[0] == file}
    assert kernels <= set(usage)
    for registers, shared in usage.values():
        assert 1 <= registers <= 255 and shared >= 0


@needs_nvcc
def test_static_shared_memory_is_read_from_the_report():
    source = ('extern "C" __global__ void tile(float* y) { __shared__ float t[300]; t[threadIdx.x] = y[threadIdx.x];'
              ' __syncthreads(); y[threadIdx.x] = t[299 - threadIdx.x]; }')
    assert tool.resource_usage(source, "sm_89")["tile"][1] == 1200


@needs_nvcc
def test_a_source_that_does_not_compile_is_reported():
    with pytest.raises(RuntimeError, match="nvcc failed"):
        tool.resource_usage("this is not CUDA", "sm_90")
