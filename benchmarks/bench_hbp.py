"""HBP preprocessing (the whole conversion and the reordering step alone, per ordering) and the Regu2D build."""

from benchmarks.common import MATRICES, matrix
from methods.spmv.hbp import ORDERINGS, build_hbp, preprocess_timed
from methods.spmv.regu2d import build_regu2d


class HbpPreprocessing:
    params = (list(MATRICES), list(ORDERINGS))
    param_names = ["matrix", "ordering"]
    version = "1"

    def setup(self, name, ordering):
        self.csr = matrix(name)
        build_hbp(self.csr, ordering)  # compiles the ordering's kernels outside the timing

    def time_build(self, name, ordering):
        build_hbp(self.csr, ordering)

    def track_reorder_seconds(self, name, ordering):
        """Median seconds of the reordering phase alone over 5 runs (lower is better)."""
        runs = sorted(preprocess_timed(self.csr, ordering)[1]["reorder"] for _ in range(5))
        return runs[2]

    track_reorder_seconds.unit = "seconds"


class Regu2DPreprocessing:
    params = [list(MATRICES)]
    param_names = ["matrix"]
    version = "1"

    def setup(self, name):
        self.csr = matrix(name)
        build_regu2d(self.csr)  # compiles the kernels outside the timing

    def time_build(self, name):
        build_regu2d(self.csr)
