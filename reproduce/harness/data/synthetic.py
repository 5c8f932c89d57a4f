"""Generated sparse matrices: edge cases for the smoke scale and large matrices for quick.

Every generator takes a NumPy ``Generator`` and returns a canonical
``scipy.sparse.csr_matrix`` (float64 values in [-1, 1), int32 indices, sorted).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> sp.csr_matrix:
    values = rng.uniform(-1.0, 1.0, size=rows.size)
    matrix = sp.coo_matrix((values, (rows, cols)), shape=shape).tocsr()
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix


def random_uniform(rng: np.random.Generator, nrows: int, ncols: int, density: float) -> sp.csr_matrix:
    """Entries placed uniformly at random with the given density."""
    return sp.random(nrows, ncols, density=density, format="csr", rng=rng,
                     data_rvs=lambda n: rng.uniform(-1.0, 1.0, n)).astype(np.float64)


def power_law(rng: np.random.Generator, nrows: int, ncols: int, mean_row_length: float,
              exponent: float = 2.5) -> sp.csr_matrix:
    """Row lengths drawn from a Pareto law (scale-free, like web and circuit matrices).

    Row lengths are ``mean_row_length``-scaled Pareto(``exponent`` - 1) samples capped at
    ``ncols``; columns are uniform within each row.
    """
    lengths = rng.pareto(exponent - 1.0, size=nrows) + 1.0
    lengths = np.minimum(np.round(lengths * mean_row_length / lengths.mean()), ncols).astype(np.int64)
    rows = np.repeat(np.arange(nrows), lengths)
    cols = rng.integers(0, ncols, size=rows.size)
    return _csr(rows, cols, (nrows, ncols), rng)


def banded(rng: np.random.Generator, n: int, half_width: int) -> sp.csr_matrix:
    """A square band matrix (stencil-like, regular rows)."""
    offsets = np.arange(-half_width, half_width + 1)
    rows = np.repeat(np.arange(n), offsets.size)
    cols = rows + np.tile(offsets, n)
    keep = (cols >= 0) & (cols < n)
    return _csr(rows[keep], cols[keep], (n, n), rng)


def with_empty_rows(rng: np.random.Generator, nrows: int, ncols: int, empty_fraction: float) -> sp.csr_matrix:
    """Uniform random rows, with ``empty_fraction`` of the rows left empty."""
    matrix = random_uniform(rng, nrows, ncols, density=min(1.0, 8.0 / ncols)).tolil()
    for row in rng.choice(nrows, size=int(empty_fraction * nrows), replace=False):
        matrix.rows[row], matrix.data[row] = [], []
    return matrix.tocsr()


def with_dense_row(rng: np.random.Generator, nrows: int, ncols: int) -> sp.csr_matrix:
    """Sparse rows plus one full row in the middle (extreme row-length skew)."""
    base = random_uniform(rng, nrows, ncols, density=min(1.0, 4.0 / ncols)).tocoo()
    dense = np.full(ncols, nrows // 2)
    return _csr(np.concatenate([base.row, dense]), np.concatenate([base.col, np.arange(ncols)]),
                (nrows, ncols), rng)


def all_zero(rng: np.random.Generator, nrows: int, ncols: int) -> sp.csr_matrix:
    """No stored entries at all."""
    return _csr(np.array([], dtype=np.int64), np.array([], dtype=np.int64), (nrows, ncols), rng)


GENERATORS = {
    "random_uniform": random_uniform,
    "power_law": power_law,
    "banded": banded,
    "with_empty_rows": with_empty_rows,
    "with_dense_row": with_dense_row,
    "all_zero": all_zero,
}


def generate(spec: dict, rng: np.random.Generator) -> sp.csr_matrix:
    """The matrix a spec describes: ``{"generator": name, **keyword arguments}``."""
    kwargs = dict(spec)
    return GENERATORS[kwargs.pop("generator")](rng, **kwargs)
