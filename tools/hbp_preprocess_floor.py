"""HBP preprocessing against the copy of the CSR arrays and against the floor of any 2D-blocked conversion.

The issue target "hash preprocessing <= 3 x the CSR copy" compares a conversion with a memcpy. This
script measures, side by side in interleaved rounds on the quick scale's generated matrices (the
quick matrices with >= 1M nonzeros; pick some with ``--matrices``), at the CPU block shape:

- ``copy``: the three CSR arrays copied (CSR's "preprocessing", as ``repro run hbp/spmv`` times it);
- ``blocked floor``: the least a format that stores nonzeros by 2D block must do, in parallel on
  every numba thread: count the nonzeros of each (row block, column block), prefix-sum them, and
  scatter each nonzero's 16-bit block column and value to its block in row order. No slots, no
  groups, no ordering, no interleaving: HBP does all of this and more;
- HBP's preprocessing with each ordering (hash, sort, dp), its ``total`` as the artifacts time it.

It prints each median in ms and its ratio to the copy, then the median of the ratios over the
matrices (the statistic of the target)::

    python tools/hbp_preprocess_floor.py
    python tools/hbp_preprocess_floor.py --matrices uniform_1Mx1M --rounds 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit, prange

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from methods.spmv.formats import FORMATS  # noqa: E402
from methods.spmv.hbp import ORDERINGS, cpu_block_shape, preprocess_timed  # noqa: E402
from reproduce.harness.data import synthetic  # noqa: E402
from reproduce.hbp import matrices  # noqa: E402


@njit(parallel=True, cache=True)
def _count_blocks(indptr, indices, nrows, height, shift, counts):
    """counts (n_rowblocks, n_colblocks): nonzeros of each 2D block (width 2**shift), one row block per task."""
    for rb in prange(counts.shape[0]):
        for k in range(indptr[rb * height], indptr[min((rb + 1) * height, nrows)]):
            counts[rb, indices[k] >> shift] += 1


@njit(parallel=True, cache=True)
def _scatter_blocks(indptr, indices, data, nrows, height, shift, cursor, cols, values):
    """Each nonzero's block column (uint16) and value to the next place of its block (cursor: its first)."""
    for rb in prange(cursor.shape[0]):
        for k in range(indptr[rb * height], indptr[min((rb + 1) * height, nrows)]):
            colblock = indices[k] >> shift
            place = cursor[rb, colblock]
            cols[place] = indices[k] - (colblock << shift)
            values[place] = data[k]
            cursor[rb, colblock] = place + 1


def blocked_floor(matrix, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The nonzeros of a CSR matrix (int32 indices) grouped by 2D block of height x width, rows in order
    inside a block: (cols uint16 (nnz,), values (nnz,)). The work every 2D-blocked format does at least.
    ``width`` is a power of two (as the CPU rule's), so a column's block is a shift."""
    if width & (width - 1):
        raise ValueError(f"the floor takes a power-of-two block width, got {width}")
    shift = width.bit_length() - 1
    nrows, ncols = matrix.shape
    counts = np.zeros((-(-nrows // height), -(-ncols // width)), np.int64)
    _count_blocks(matrix.indptr, matrix.indices, nrows, height, shift, counts)
    cursor = (np.cumsum(counts) - counts.ravel()).reshape(counts.shape)
    cols, values = np.empty(matrix.nnz, np.uint16), np.empty(matrix.nnz, matrix.dtype)
    _scatter_blocks(matrix.indptr, matrix.indices, matrix.data, nrows, height, shift, cursor, cols, values)
    return cols, values


def _measure(matrix, rounds: int) -> dict[str, float]:
    """Median seconds of each conversion over interleaved rounds (after one warm-up round)."""
    shape = cpu_block_shape(matrix.shape, matrix.dtype.itemsize)

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    runs = {"copy": lambda: FORMATS["csr"].build(matrix, "cpu")[1]["total"],
            "blocked floor": lambda: timed(lambda: blocked_floor(matrix, *shape))}
    for ordering in ORDERINGS:
        runs[ordering] = lambda ordering=ordering: preprocess_timed(matrix, ordering, *shape)[1]["total"]
    samples = {name: [] for name in runs}
    for round_ in range(rounds + 1):
        for name, run in runs.items():
            seconds = run()
            if round_:
                samples[name].append(seconds)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    specs = {spec["name"]: spec for spec in matrices.QUICK_LARGE}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--matrices", nargs="+", choices=sorted(specs), default=list(specs),
                        help="generated matrices of the quick scale (default: all)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated matrices (default 0)")
    args = parser.parse_args()
    ratios: dict[str, list[float]] = {}
    for name in args.matrices:
        spec = {key: value for key, value in specs[name].items() if key != "name"}
        matrix = synthetic.generate(spec, np.random.default_rng(args.seed))
        medians = _measure(matrix, args.rounds)
        height, width = cpu_block_shape(matrix.shape, matrix.dtype.itemsize)
        print(f"{name} ({matrix.nnz:,} nonzeros, blocks {height}x{width}):", flush=True)
        for label, seconds in medians.items():
            ratio = seconds / medians["copy"]
            ratios.setdefault(label, []).append(ratio)
            print(f"  {label:>14}: {seconds * 1e3:7.1f} ms, {ratio:5.2f}x the copy", flush=True)
    print("median over the matrices, x the copy: "
          + ", ".join(f"{label} {statistics.median(values):.2f}" for label, values in ratios.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
