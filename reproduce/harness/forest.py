"""Forest plots of a run's verdicts: what each claim judged from samples rests on.

One small panel per claim, stacked, each on the claim's own axis and unit (an artifact's claims
mix %, x, s, FID...), so nothing is normalised. A panel shows

- the paper's value (a black line) and its tolerance band (:meth:`Claim.bounds`, dark green),
  with the rest of the side that counts as reproduced, better than the paper, lightly shaded;
- the measured statistic (:meth:`Samples.point`, the claim's ``mean``/``max``/... over strata)
  with its 95% interval (``Verdict.ci``, the stratified percentile bootstrap of
  :mod:`reproduce.harness.stats`), coloured by verdict;
- every sample (seed, repeated timing) as a grey dot, one row per stratum (matrix, setting).

A panel whose values are all positive and span a factor of :data:`LOG_SPAN` or more (speed-ups
over matrices from 0.5x to 50x) is drawn on a log axis, and its axis label says so.

Built with matplotlib's object API (``matplotlib.figure.Figure``), never pyplot: no figure is
registered globally, so none needs closing, and drawing is deterministic (no jitter), so the
same verdicts give the same PNG.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from reproduce.harness.claims import JUDGED, Verdict
from reproduce.harness.stats import Samples

COLOURS = {"reproduced": "#116329", "not reproduced": "#a40e26", "inconclusive": "#9a6700"}
BAND, BETTER = "#4ac26b", "#dafbe1"
PANEL_HEIGHT, WIDTH = 1.05, 7.5
MEASURED_Y, SAMPLES_Y = 0.25, (-0.1, -0.45)  # the statistic's row; the span of the strata's rows
LOG_SPAN = 10.0


def forest_entries(verdicts: Sequence[Verdict], samples: dict) -> list[tuple[Verdict, Samples]]:
    """The judged verdicts whose claim has samples in ``samples`` (a Summary's ``{claim id: Samples or
    list}``), each with its samples as :class:`Samples`, in the verdicts' order."""
    return [(v, Samples.of(samples[v.claim.id])) for v in verdicts
            if v.status in JUDGED and v.measured is not None and samples.get(v.claim.id) is not None]


def forest_figure(entries: Sequence[tuple[Verdict, Samples]]) -> Figure | None:
    """A figure of one panel per ``(verdict, samples)`` (see the module docstring); None without entries."""
    if not entries:
        return None
    fig = Figure(figsize=(WIDTH, 0.6 + PANEL_HEIGHT * len(entries)), layout="constrained")
    axes = fig.subplots(len(entries), 1, squeeze=False)[:, 0]
    for ax, (verdict, samples) in zip(axes, entries, strict=True):
        _panel(ax, verdict, samples)
    handles = [Line2D([], [], color="black", lw=1.2, label="paper value"),
               Patch(color=BAND, alpha=0.45, label="tolerance"),
               Patch(color=BETTER, label="better than the paper"),
               Line2D([], [], color="#424a53", marker="D", lw=1.5, label="measured, 95% interval"),
               Line2D([], [], color="#8c959f", marker="o", ls="", ms=4, label="samples (a row per stratum)")]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=7, frameon=False)
    return fig


def _panel(ax, verdict: Verdict, samples: Samples) -> None:
    """One claim's panel: band, paper value, samples per stratum, statistic with its interval."""
    claim = verdict.claim
    low, high = claim.bounds()
    values = np.concatenate([np.asarray(v, dtype=np.float64) for v in samples.strata.values()])
    ci = verdict.ci
    shown = [low, high, claim.value, verdict.measured, *values, *(ci or ())]
    log = min(shown) > 0 and max(shown) >= LOG_SPAN * min(shown)
    left, right = _limits(min(shown), max(shown), log)
    if log:
        ax.set_xscale("log")
    ax.axvspan(low, high, color=BAND, alpha=0.45, lw=0)
    if claim.better == "higher":
        ax.axvspan(high, right, color=BETTER, lw=0)
    elif claim.better == "lower":
        ax.axvspan(left, low, color=BETTER, lw=0)
    ax.axvline(claim.value, color="black", lw=1.2)
    rows = np.linspace(*SAMPLES_Y, len(samples.strata)) if len(samples.strata) > 1 else [np.mean(SAMPLES_Y)]
    for y, stratum in zip(rows, samples.strata.values(), strict=True):
        ax.plot(stratum, np.full(len(stratum), y), "o", color="#8c959f", ms=3.5, alpha=0.8)
    colour = COLOURS.get(verdict.status, "#424a53")
    if ci is not None:
        ax.hlines(MEASURED_Y, ci[0], ci[1], color=colour, lw=2.5)
    ax.plot([verdict.measured], [MEASURED_Y], "D", color=colour, ms=6)
    ax.set(xlim=(left, right), ylim=(-0.65, 0.6), yticks=[])
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel((claim.unit or "value") + (" (log scale)" if log else ""), fontsize=7, labelpad=1, parse_math=False)
    ax.set_title(_title(verdict, samples), loc="left", fontsize=8, color=colour, parse_math=False)


def _limits(lowest: float, highest: float, log: bool) -> tuple[float, float]:
    """The panel's x range: everything shown, with a margin (8% of the span, of its logarithm on a log axis;
    a unit wide around a single value)."""
    if log:
        factor = (highest / lowest) ** 0.08
        return lowest / factor, highest * factor
    span = highest - lowest
    margin = 0.08 * span if span > 0 else max(abs(highest) * 0.05, 0.5)
    return lowest - margin, highest + margin


def _title(verdict: Verdict, samples: Samples) -> str:
    """``claim: label · n samples per stratum × strata (statistic)``."""
    strata = len(samples.strata)
    if strata == 1:
        spread = f"{samples.count} sample{'s' if samples.count != 1 else ''}"
    else:
        most = max(len(values) for values in samples.strata.values())
        per = f"{samples.per_stratum}" if most == samples.per_stratum else f"{samples.per_stratum}-{most}"
        spread = f"{per} per stratum \u00d7 {strata} strata ({samples.statistic})"
    return f"{verdict.claim.id}: {verdict.label} \u00b7 {spread}"
