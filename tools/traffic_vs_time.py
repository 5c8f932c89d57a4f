"""Measured GPU SpMV time next to the emulated device's memory-traffic figures, per matrix and kernel.

Usage: python tools/traffic_vs_time.py RESULTS [--scale quick]

RESULTS holds records of ``hbp/spmv`` run on a GPU (``--device cuda``: each executor's
``<executor>_ms``) and of ``hbp/correctness`` or ``hbp/spmv`` run on the emulated device
(``--device cuda-emu``: ``<executor>_sector_bytes_per_nnz`` and ``..._xreuse``), as
``.ci/gpu_check.sh`` writes them. For every matrix and executor found in both it prints the
time, the bytes the sector model says the kernel moves (no reuse, and x reused within a
thread block), and the bandwidth those bytes imply at the measured time, as a fraction of the
GPU's peak: a kernel near 1 under the x-reuse figure is as fast as its traffic allows, and a
fraction far above 1 means the model counts more than the hardware moves (cache reuse across
blocks). The last lines give each executor's median over the matrices.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reproduce.harness.records import load_records  # noqa: E402

EMULATED_ARTIFACTS = ("correctness", "spmv")


def _latest_by_unit(records) -> dict:
    latest = {}
    for record in records:
        if record.status == "ok" and (record.unit not in latest or record.started > latest[record.unit].started):
            latest[record.unit] = record
    return latest


def table(results: Path, scale: str) -> list[dict]:
    """One row per (matrix, executor) that has both a GPU time and an emulated traffic figure."""
    gpu = _latest_by_unit(r for r in load_records(results, "hbp", "spmv", scale) if r.device.get("kind") == "cuda")
    emulated = _latest_by_unit(r for artifact in EMULATED_ARTIFACTS
                               for r in load_records(results, "hbp", artifact, scale)
                               if r.device.get("kind") == "cuda-emu")
    rows = []
    for unit in sorted(set(gpu) & set(emulated)):
        timed, modeled = gpu[unit], emulated[unit]
        nnz = modeled.value("nnz")
        peak = timed.device.get("peak_bandwidth_gbs")
        for key in sorted(modeled.metrics):
            if not key.endswith("_sector_bytes_per_nnz") or timed.value(key.replace("_sector_bytes_per_nnz", "_ms")) \
                    is None:
                continue
            executor = key[:-len("_sector_bytes_per_nnz")]
            seconds = timed.value(f"{executor}_ms") / 1e3
            bytes_plain = modeled.value(key) * nnz
            bytes_reuse = modeled.value(f"{key}_xreuse") * nnz
            rows.append({"matrix": modeled.data.get("name") or unit, "nnz": nnz, "executor": executor,
                         "ms": seconds * 1e3, "MB": bytes_plain / 1e6, "MB_xreuse": bytes_reuse / 1e6,
                         "fraction": bytes_plain / seconds / 1e9 / peak if peak else None,
                         "fraction_xreuse": bytes_reuse / seconds / 1e9 / peak if peak else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results folder with GPU and cuda-emu records of hbp artifacts")
    parser.add_argument("--scale", default="quick", help="the scale of the records (default quick)")
    args = parser.parse_args(argv)
    rows = table(args.results, args.scale)
    if not rows:
        print(f"no matrix has both a GPU hbp/spmv record and a cuda-emu traffic record under {args.results} "
              f"at scale {args.scale}", file=sys.stderr)
        return 1
    print(f"{'matrix':28} {'nnz':>9} {'executor':18} {'ms':>9} {'MB':>9} {'MB x':>9} {'peak':>6} {'peak x':>6}")
    for row in rows:
        fractions = "".join(f" {v:6.2f}" if v is not None else "      -" for v in (row["fraction"],
                                                                                   row["fraction_xreuse"]))
        print(f"{row['matrix'][:28]:28} {row['nnz']:9d} {row['executor']:18} {row['ms']:9.4f} {row['MB']:9.3f} "
              f"{row['MB_xreuse']:9.3f}{fractions}")
    for executor in sorted({row["executor"] for row in rows}):
        mine = [row for row in rows if row["executor"] == executor and row["fraction"] is not None]
        if mine:
            print(f"{executor}: median fraction of peak bandwidth implied by the model over {len(mine)} matrices: "
                  f"{statistics.median(r['fraction'] for r in mine):.2f} (no reuse), "
                  f"{statistics.median(r['fraction_xreuse'] for r in mine):.2f} (x reused within a block)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
