"""Row-length statistics of a sparse matrix, as merge-spmv reports them per matrix."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def row_length_stats(matrix: sp.csr_matrix) -> dict[str, float]:
    """Mean, standard deviation, variation (std / mean) and skewness of the row lengths.

    Skewness is the third standardised moment, ``E[(l - mean)^3] / std^3`` (0 when all
    rows have the same length). Returns zeros for a matrix without rows.
    """
    lengths = np.diff(matrix.indptr).astype(np.float64)
    if lengths.size == 0:
        return {"row_length_mean": 0.0, "row_length_std": 0.0, "row_length_variation": 0.0,
                "row_length_skewness": 0.0, "row_length_max": 0.0}
    mean, std = float(lengths.mean()), float(lengths.std())
    skew = float(np.mean((lengths - mean) ** 3) / std**3) if std > 0 else 0.0
    return {"row_length_mean": mean, "row_length_std": std,
            "row_length_variation": std / mean if mean > 0 else 0.0,
            "row_length_skewness": skew, "row_length_max": float(lengths.max())}
