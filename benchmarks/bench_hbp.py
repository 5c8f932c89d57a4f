"""HBP preprocessing: the whole conversion and the reordering step alone, per ordering."""

from benchmarks.common import MATRICES, matrix
from methods.spmv.hbp import ORDERINGS, build_hbp, preprocess_timed


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
