"""SpMV executors on seeded matrices: CPU (scipy, numba CSR, HBP, Regu2D) and CUDA (skipped without a GPU).

Every setup checks the executor's result against scipy once before anything is timed.
"""

import numpy as np

from benchmarks.common import MATRICES, matrix, vector
from methods.spmv.csr import spmv_numba, spmv_scipy
from methods.spmv.hbp import build_hbp
from methods.spmv.hbp_cpu import HBPCpuExecutor
from methods.spmv.regu2d import build_regu2d, spmv_regu2d


def _check(result, expected, dtype):
    tolerance = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(result, expected, rtol=tolerance, atol=tolerance)


class CpuSpmv:
    params = (list(MATRICES), ["float64", "float32"], ["scipy", "numba", "hbp", "regu2d"])
    param_names = ["matrix", "dtype", "kernel"]
    version = "3"

    def setup(self, name, dtype, kernel):
        csr = matrix(name, dtype)
        self.x = vector(csr.shape[1], dtype)
        out = np.empty(csr.shape[0], dtype=dtype)
        self.executor = None
        if kernel == "scipy":
            self.run = lambda: spmv_scipy(csr, self.x)
        elif kernel == "numba":
            self.run = lambda: spmv_numba(csr, self.x, out=out)
        elif kernel == "regu2d":
            layout = build_regu2d(csr)
            self.run = lambda: spmv_regu2d(layout, self.x, out=out)
        else:
            self.executor = HBPCpuExecutor(build_hbp(csr, "hash"))
            self.run = lambda: self.executor(self.x, out=out)
        _check(self.run(), spmv_scipy(csr, self.x), dtype)

    def teardown(self, name, dtype, kernel):
        if self.executor is not None:
            self.executor.close()

    def time_spmv(self, name, dtype, kernel):
        self.run()


class CudaSpmv:
    """Device time per SpMV from CUDA events (lower is better); n/a without CuPy and a GPU."""

    params = (list(MATRICES), ["float64", "float32"], ["csr_scalar", "csr_vector", "cusparse", "hbp", "regu2d"])
    param_names = ["matrix", "dtype", "kernel"]
    version = "2"

    def setup(self, name, dtype, kernel):
        from reproduce.harness.device import cuda_device_count

        if cuda_device_count() == 0:
            raise NotImplementedError("no CUDA GPU")
        import cupy
        import cupyx.scipy.sparse as gpu_sparse

        from methods.spmv import cuda

        csr = matrix(name, dtype)
        on_gpu = gpu_sparse.csr_matrix(csr)
        make = {"csr_scalar": lambda: cuda.CsrScalarCuda(on_gpu), "csr_vector": lambda: cuda.CsrVectorCuda(on_gpu),
                "cusparse": lambda: cuda.CsrCusparse(on_gpu), "hbp": lambda: cuda.HBPCuda(build_hbp(csr, "hash")),
                "regu2d": lambda: cuda.Regu2DCuda(build_regu2d(csr, slice_height=32))}
        self.executor = make[kernel]()
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
