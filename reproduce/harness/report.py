"""The HTML report: ``results/`` -> ``reports/index.html`` and a page per artifact.

``build_report`` reads the run records (:mod:`reproduce.harness.records`), re-runs each
artifact's ``summarize`` on the records of its most recent config per scale, judges the
claims (:func:`reproduce.harness.runner.judge_records`) and writes

- ``reports/index.html``: the whole suite's tally of verdicts (by scale, and over each
  artifact's headline run), then one row per artifact with its verdict counts, every
  discovered artifact included (never run: all its claims "not run");
- ``reports/<paper>/<name>.html``: per scale that has records (full, quick, smoke), the
  verdict counts, the verdicts (label, measured value, 95% interval, samples), a forest plot
  of the claims judged from samples (:mod:`reproduce.harness.forest`), the summary table,
  notes, plots, failed and skipped units, and the environment the records were produced in;
- ``reports/verdicts.json``: every verdict of every claim at every scale with records (a
  never-run artifact's claims with scale null), for scripts and CI (:func:`verdict_entries`).

Decisions:

- The index row of an artifact describes its *headline run*: the largest scale that has
  records (full, then quick, then smoke), because that run checks the most claims; a
  later smoke test does not hide a full run. The other scales run are listed beside it
  and each has its own section on the page.
- Pages are self-contained: CSS inline, plots inline as base64 PNG, no JavaScript, no
  remote references; they open from ``file://``. The Jinja templates and the stylesheet are
  files in ``reproduce/harness/templates/``, shipped as package data. Claim sources are shown as text, not
  links, for the same reason.
- Nothing from data becomes markup. Every string that comes from a record, a claim, a
  summary (table cells, notes, captions), a matrix or file name is autoescaped by jinja2;
  the one ``Markup`` built from data is the summary table, which pandas writes with
  ``escape=True``; plot images are PNG data URIs drawn here (no SVG text). Each page also
  carries a Content-Security-Policy that allows no script and no remote load at all.
- A report is a pure function of the records: it carries no build time, so building it
  twice from the same results gives byte-identical files (``verdicts.json`` included: its
  order is artifact, then scale full/quick/smoke, then the artifact's claim order).
- Verdicts show their label (``Verdict.label``: ``(1 sample)``, ``(indicative)``,
  ``(other device)``), and every count of verdicts counts the ``(other device)`` ones apart
  (:class:`~reproduce.harness.console.Tally`).
- An artifact whose ``summarize`` raises, or whose claims are missing from its
  ``claims.toml``, gets its error shown on its page (claims "not run") instead of
  stopping the report for every other artifact.
- Every file is written to a temporary file and renamed over the target, so a crash
  never leaves a half-written page.
"""

from __future__ import annotations

import base64
import io
import json
import math
import numbers
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from reproduce.harness import claims as claims_mod
from reproduce.harness import runner
from reproduce.harness.artifact import Artifact, Context, Summary
from reproduce.harness.claims import VERDICTS, Claim, Verdict
from reproduce.harness.console import Tally
from reproduce.harness.device import timing_comparable
from reproduce.harness.errors import ReproError
from reproduce.harness.forest import forest_entries, forest_figure
from reproduce.harness.paths import atomic_write_text
from reproduce.harness.records import Record, read_record

SCALE_ORDER = ("full", "quick", "smoke")
FIGURE_DPI = 110
# The folder of reproduce/harness that holds the page templates and the stylesheet (packaged as package data).
TEMPLATE_DIR = "templates"
MISSING = "\u2014"
# Where ``asv publish`` writes the benchmark site (asv.conf.json's ``html_dir``), inside the reports folder.
ASV_SITE = Path("asv") / "index.html"
BETTER_TEXT = {"higher": "\u2191 higher is better", "lower": "\u2193 lower is better",
               "neither": "\u2195 should equal the paper's"}
