"""Preprocessing: every format's build on the CPU (the registry's, CSR's being the copy of its arrays), and the
HBP orderings at the paper's 512 x 4096 blocks (hash against sorting and the DP, the paper's claim)."""

from benchmarks.common import MATRICES, matrix
from methods.spmv.formats import CPU, FORMATS
from methods.spmv.hbp import GPU_BLOCK_SHAPE, ORDERINGS, build_hbp


class Preprocessing:
    params = (list(MATRICES), list(FORMATS))
    param_names = ["matrix", "format"]
    version = "1"

    def setup(self, name, format_name):
        self.csr = matrix(name)
        self.build = FORMATS[format_name].build
        self.build(self.csr, CPU)  # compiles the numba kernels outside the timing

    def time_build(self, name, format_name):
        self.build(self.csr, CPU)


class HbpOrderings:
    params = (list(MATRICES), list(ORDERINGS))
    param_names = ["matrix", "ordering"]
    version = "2"

    def setup(self, name, ordering):
        self.csr = matrix(name)
        build_hbp(self.csr, ordering, *GPU_BLOCK_SHAPE)  # compiles the ordering's kernels outside the timing

    def time_build(self, name, ordering):
        build_hbp(self.csr, ordering, *GPU_BLOCK_SHAPE)
