"""Matrices shared by the blocked-SpMV tests (HBP, Regu2D): the shared SuiteSparse files and generated edge cases."""

import functools
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from reproduce.harness.data import synthetic
from reproduce.harness.data.suitesparse import load_matrix_file

# The values dtypes of every SpMV format and kernel, and the componentwise error (methods.spmv.accuracy)
# each must stay within against scipy. The ``dtype`` fixture (conftest.py) runs a test once per entry.
TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}
VALUE_DTYPES = tuple(TOLERANCE)
SHARED_MATRICES = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "suitesparse"
EMPTY_SHAPES = [(0, 0), (0, 5), (5, 0)]


def matrix_files() -> list[str]:
    """Names of the .mtx files in the folder the ``suitesparse_dir`` fixture will use."""
    folders = [Path(entry) for entry in os.environ.get("REPRO_MATRIX_DIRS", "").split(os.pathsep) if entry]
    for folder in [*folders, SHARED_MATRICES]:
        if folder.is_dir():
            return sorted(path.name for path in folder.iterdir() if path.name.endswith((".mtx", ".mtx.gz")))
    return []


@functools.cache
def shared_matrix(path: Path) -> sp.csr_matrix:
    """A shared matrix, real part of complex ones (HBP and Regu2D store real values)."""
    matrix = load_matrix_file(path)[0]
    return matrix.real.tocsr() if np.iscomplexobj(matrix.data) else matrix


# Generated edge cases: (id, spec or empty shape, block_height, block_width)
EDGE_CASES = [
    ("empty_rows", {"generator": "with_empty_rows", "nrows": 600, "ncols": 300, "empty_fraction": 0.4}, 512, 4096),
    ("dense_row_4096_in_a_block", {"generator": "with_dense_row", "nrows": 100, "ncols": 5000}, 512, 4096),
    ("all_zero", {"generator": "all_zero", "nrows": 7, "ncols": 3}, 512, 4096),
    ("single_column_513", {"generator": "random_uniform", "nrows": 513, "ncols": 1, "density": 0.5}, 512, 4096),
    ("rows_multiple_of_512", {"generator": "power_law", "nrows": 4096, "ncols": 9000, "mean_row_length": 12},
     512, 4096),
    ("square_1024x4096", {"generator": "random_uniform", "nrows": 1024, "ncols": 4096, "density": 0.003}, 512, 4096),
    ("counts_16_to_31", {"generator": "random_uniform", "nrows": 700, "ncols": 4096, "density": 0.005}, 512, 4096),
    ("counts_over_32_everywhere", {"generator": "random_uniform", "nrows": 512, "ncols": 600, "density": 0.2},
     512, 4096),
    ("300_column_blocks", {"generator": "random_uniform", "nrows": 1024, "ncols": 300, "density": 0.02}, 512, 1),
    ("small_blocks_power_law", {"generator": "power_law", "nrows": 600, "ncols": 5000, "mean_row_length": 8}, 8, 16),
    ("tall", {"generator": "random_uniform", "nrows": 5000, "ncols": 7, "density": 0.3}, 512, 4096),
    ("wide", {"generator": "random_uniform", "nrows": 3, "ncols": 20000, "density": 0.1}, 512, 4096),
    ("one_by_one", {"generator": "random_uniform", "nrows": 1, "ncols": 1, "density": 1.0}, 512, 4096),
    ("banded_odd_blocks", {"generator": "banded", "n": 1000, "half_width": 40}, 33, 100),
    *[(f"empty_{nrows}x{ncols}", (nrows, ncols), 512, 4096) for nrows, ncols in EMPTY_SHAPES],
]


def edge_matrix(spec) -> sp.csr_matrix:
    if isinstance(spec, tuple):
        return sp.csr_matrix(spec)
    return synthetic.generate(spec, np.random.default_rng(7))
