"""``repro compare RESULTS_A RESULTS_B``: per-unit ratios between two results folders.

The two folders hold records of the same artifacts from two commits or two machines.
Records are matched by (paper, artifact, scale, unit); only ``ok`` records count, and
where a folder holds several configs of one unit (reruns with other options) the most
recently started record is taken. For every numeric metric that both records of a pair
carry (or only ``metric``), the ratio is ``B / A``.

The ratio says nothing about which direction is better (a time that doubles is worse, a
GFLOP/s that doubles is better), so the summary gives per metric the geometric mean of
the ratios and the units furthest from 1 *in either direction* (largest ``|log ratio|``),
and the metric's unit beside it. Pairs where either value is zero, negative, missing or
not finite have no ratio and are counted as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reproduce.harness.console import format_table
from reproduce.harness.errors import DataError, ReproError
from reproduce.harness.records import Record, load_records

KEY = ("paper", "artifact", "scale", "unit")


@dataclass
class Comparison:
    """The matched ratios of two results folders.

    ``ratios`` has one row per (paper, artifact, scale, unit, metric) with columns ``a``,
    ``b``, ``ratio`` (B / A) and ``unit_of_measure``; ``summary`` one row per (artifact,
    scale, metric) with the count, the geometric mean, the smallest and largest ratio;
    ``matched`` the number of units in both; ``unmatched`` the number of ok records of
    each folder that have no partner; ``no_ratio`` the matched metric values without a
    ratio (zero, negative, missing).
    """

    a: Path
    b: Path
    ratios: pd.DataFrame
    summary: pd.DataFrame
    matched: int
    unmatched: dict[str, int]
    no_ratio: int


def _latest_ok(folder: Path, target: str | None) -> dict[tuple, Record]:
    """The newest ok record per (paper, artifact, scale, unit) under ``folder``, optionally one target's."""
    if not Path(folder).is_dir():
        raise DataError(f"{folder} is not a folder of results; pass the --out folder of a `repro run`")
    paper, _, name = (target or "").partition("/")
    latest: dict[tuple, Record] = {}
    for record in load_records(folder, paper or None, name or None):
        key = (record.paper, record.artifact, record.scale, record.unit)
        if record.status == "ok" and (key not in latest or record.started > latest[key].started):
            latest[key] = record
    if not latest:
        where = f" for {target}" if target else ""
        raise DataError(f"{folder} holds no ok record{where} (records lie in <folder>/<paper>/<artifact>/<scale>/"
                        "<unit>.<hash>.json); check the path")
    return latest


