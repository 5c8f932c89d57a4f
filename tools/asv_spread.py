"""Run-to-run spread of the asv suites on this machine: the same commit benchmarked twice, ratio per benchmark.

Without arguments, runs ``asv run --python=same --quick`` twice on HEAD (the working tree's code, in
this environment; one pass each, as ``tox -e bench-quick``), keeps each run's results file, and prints,
per suite (benchmark module), how far the second run's value lies from the first's: the fold
``max(r, 1/r)`` of the ratio ``r = run 2 / run 1`` of every benchmark and parameter combination,
its median, 90th percentile and maximum, then the benchmarks furthest apart. A fold of 1.25 means
25% apart. These are the differences a ``--factor`` must stay above for a *single* quick pass; asv
continuous measures more repeats in interleaved rounds and also asks for statistical significance.

    python tools/asv_spread.py                       # two runs, then the table (about 2 x the quick pass)
    python tools/asv_spread.py -b Rehearsal          # extra arguments go to asv run
    python tools/asv_spread.py --files R1.json R2.json   # the table of two saved results files
    python tools/asv_spread.py --keep spread/        # keep the two results files there
    python tools/asv_spread.py --full                # asv's default repeats and rounds (as continuous)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.asv_gate import register_machine  # noqa: E402


def measurements(path: Path) -> dict[str, float]:
    """``{"module.Class.method(p1, p2)": value}`` of an asv results file; failed and n/a entries left out."""
    from asv.results import Results

    result = Results.load(str(path))
    values = {}
    for key in result.get_all_result_keys():
        params = result.get_result_params(key)
        combinations = list(itertools.product(*params)) if params else [()]
        raw = result.get_result_value(key, params)
        for combination, value in zip(combinations, raw if isinstance(raw, list) else [raw], strict=True):
            if value is not None and math.isfinite(value) and value > 0:
                values[f"{key}({', '.join(combination)})" if combination else key] = float(value)
    return values


def spread(first: dict[str, float], second: dict[str, float]) -> pd.DataFrame:
    """One row per benchmark measured in both runs: suite, benchmark, both values, ratio and fold."""
    common = sorted(first.keys() & second.keys())
    if not common:
        raise SystemExit("the two runs have no benchmark in common")
    frame = pd.DataFrame({"benchmark": common, "first": [first[k] for k in common],
                          "second": [second[k] for k in common]})
    frame.insert(0, "suite", frame["benchmark"].str.split(".").str[0])
    frame["ratio"] = frame["second"] / frame["first"]
    frame["fold"] = np.maximum(frame["ratio"], 1 / frame["ratio"])
    return frame


def suite_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per suite: benchmarks compared, and the median, 90th percentile and largest fold (1.00 = identical)."""
    return (frame.groupby("suite").agg(benchmarks=("fold", "size"), median_fold=("fold", "median"),
                                       p90_fold=("fold", lambda f: f.quantile(0.9)), max_fold=("fold", "max"))
            .reset_index())


def run_twice(extra: list[str], keep: Path, quick: bool = True) -> tuple[Path, Path]:
    """Two asv passes over HEAD (quick: each benchmark once; else asv's default repeats and rounds); each run's
    results file copied into ``keep`` (run1.json, run2.json)."""
    conf = json.loads((ROOT / "asv.conf.json").read_text())
    machine = register_machine(ROOT)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()
    copies = []
    for run in (1, 2):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "asv", "run", "--python=same", *(["--quick"] if quick else []),
                        "--set-commit-hash", head, "--machine", machine, *extra], cwd=ROOT, check=True)
        found = sorted((ROOT / conf["results_dir"] / machine).glob(f"{head[:8]}-existing*.json"))
        if len(found) != 1:
            raise SystemExit(f"expected one results file of {head[:8]} in {conf['results_dir']}/{machine}, "
                             f"found {len(found)}")
        copies.append(Path(shutil.copy(found[0], keep / f"run{run}.json")))
        print(f"run {run}: {time.perf_counter() - start:.0f} s", flush=True)
    return copies[0], copies[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs=2, type=Path, metavar=("RUN1", "RUN2"), help="two asv results files")
    parser.add_argument("--keep", type=Path, help="folder for the two results files (default: a temporary one)")
    parser.add_argument("--full", action="store_true",
                        help="asv's default repeats and two rounds per run instead of --quick (several times longer)")
    parser.add_argument("--top", type=int, default=10, help="benchmarks furthest apart to list (default 10)")
    args, extra = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        if args.files:
            first, second = args.files
        else:
            keep = args.keep or Path(scratch)
            keep.mkdir(parents=True, exist_ok=True)
            first, second = run_twice(extra, keep, quick=not args.full)
        frame = spread(measurements(first), measurements(second))
    pd.set_option("display.width", 160)
    print(suite_table(frame).to_string(index=False, float_format="{:.2f}".format))
    print(f"\nall {len(frame)} benchmarks: median fold {frame['fold'].median():.2f}, "
          f"90th percentile {frame['fold'].quantile(0.9):.2f}, max {frame['fold'].max():.2f}")
    print("\nfurthest apart (run 2 / run 1):")
    print(frame.nlargest(args.top, "fold")[["benchmark", "first", "second", "ratio"]]
          .to_string(index=False, float_format="{:.4g}".format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
