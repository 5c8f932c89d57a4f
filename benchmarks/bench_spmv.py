"""CPU CSR SpMV: scipy's serial loop against the parallel numba kernel."""

import numpy as np

from benchmarks.common import MATRICES, matrix, vector
from methods.spmv.csr import spmv_numba, spmv_scipy


class CsrSpmv:
    params = (list(MATRICES), ["float64", "float32"], ["scipy", "numba"])
    param_names = ["matrix", "dtype", "kernel"]
    version = "1"

    def setup(self, name, dtype, kernel):
        self.matrix = matrix(name, dtype)
        self.x = vector(self.matrix.shape[1], dtype)
        self.out = np.empty(self.matrix.shape[0], dtype=dtype)
        self.kernel = kernel
        expected = spmv_scipy(self.matrix, self.x)
        np.testing.assert_allclose(self.run(), expected, rtol=1e-4 if dtype == "float32" else 1e-12,
                                   atol=1e-4 if dtype == "float32" else 1e-12)

    def run(self):
        if self.kernel == "scipy":
            return spmv_scipy(self.matrix, self.x)
        return spmv_numba(self.matrix, self.x, out=self.out)

    def time_spmv(self, name, dtype, kernel):
        self.run()
