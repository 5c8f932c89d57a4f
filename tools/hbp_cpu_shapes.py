"""HBP's CPU executor against the numba CSR kernel for several block shapes, timed side by side.

For each of the quick scale's generated matrices (``reproduce/hbp/matrices.py``; pick some with
``--matrices``), builds the HBP layout (hash ordering) for every shape given, checks each SpMV
against CSR, then times CSR and every layout in interleaved rounds and prints, per shape, the
median HBP time / CSR time, the preprocessing time / the copy of the CSR arrays, and the bytes
per nonzero. The default shapes are the CPU rule's (:func:`methods.spmv.hbp.cpu_block_shape`)
and the paper's 512 x 4096::

    python tools/hbp_cpu_shapes.py
    python tools/hbp_cpu_shapes.py --matrices scattered_1Mx16M --shapes 65536x16384 65536x65536 --rounds 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from methods.spmv.csr import spmv_numba  # noqa: E402
from methods.spmv.formats import FORMATS  # noqa: E402
from methods.spmv.hbp import GPU_BLOCK_SHAPE, cpu_block_shape, preprocess_timed  # noqa: E402
from methods.spmv.hbp_cpu import HBPCpuExecutor  # noqa: E402
from reproduce.harness.data import synthetic  # noqa: E402
from reproduce.harness.timing import time_host_interleaved  # noqa: E402
from reproduce.hbp import matrices  # noqa: E402


def _shape(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    try:
        return int(height), int(width)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is HEIGHTxWIDTH, e.g. 65536x16384, not {text!r}") from None


def _compare(name: str, matrix, x: np.ndarray, shapes: list[tuple[int, int]], rounds: int) -> None:
    """Print HBP time / CSR time, preprocessing / copy and bytes per nonzero of each shape on one matrix."""
    copy = statistics.median(FORMATS["csr"].build(matrix, "cpu")[1]["total"] for _ in range(3))
    out = np.empty(matrix.shape[0])
    runs = {"csr_numba": lambda: spmv_numba(matrix, x, out=out)}
    facts = {}
    for height, width in shapes:
        preprocess_timed(matrix, "hash", height, width)  # compiles
        layout, seconds = preprocess_timed(matrix, "hash", height, width)
        executor, y = HBPCpuExecutor(layout), np.empty(matrix.shape[0])
        if not np.array_equal(executor(x, out=y), spmv_numba(matrix, x)):
            raise SystemExit(f"{name} {height}x{width}: HBP differs from the CSR kernel")
        label = f"{height}x{width}"
        runs[label] = lambda executor=executor, y=y: executor(x, out=y)
        facts[label] = (seconds["total"] / copy, layout.bytes_per_nonzero())
    start = time.perf_counter()
    timings = time_host_interleaved(runs, warmup=1, min_repeats=rounds, max_repeats=rounds)
    base = timings["csr_numba"].median
    print(f"{name} ({matrix.nnz:,} nonzeros; CSR {base * 1e3:.1f} ms; timed in {time.perf_counter() - start:.0f} s)")
    for label, (preprocess, nbytes) in facts.items():
        print(f"  {label:>12}: time / CSR {timings[label].median / base:.2f}, preprocessing / copy "
              f"{preprocess:.1f}x, {nbytes:.2f} B/nnz")


def main() -> int:
    specs = {spec["name"]: spec for spec in matrices.QUICK_LARGE}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--matrices", nargs="+", choices=sorted(specs), default=list(specs),
                        help="generated matrices of the quick scale (default: all)")
    parser.add_argument("--shapes", nargs="+", type=_shape, default=None,
                        help="HBP block shapes HEIGHTxWIDTH (default: the CPU rule's and the paper's 512x4096)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (default 15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated matrices (default 0)")
    args = parser.parse_args()
    for name in args.matrices:
        spec = {key: value for key, value in specs[name].items() if key != "name"}
        matrix = synthetic.generate(spec, np.random.default_rng(args.seed))
        x = np.random.default_rng(args.seed + 1).uniform(-1.0, 1.0, matrix.shape[1])
        _compare(name, matrix, x, args.shapes or [cpu_block_shape(matrix.shape, 8), GPU_BLOCK_SHAPE], args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