VERDICTS_JSON = "verdicts.json"
VERDICTS_SCHEMA = 1
FOREST_CAPTION = ("Forest plot of the claims judged from samples, one panel per claim on its own unit: the paper's "
                  "value (black line) and tolerance (dark green band), with the side better than the paper shaded; "
                  "the measured statistic (diamond) and its 95% bootstrap interval (bar), coloured by verdict; each "
                  "sample (seed, repeated timing) as a grey dot, one row per stratum (matrix, setting).")
MARKS = {"(1 sample)": "one sample of a quantity that varies from seed to seed: at most inconclusive",
         "(indicative)": "the paper's value is read off a chart",
         "(other device)": "measured on another class of device than the paper's (a CPU against a GPU figure)"}


@dataclass
class ScaleView:
    """What the report shows of one artifact at one scale: its most recent run."""

    scale: str
    records: list[Record]
    context: Context
    verdicts: list[Verdict]
    table_html: Markup | None = None
    notes: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    forest: str | None = None
    forest_claims: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def units(self) -> dict[str, int]:
        """Units per status: ``{"ok": n, "failed": n, "skipped": n}``."""
        counts = Counter(r.status for r in self.records)
        return {status: counts.get(status, 0) for status in ("ok", "failed", "skipped")}

    @property
    def newest(self) -> Record:
        """The most recently started record of the run."""
        return max(self.records, key=lambda r: r.started)

    @property
    def oldest(self) -> Record:
        """The first started record of the run."""
        return min(self.records, key=lambda r: r.started)


@dataclass
class ArtifactView:
    """An artifact with the runs it has, newest config per scale, largest scale first."""

    artifact: Artifact
    runs: list[ScaleView]
    unrun: list[Verdict] = field(default_factory=list)
    problem: str | None = None

    @property
    def headline(self) -> ScaleView | None:
        """The run the index row describes: the largest scale with records."""
        return self.runs[0] if self.runs else None

    @property
    def verdicts(self) -> list[Verdict]:
        """The verdicts of the headline run, or all claims "not run" when never run."""
        return self.headline.verdicts if self.headline else self.unrun

    @property
    def counts(self) -> Tally:
        """Claims of the headline run per verdict status, the other-device ones apart."""
        return Tally.of(self.verdicts)

    @property
    def href(self) -> str:
        """The page's path relative to ``reports/``."""
        return f"{self.artifact.paper}/{self.artifact.name}.html"


def asv_site(reports: Path) -> Path | None:
    """The front page of the asv site in ``reports`` (``reports/asv/index.html``) if ``asv publish`` wrote one."""
    index = Path(reports) / ASV_SITE
    return index if index.is_file() else None


def build_report(results: Path, reports: Path, artifacts: dict[str, Artifact] | None = None) -> Path:
    """Write the HTML report of ``results`` into ``reports`` and return ``index.html``'s path.

    Parameters
    ----------
    results : Path
        The records folder (``results/``), as written by the runner.
    reports : Path
        The output folder; created if absent. Other files in it (``reports/asv``) are left alone; the front
        page links to the asv site there where it exists (:func:`asv_site`).
    artifacts : dict[str, Artifact], optional
        ``{"paper/name": Artifact}`` to report on; default every discovered artifact.
    """
    results, reports = Path(results), Path(reports)
    if artifacts is None:
        artifacts = runner.discover()
    views = [collect(artifact, results) for _, artifact in sorted(artifacts.items())]
    templates = _templates()
    for view in views:
        page = templates.get_template("artifact.html.j2").render(view=_page_context(view))
        atomic_write_text(reports / view.href, page)
    atomic_write_text(reports / VERDICTS_JSON, verdicts_json(views))
    orphans = orphan_artifacts(results, artifacts)
    index = templates.get_template("index.html.j2").render(
        rows=[_index_row(v) for v in views], totals=Tally.of(v for view in views for v in view.verdicts),
        by_scale=suite_tally(views), orphans=orphans, verdicts_json=VERDICTS_JSON,
        asv_href=ASV_SITE.as_posix() if asv_site(reports) else None)
    index_path = reports / "index.html"
    atomic_write_text(index_path, index)
    return index_path


