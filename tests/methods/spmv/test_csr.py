"""The numba CSR kernel against scipy, on generated edge cases and random matrices."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from methods.spmv.accuracy import componentwise_error, norm2_error
from methods.spmv.csr import spmv_numba, spmv_scipy
from reproduce.harness.data import synthetic
from tests.methods.spmv.cases import TOLERANCE


@pytest.mark.parametrize("spec", [
    {"generator": "with_empty_rows", "nrows": 600, "ncols": 300, "empty_fraction": 0.4},
    {"generator": "with_dense_row", "nrows": 100, "ncols": 5000},
    {"generator": "all_zero", "nrows": 7, "ncols": 3},
    {"generator": "random_uniform", "nrows": 513, "ncols": 1, "density": 0.5},
    {"generator": "power_law", "nrows": 4096, "ncols": 9000, "mean_row_length": 12},
])
def test_matches_scipy_on_edge_cases(spec, dtype):
    rng = np.random.default_rng(1)
    matrix = synthetic.generate(spec, rng).astype(dtype)
    x = rng.uniform(-1, 1, matrix.shape[1]).astype(dtype)
    y = spmv_numba(matrix, x)
    assert y.dtype == np.dtype(dtype)
    reference = spmv_scipy(matrix.astype(np.float64), x.astype(np.float64))
    assert componentwise_error(matrix, x, y, reference) <= TOLERANCE[dtype]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_random_matrices(nrows, ncols, density, seed):
    rng = np.random.default_rng(seed)
    matrix = sp.random(nrows, ncols, density=density, format="csr", rng=rng)
    x = rng.standard_normal(ncols)
    assert componentwise_error(matrix, x, spmv_numba(matrix, x), matrix @ x) <= 1e-12


def test_complex_values_and_wrong_shape():
    matrix = sp.csr_matrix(np.array([[1 + 2j, 0], [0, 3 - 1j]]))
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(spmv_numba(matrix, x), matrix @ x)
    with pytest.raises(ValueError, match="expected \\(2,\\)"):
        spmv_numba(matrix, np.ones(3))


def test_error_measures_detect_a_wrong_result():
    matrix = sp.csr_matrix(np.array([[1.0, -1.0], [2.0, 0.0]]))
    x = np.array([1.0, 1.0])
    exact = matrix @ x  # [0, 2]: row 0 cancels exactly
    assert componentwise_error(matrix, x, exact, exact) == 0.0
    assert componentwise_error(matrix, x, exact + [1e-3, 0], exact) == pytest.approx(5e-4)
    assert norm2_error(exact + [0, 2e-3], exact) == pytest.approx(1e-3)
    empty = sp.csr_matrix((2, 2))
    assert componentwise_error(empty, x, np.array([0.0, 1.0]), np.zeros(2)) == np.inf
