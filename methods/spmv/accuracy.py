"""How far a computed SpMV result is from the reference."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def componentwise_error(matrix: sp.csr_matrix, x: np.ndarray, y: np.ndarray, y_ref: np.ndarray) -> float:
    """``max_i |y_i - y_ref_i| / (|A| |x|)_i``: the error of each row relative to its terms.

    The denominator is the sum of the magnitudes of the row's products, the scale of the
    rounding bound of a dot product (|fl(a.x) - a.x| <= gamma_n |a|.|x|, Higham, Accuracy
    and Stability of Numerical Algorithms, eq. 3.5), so cancellation in ``y_ref`` does
    not inflate the error. Rows whose terms are all zero count as 0 when ``y`` is 0 there
    too and as infinite otherwise.
    """
    scale = abs(matrix) @ np.abs(x)
    diff = np.abs(np.asarray(y) - np.asarray(y_ref))
    if diff.size == 0:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), np.where(diff > 0, np.inf, 0.0))
    return float(ratio.max())


def norm2_error(y: np.ndarray, y_ref: np.ndarray) -> float:
    """``||y - y_ref||_2 / ||y_ref||_2`` (Ginkgo's relative norm); 0 when both are zero."""
    ref = float(np.linalg.norm(y_ref))
    diff = float(np.linalg.norm(np.asarray(y) - np.asarray(y_ref)))
    if ref == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / ref
