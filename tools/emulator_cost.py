"""Seconds and memory traffic of each CUDA executor on the emulated device, for one generated matrix.

Usage: python tools/emulator_cost.py GENERATOR KEY=VALUE ... [--seed N]
  e.g. python tools/emulator_cost.py power_law nrows=250000 ncols=250000 mean_row_length=8
       python tools/emulator_cost.py banded n=286000 half_width=3

The matrix comes from ``reproduce.harness.data.synthetic`` (the generators of the artifacts'
matrix sets); the executors are those ``hbp/correctness`` runs on ``--device cuda-emu``, with its
512 x 4096 layout, each called once, checked against scipy, timed, and its 32-byte sectors
counted. This is the measurement behind the emulated device's size limit
(``reproduce.hbp.executors.EMULATOR_MAX_NNZ``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from methods.spmv.accuracy import componentwise_error  # noqa: E402
from methods.spmv.formats import EMULATED, FORMATS  # noqa: E402
from methods.spmv.hbp import ORDERINGS  # noqa: E402
from reproduce.harness.data import synthetic  # noqa: E402
from reproduce.hbp.executors import device_executors, run_emulated  # noqa: E402


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generator", choices=sorted(synthetic.GENERATORS))
    parser.add_argument("parameters", nargs="*", metavar="KEY=VALUE", help="the generator's arguments")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = {"generator": args.generator, **{k: _value(v) for k, v in (p.split("=", 1) for p in args.parameters)}}
    matrix = synthetic.generate(spec, np.random.default_rng(args.seed))
    x = np.random.default_rng(args.seed + 1).uniform(-1.0, 1.0, matrix.shape[1])
    start = time.perf_counter()
    layouts = {"csr": matrix,
               "hbp": {ordering: FORMATS["hbp"].build(matrix, EMULATED, ordering=ordering)[0]
                       for ordering in ORDERINGS},
               "regu2d": FORMATS["regu2d"].build(matrix, EMULATED)[0]}
    built = time.perf_counter() - start
    print(f"{args.generator} {matrix.shape[0]:,} x {matrix.shape[1]:,}, {matrix.nnz:,} nonzeros; layouts built in "
          f"{built:.1f} s")
    calls, traffic = run_emulated(device_executors(matrix, layouts, EMULATED), x, matrix)
    reference = matrix @ x
    total = 0.0
    for name, call in calls.items():
        total += call.seconds
        error = f", error {componentwise_error(matrix, x, call.result, reference):.1e}"
        print(f"  {name:18} {call.seconds:8.2f} s, {traffic[f'{name}_sector_bytes_per_nnz']['value']:7.1f} B/nnz "
              f"({traffic[f'{name}_sector_bytes_per_nnz_xreuse']['value']:.1f} with x reused){error}")
    print(f"  all executors      {total:8.2f} s; CSR minimum {traffic['csr_min_bytes_per_nnz']['value']:.1f} B/nnz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
