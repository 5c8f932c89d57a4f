"""Seeded data factories shared by the asv suites; each matrix is built once per process."""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp

from reproduce.harness.data import synthetic

SEED = 20250411

# name -> generator spec; sizes chosen so one SpMV takes 0.1-20 ms on a 2-core CPU.
MATRICES = {
    "banded_200k": {"generator": "banded", "n": 200_000, "half_width": 3},
    "power_law_200k": {"generator": "power_law", "nrows": 200_000, "ncols": 200_000, "mean_row_length": 8},
    "uniform_50k": {"generator": "random_uniform", "nrows": 50_000, "ncols": 50_000, "density": 2e-4},
}


@functools.cache
def matrix(name: str, dtype: str = "float64") -> sp.csr_matrix:
    """The named benchmark matrix, generated from a fixed seed, with values of ``dtype``."""
    return synthetic.generate(MATRICES[name], np.random.default_rng(SEED)).astype(dtype)


@functools.cache
def vector(n: int, dtype: str = "float64") -> np.ndarray:
    """A dense vector of length ``n`` with uniform values in [-1, 1), fixed seed."""
    return np.random.default_rng(SEED + 1).uniform(-1.0, 1.0, n).astype(dtype)


def executor_formats(device: str) -> dict:
    """Every executor name on ``device`` -> its format in the registry (:data:`methods.spmv.formats.FORMATS`)."""
    from methods.spmv.formats import FORMATS

    return {name: spmv_format for spmv_format in FORMATS.values() for name in spmv_format.executors(device)}


def make_executor(csr: sp.csr_matrix, device: str, kernel: str):
    """The registry's executor ``kernel`` on ``device`` over ``csr``, its layout built for that device."""
    spmv_format = executor_formats(device)[kernel]
    return spmv_format.executors(device)[kernel](csr, spmv_format.build(csr, device)[0], device)
