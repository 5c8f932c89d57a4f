"""CSR sparse matrix-vector products on the CPU: the scipy oracle and a numba kernel.

Both compute ``y = A @ x`` for ``A`` in CSR form (``indptr`` of length nrows + 1,
``indices`` and ``data`` of length nnz) and a dense ``x`` of length ncols.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit, prange, uint64


def spmv_scipy(matrix: sp.csr_matrix, x: np.ndarray) -> np.ndarray:
    """``matrix @ x`` by scipy's serial CSR loop: the correctness oracle, not a speed anchor."""
    return matrix @ x


@njit(parallel=True, cache=True)
def _csr_rows(indptr, indices, data, x, y):
    """One row per iteration, rows split over numba's threads; sums in index order.

    Indices are cast to unsigned: numba otherwise checks every signed index for
    negative wraparound, which made this loop twice as slow as scipy's serial one.
    """
    for row in prange(indptr.shape[0] - 1):
        total = y.dtype.type(0)
        for k in range(uint64(indptr[row]), uint64(indptr[row + 1])):
            total += data[k] * x[uint64(indices[k])]
        y[row] = total


def spmv_numba(matrix: sp.csr_matrix, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``matrix @ x`` by a parallel numba CSR kernel (one row per loop iteration).

    Parameters
    ----------
    matrix : scipy.sparse.csr_matrix, shape (nrows, ncols)
    x : ndarray, shape (ncols,)
    out : ndarray, shape (nrows,), optional
        Written in place and returned; its dtype is the result type of the inputs.

    Returns
    -------
    ndarray, shape (nrows,)
    """
    if x.shape != (matrix.shape[1],):
        raise ValueError(f"x has shape {x.shape}, expected ({matrix.shape[1]},)")
    dtype = np.result_type(matrix.dtype, x.dtype)
    if out is None:
        out = np.empty(matrix.shape[0], dtype=dtype)
    _csr_rows(matrix.indptr, matrix.indices, matrix.data.astype(dtype, copy=False), x.astype(dtype, copy=False), out)
    return out