def collect(artifact: Artifact, results: Path) -> ArtifactView:
    """Summarise and judge the most recent run of ``artifact`` at each scale with records."""
    runs = []
    for scale in SCALE_ORDER:
        found = runner.latest_run(artifact, scale, results) if scale in artifact.scales else None
        if found is not None:
            runs.append(judge_scale(artifact, *found))
    claims, problem = declared_claims(artifact)
    unrun = [Verdict(c, "not run", note="no records at any scale") for c in claims]
    return ArtifactView(artifact, runs, unrun, problem)


def judge_scale(artifact: Artifact, records: list[Record], ctx: Context) -> ScaleView:
    """Summarise one run, render its table and plots, and judge its claims.

    A failing ``summarize`` (or a claim missing from ``claims.toml``) becomes the view's
    ``error``, with every declared claim "not run".
    """
    view = ScaleView(ctx.scale, records, ctx, verdicts=[])
    try:
        summary, view.verdicts = runner.judge_records(artifact, records, ctx)
    except Exception as err:  # noqa: BLE001 - one broken artifact must not stop the whole report
        view.error = f"{type(err).__name__}: {err}" if not isinstance(err, ReproError) else str(err)
        claims, _ = declared_claims(artifact)
        view.verdicts = [Verdict(c, "not run", note="the summary failed") for c in claims]
        return view
    if summary is not None:
        _render_summary(summary, view)
        entries = forest_entries(view.verdicts, summary.samples)
        if entries:
            view.forest = figure_data_uri(forest_figure(entries))
            view.forest_claims = [verdict.claim.id for verdict, _ in entries]
    return view


def declared_claims(artifact: Artifact) -> tuple[list[Claim], str | None]:
    """The claims ``artifact`` checks, found in its paper's ``claims.toml``, and any problem."""
    try:
        known = {c.id: c for c in claims_mod.load_claims(artifact.paper)}
    except ReproError as err:
        return [], str(err)
    missing = [cid for cid in artifact.claims if cid not in known]
    problem = f"claims not in {artifact.paper}/claims.toml: {', '.join(missing)}" if missing else None
    return [known[cid] for cid in artifact.claims if cid in known], problem


def suite_tally(views: list[ArtifactView]) -> list[tuple[str, Tally]]:
    """The whole suite's verdicts per scale run (every artifact's run at that scale), largest scale first."""
    return [(scale, Tally.of(v for view in views for run in view.runs if run.scale == scale for v in run.verdicts))
            for scale in SCALE_ORDER if any(run.scale == scale for view in views for run in view.runs)]


def verdict_entry(artifact: Artifact, scale: str | None, verdict: Verdict) -> dict:
    """One verdict as ``verdicts.json`` holds it: JSON values only, no NaN (a non-finite number is null).

    ``ci`` is the 95% interval ``[low, high]`` or null; ``samples`` the samples per stratum the verdict
    rests on (seeds, repeats) or null (a deterministic claim judged on its value, or nothing judged);
    ``device_match`` is null for a claim with no ``platform``; ``value``, ``unit``, ``better`` and
    ``bounds`` (the tolerance as ``[low, high]`` in the claim's unit) repeat the claim.
    """
    claim = verdict.claim
    return {
        "paper": artifact.paper, "artifact": artifact.name, "claim": claim.id, "scale": scale,
        "verdict": verdict.status, "label": verdict.label, "measured": _finite(verdict.measured),
        "ci": None if verdict.ci is None else [_finite(x) for x in verdict.ci], "samples": verdict.samples,
        "deterministic": claim.deterministic, "device_match": verdict.device_match, "platform": claim.platform,
        "value": _finite(claim.value), "unit": claim.unit, "better": claim.better,
        "bounds": [_finite(float(f"{x:.12g}")) for x in claim.bounds()],  # without float noise (22.360000000000003)
        "confidence": claim.confidence, "note": verdict.note,
    }