def _number(value) -> float | None:
    """``value`` as a float if it is a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def compare_results(a: Path, b: Path, *, metric: str | None = None, target: str | None = None) -> Comparison:
    """Match the ok records of ``a`` and ``b`` and compute the ratio B / A of each metric.

    Parameters
    ----------
    a, b : Path
        Results folders (the ``--out`` of ``repro run``).
    metric : str, optional
        Compare only this metric.
    target : str, optional
        Only this artifact (``paper/name``) or paper.

    Raises
    ------
    DataError
        A folder is missing or holds no ok record.
    ReproError
        No unit is in both folders, or none of the matched records has ``metric``.
    """
    left, right = _latest_ok(a, target), _latest_ok(b, target)
    common = sorted(left.keys() & right.keys())
    if not common:
        raise ReproError(f"no unit is in both folders: {a} has {_describe(left)}; {b} has {_describe(right)}. "
                         "Records match by paper, artifact, scale and unit: run the same artifacts at the same scale")
    rows, no_ratio = [], 0
    for key in common:
        first, second = left[key], right[key]
        names = [metric] if metric else sorted(first.metrics.keys() & second.metrics.keys())
        for name in names:
            x, y = _number(first.value(name)), _number(second.value(name))
            if name not in first.metrics or name not in second.metrics or (x is None and y is None):
                continue
            finite = x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
            if not finite or x <= 0 or y <= 0:
                no_ratio += 1
                continue
            rows.append({**dict(zip(KEY, key, strict=True)), "metric": name, "a": x, "b": y, "ratio": y / x,
                         "unit_of_measure": first.metrics[name].get("unit", "")})
    if not rows:
        what = f"metric {metric!r}" if metric else "a positive numeric metric"
        available = sorted({name for key in common for name in left[key].metrics})
        raise ReproError(f"{len(common)} units match, but none has {what} in both folders with a ratio; "
                         f"metrics there: {', '.join(available[:30]) or 'none'}")
    ratios = pd.DataFrame(rows)
    summary = (ratios.assign(log=np.log(ratios["ratio"]))
               .groupby(["paper", "artifact", "scale", "metric"], sort=True)
               .agg(units=("ratio", "size"), geomean=("log", "mean"), min=("ratio", "min"), max=("ratio", "max"),
                    unit_of_measure=("unit_of_measure", "first"))
               .reset_index())
    summary["geomean"] = np.exp(summary["geomean"])
    unmatched = {"a": len(left) - len(common), "b": len(right) - len(common)}
    return Comparison(Path(a), Path(b), ratios, summary, len(common), unmatched, no_ratio)


def _describe(records: dict[tuple, Record]) -> str:
    """``paper/artifact (scale): n units`` for each artifact and scale of a folder."""
    counts = pd.Series([f"{p}/{art} ({scale})" for p, art, scale, _ in records]).value_counts().sort_index()
    return ", ".join(f"{name}: {n} units" for name, n in counts.items())


def worst_cases(comparison: Comparison, top: int = 5) -> pd.DataFrame:
    """Per metric, the ``top`` units whose ratio is furthest from 1 (either direction)."""
    ratios = comparison.ratios.assign(distance=np.abs(np.log(comparison.ratios["ratio"])))
    worst = (ratios.sort_values("distance", ascending=False, kind="stable")
             .groupby(["paper", "artifact", "scale", "metric"], sort=True).head(top))
    return worst.sort_values(["paper", "artifact", "scale", "metric", "distance"], ascending=[True] * 4 + [False])


def format_comparison(comparison: Comparison, top: int = 5, reports: Path = Path("reports")) -> str:
    """The terminal text of a comparison: the summary per metric, then the extreme units, then a link to the
    asv site of ``reports`` (benchmarks over commits) where ``asv publish`` wrote one."""
    from reproduce.harness.report import asv_site

    summary = comparison.summary.assign(artifact=comparison.summary["paper"] + "/" + comparison.summary["artifact"])
    lines = [f"ratio = B / A; A = {comparison.a}, B = {comparison.b}",
             f"{comparison.matched} units matched; "
             f"unmatched ok records: {comparison.unmatched['a']} only in A, {comparison.unmatched['b']} only in B; "
             f"{comparison.no_ratio} matched values without a ratio (zero, negative or missing)",
             "", format_table(summary[["artifact", "scale", "metric", "unit_of_measure", "units", "geomean", "min",
                                       "max"]], max_rows=200)]
    if top > 0:
        worst = worst_cases(comparison, top)
        worst = worst.assign(artifact=worst["paper"] + "/" + worst["artifact"])
        lines += ["", f"furthest from 1 (up to {top} units per metric):",
                  format_table(worst[["artifact", "scale", "metric", "unit", "a", "b", "ratio"]], max_rows=400)]
    site = asv_site(reports)
    if site is not None:
        lines += ["", f"benchmarks over commits (asv): {site.resolve().as_uri()}"]
    return "\n".join(lines)


def plot_comparison(comparison: Comparison, path: Path) -> Path:
    """Plot every ratio (one column of points per metric, log scale) with its geometric mean into a PNG."""
    from matplotlib.figure import Figure

    ratios = comparison.ratios.assign(label=comparison.ratios["artifact"] + ": " + comparison.ratios["metric"])
    labels = sorted(ratios["label"].unique())
    fig = Figure(figsize=(max(6.0, 0.35 * len(labels) + 2), 4.5))
    ax = fig.subplots()
    jitter = np.random.default_rng(0)
    for position, label in enumerate(labels):
        values = ratios.loc[ratios["label"] == label, "ratio"].to_numpy()
        ax.scatter(position + jitter.uniform(-0.2, 0.2, len(values)), values, s=10, alpha=0.6, color="tab:blue")
        ax.hlines(float(np.exp(np.log(values).mean())), position - 0.35, position + 0.35, color="tab:red", lw=2)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="B / A per unit (red: geometric mean)", title=f"{comparison.b.name} over {comparison.a.name}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
