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


# torch's intra-op threads in every torch suite: one, so that a time measures the work of one method and
# not how two busy-waiting OpenMP threads share a core with whatever else runs on the machine.
TORCH_THREADS = 1
DEVICES = ["cpu", "cuda"]


def torch_setup(device: str = "cpu", seed: int = SEED):
    """Fix torch's thread count and global seed for a torch suite's ``setup``; returns ``(device, generator)``.

    ``device`` is ``"cpu"`` or ``"cuda"``; a CUDA device without a visible GPU raises
    ``NotImplementedError``, which asv reports as "n/a" (the benchmark is skipped, not failed).
    The generator is a seeded CPU ``torch.Generator`` for the suite's data and draws.
    """
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA GPU")
    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(seed)
    return torch.device(device), torch.Generator().manual_seed(seed)


def synchronize(device) -> None:
    """Wait for ``device``'s queued kernels (a no-op on the CPU), so that a time covers the work itself."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
