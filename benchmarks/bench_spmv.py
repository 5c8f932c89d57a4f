"""SpMV executors on seeded matrices, every executor of every format in the registry (``methods.spmv.formats``):
on the CPU, and on CUDA (skipped without a GPU).

Every setup checks the executor's result against scipy once before anything is timed.
"""

import numpy as np

from benchmarks.common import MATRICES, executor_formats, make_executor, matrix, vector
from methods.spmv.csr import spmv_scipy
from methods.spmv.formats import CPU, CUDA


def _check(result, expected, dtype):
    tolerance = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(result, expected, rtol=tolerance, atol=tolerance)


class CpuSpmv:
    params = (list(MATRICES), ["float64", "float32"], list(executor_formats(CPU)))
    param_names = ["matrix", "dtype", "kernel"]
    version = "4"

    def setup(self, name, dtype, kernel):
        csr = matrix(name, dtype)
        self.x = vector(csr.shape[1], dtype)
        self.run = make_executor(csr, CPU, kernel)
        _check(self.run(self.x), spmv_scipy(csr, self.x), dtype)

    def time_spmv(self, name, dtype, kernel):
        self.run(self.x)


class CudaSpmv:
    """Device time per SpMV from CUDA events (lower is better); n/a without CuPy and a GPU."""

    params = (list(MATRICES), ["float64", "float32"], list(executor_formats(CUDA)))
    param_names = ["matrix", "dtype", "kernel"]
    version = "3"

    def setup(self, name, dtype, kernel):
        from reproduce.harness.device import cuda_device_count

        if cuda_device_count() == 0:
            raise NotImplementedError("no CUDA GPU")
        import cupy

        csr = matrix(name, dtype)
        self.executor = make_executor(csr, CUDA, kernel)
        self.x = cupy.asarray(vector(csr.shape[1], dtype))
        _check(cupy.asnumpy(self.executor(self.x)), spmv_scipy(csr, vector(csr.shape[1], dtype)), dtype)

    def time_spmv(self, name, dtype, kernel):
        import cupy

        self.executor(self.x)
        cupy.cuda.get_current_stream().synchronize()

    def track_device_seconds(self, name, dtype, kernel):
        from reproduce.harness.timing import time_cuda

        return time_cuda(lambda: self.executor(self.x), warmup=2, repeats=20).median

    track_device_seconds.unit = "seconds"