def verdict_entries(views: list[ArtifactView]) -> list[dict]:
    """Every verdict of every artifact at every scale with records, in the report's order; a never-run
    artifact's claims once, "not run", with scale null."""
    entries = []
    for view in views:
        for run in view.runs:
            entries += [verdict_entry(view.artifact, run.scale, v) for v in run.verdicts]
        if not view.runs:
            entries += [verdict_entry(view.artifact, None, v) for v in view.unrun]
    return entries


def verdicts_json(views: list[ArtifactView]) -> str:
    """The text of ``verdicts.json``: ``{"schema": 1, "verdicts": [entry, ...]}`` (:func:`verdict_entry`)."""
    document = {"schema": VERDICTS_SCHEMA, "verdicts": verdict_entries(views)}
    return json.dumps(document, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def _finite(value: float | None) -> float | None:
    """``value`` as a float, or None when it is None, NaN or infinite (JSON has neither)."""
    return None if value is None or not math.isfinite(value) else float(value)


def orphan_artifacts(results: Path, artifacts: dict[str, Artifact]) -> list[str]:
    """``paper/name`` of record folders in ``results`` that no known artifact owns."""
    known = {(a.paper, a.name) for a in artifacts.values()}
    found = set()
    for path in sorted(Path(results).glob("*/*/*/*.json")):
        paper, name = path.parts[-4], path.parts[-3]
        if (paper, name) not in known and (paper, name) not in found and read_record(path) is not None:
            found.add((paper, name))
    return [f"{paper}/{name}" for paper, name in sorted(found)]


def _render_summary(summary: Summary, view: ScaleView) -> None:
    """Fill ``view`` with the summary's table, notes and plots (each figure saved as an inline PNG)."""
    view.table_html = table_html(summary.table) if summary.table is not None else None
    view.notes = list(summary.notes)
    view.figures = [(caption, figure_data_uri(fig)) for caption, fig in summary.figures]


def table_html(table: pd.DataFrame) -> Markup:
    """A DataFrame as an escaped HTML table, floats formatted by :func:`format_number`.

    The index is shown only when it carries information (not a plain 0..n-1 range).
    """
    show_index = not isinstance(table.index, pd.RangeIndex) or table.index.name is not None
    html = table.to_html(classes="data", border=0, float_format=format_number, na_rep=MISSING,
                         index=show_index, escape=True)
    return Markup(html)


def figure_data_uri(fig) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI (no metadata, reproducible)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def format_number(value: Any) -> str:
    """A number for a table cell: 4 significant digits, no exponent between 1e-3 and 1e6.

    ``None`` and NaN show as a dash; integers and non-numbers as they are.
    """
    if isinstance(value, (bool, int, np.integer)) or not isinstance(value, (numbers.Real, type(None))):
        return str(value)
    if value is None or math.isnan(value):
        return MISSING
    value = float(value)
    magnitude = abs(value)
    if magnitude == 0 or math.isinf(magnitude):
        return str(value) if magnitude else "0"
    if 1e-3 <= magnitude < 1e6:
        decimals = max(0, 3 - math.floor(math.log10(magnitude)))
        return f"{value:.{decimals}f}"
    return f"{value:.3e}"


def _with_unit(text: str, unit: str) -> str:
    """``3.5 x``, ``71 %``, or the bare number when there is no unit."""
    return f"{text} {unit}" if unit else text


def tolerance_text(claim: Claim) -> str:
    """The claim's tolerance as a reader writes it: ``±25%``, ``±1.5 pp``, ``[3, 4] x``."""
    kind, width = next(iter(claim.tolerance.items()))
    if kind == "rel":
        return f"\u00b1{width * 100:g}%"
    if kind == "abs":
        return _with_unit(f"\u00b1{width:g}", claim.unit)
    low, high = width
    return _with_unit(f"[{low:g}, {high:g}]", claim.unit)


def gap_text(verdict: Verdict) -> str:
    """Measured minus paper value, with the unit and, when meaningful, the relative gap."""
    if verdict.gap is None:
        return MISSING
    text = _with_unit(f"{'+' if verdict.gap > 0 else ''}{format_number(verdict.gap)}", verdict.claim.unit)
    if verdict.claim.value and verdict.claim.unit != "%":
        text += f" ({verdict.gap / abs(verdict.claim.value) * 100:+.1f}%)"
    return text


def interval_html_text(verdict: Verdict) -> str:
    """The verdict's 95% interval as ``[2.100, 2.300] x``, or a dash."""
    if verdict.ci is None:
        return MISSING
    low, high = (format_number(x) for x in verdict.ci)
    return _with_unit(f"[{low}, {high}]", verdict.claim.unit)


def verdict_row(verdict: Verdict) -> dict:
    """One row of the verdict table, every cell already a string."""
    claim = verdict.claim
    paper = _with_unit(f"{claim.value:g}" + (f" \u00b1 {claim.std:g}" if claim.std is not None else ""), claim.unit)
    measured = MISSING if verdict.measured is None else _with_unit(format_number(verdict.measured), claim.unit)
    return {
        "id": claim.id, "text": claim.text, "paper": paper,
        "better": BETTER_TEXT[claim.better],
        "tolerance": tolerance_text(claim), "measured": measured, "ci": interval_html_text(verdict),
        "samples": MISSING if verdict.samples is None else str(verdict.samples), "gap": gap_text(verdict),
        "status": verdict.status, "label": verdict.label, "css": _css_class(verdict.status),
        "confidence": claim.confidence, "source": claim.source, "note": verdict.note,
    }


def marks_used(verdicts: list[Verdict]) -> list[tuple[str, str]]:
    """The label marks (:data:`MARKS`) that ``verdicts`` carry, with what each means, in a fixed order."""
    labels = [v.label for v in verdicts]
    return [(mark, meaning) for mark, meaning in MARKS.items() if any(mark in label for label in labels)]


def _css_class(status: str) -> str:
    """``not reproduced`` -> ``v-not-reproduced``."""
    return "v-" + status.replace(" ", "-")


def date_text(started: str) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM UTC`` (as stored when it does not parse)."""
    try:
        moment = datetime.fromisoformat(started)
    except ValueError:
        return started or MISSING
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def device_text(device: dict) -> str:
    """``cuda: NVIDIA H200`` or ``cpu: AMD EPYC ...`` from a record's device dict."""
    kind, name = device.get("kind") or "?", device.get("name") or ""
    return f"{kind}: {name}" if name else kind


def device_note(ctx: Context) -> str | None:
    """A warning for a run on a device whose times say nothing of a real one (the emulated CUDA device)."""
    if timing_comparable(ctx.device):
        return None
    return ("Run on the emulated CUDA device: the CUDA kernels ran on the CPU with every access checked, for "
            "correctness and memory traffic. Its times are not comparable with any real device's, and no claim "
            "is judged from them.")


def _environment(view: ScaleView) -> dict:
    """The environment section of one run, from its newest record."""
    newest = view.newest
    env = newest.environment or {}
    git = env.get("git") or {}
    dirty = {True: "yes (tracked files differed from the commit)", False: "no", None: "unknown"}
    commits = sorted({(r.environment.get("git") or {}).get("commit") or "unknown" for r in view.records})
    return {
        "device": {k: _cell(v, k) for k, v in (newest.device or {}).items()},
        "python": " ".join(x for x in (env.get("implementation"), env.get("python")) if x) or MISSING,
        "platform": env.get("platform") or MISSING,
        "packages": dict(sorted((env.get("packages") or {}).items())),
        "commit": git.get("commit") or "unknown", "dirty": dirty.get(git.get("dirty"), "unknown"),
        "commits": commits if len(commits) > 1 else [],
        "seed": view.context.seed, "config_hash": newest.config_hash,
        "config": json.dumps(view.context.config, indent=2, sort_keys=True, default=str),
    }


def _cell(value: Any, key: str = "") -> str:
    """A value of a record's dict as table text: JSON for containers, GiB for ``*_bytes``."""
    if value is None:
        return MISSING
    if key.endswith("_bytes") and isinstance(value, int):
        return f"{value / 2**30:.1f} GiB"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _unit_rows(records: list[Record]) -> list[dict]:
    """Every unit of a run: id, status, duration, data provenance, error or reason."""
    rows = []
    for record in sorted(records, key=lambda r: r.unit):
        data = record.data or {}
        source = " ".join(str(data[k]) for k in ("source", "file") if data.get(k))
        rows.append({"unit": record.unit, "status": record.status, "duration": f"{record.duration_s:.2f} s",
                     "data": source or MISSING, "sha256": str(data.get("sha256") or "")[:12],
                     "detail": record.error or record.reason or ""})
    return rows


def _run_context(view: ScaleView, artifact: Artifact) -> dict:
    """Everything the page template shows of one run."""
    units = _unit_rows(view.records)
    return {
        "scale": view.scale, "needs": artifact.needs.get(view.scale, ""), "error": view.error,
        "verdicts": [verdict_row(v) for v in view.verdicts], "counts": Tally.of(view.verdicts),
        "marks": marks_used(view.verdicts), "forest": view.forest, "forest_claims": view.forest_claims,
        "forest_caption": FOREST_CAPTION,
        "units": view.units, "unit_rows": units, "problems": [u for u in units if u["status"] != "ok"],
        "table_html": view.table_html, "notes": view.notes, "figures": view.figures,
        "device": device_text(view.newest.device or {}), "device_note": device_note(view.context),
        "environment": _environment(view),
        "first": date_text(view.oldest.started), "last": date_text(view.newest.started),
    }


def _page_context(view: ArtifactView) -> dict:
    """Everything the artifact page template shows."""
    artifact = view.artifact
    run_scales = [run.scale for run in view.runs]
    return {
        "id": artifact.id, "title": artifact.title,
        "runs": [_run_context(run, artifact) for run in view.runs],
        "unrun": [verdict_row(v) for v in view.unrun], "unrun_counts": Tally.of(view.unrun),
        "problem": view.problem,
        "missing_scales": [{"scale": s, "needs": artifact.needs.get(s, "")}
                           for s in SCALE_ORDER if s in artifact.scales and s not in run_scales],
    }


def _index_row(view: ArtifactView) -> dict:
    """One row of the index table."""
    headline = view.headline
    return {
        "paper": view.artifact.paper, "name": view.artifact.name, "title": view.artifact.title,
        "href": view.href, "counts": view.counts,
        "scale": headline.scale if headline else None,
        "others": [run.scale for run in view.runs[1:]],
        "units": headline.units if headline else None,
        "device": device_text(headline.newest.device or {}) if headline else MISSING,
        "date": date_text(headline.newest.started) if headline else MISSING,
        "error": bool(view.problem or (headline and headline.error)),
    }


def _templates() -> jinja2.Environment:
    """The page templates of :data:`TEMPLATE_DIR` (``index.html.j2``, ``artifact.html.j2``, the ``base.html.j2``
    they extend, ``macros.html.j2`` and the stylesheet ``report.css`` that base inlines), HTML-autoescaped;
    undefined names are errors, not blanks."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("reproduce.harness", TEMPLATE_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.globals.update(csp=CONTENT_SECURITY_POLICY, dash=MISSING, statuses=VERDICTS)
    env.filters["verdict_css"] = _css_class
    return env


# No script, no remote fetch: only the inline stylesheet and data: images may load, even if
# some text ever escaped the autoescaping.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
                           "form-action 'none'")
