"""Plain-text tables for the terminal (the end-of-run summary, ``repro list``) and verdict tallies.

:class:`Tally` counts verdicts by status and, apart, those measured on another class of device than
the paper's (``(other device)``); the terminal summary and the HTML report both show it.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from reproduce.harness.artifact import SCALES, Artifact
from reproduce.harness.claims import JUDGED, VERDICTS, Verdict, load_claims

pd.set_option("display.width", 160)


@dataclass(frozen=True)
class Tally:
    """Claims per verdict status and, per judged status, how many were measured on another device.

    ``counts`` maps every status of :data:`~reproduce.harness.claims.VERDICTS` (in that order) to its
    number of claims; ``other_device`` maps each judged status (:data:`~reproduce.harness.claims.JUDGED`)
    to how many of those claims were measured on another class of device than the paper's
    (``Verdict.device_match is False``): they are included in ``counts`` and shown apart.
    """

    counts: dict[str, int]
    other_device: dict[str, int]

    @classmethod
    def of(cls, verdicts: Iterable[Verdict]) -> Tally:
        """The tally of ``verdicts``."""
        verdicts = list(verdicts)
        counts = Counter(v.status for v in verdicts)
        other = Counter(v.status for v in verdicts if v.device_match is False and v.status in JUDGED)
        return cls({s: counts.get(s, 0) for s in VERDICTS}, {s: other.get(s, 0) for s in JUDGED})

    @property
    def on_other_device(self) -> int:
        """Judged claims measured on another class of device than the paper's."""
        return sum(self.other_device.values())

    @property
    def total(self) -> int:
        """All claims counted."""
        return sum(self.counts.values())

    def part(self, status: str) -> str:
        """``3 reproduced (1 on other device)``, or ``0 not run``."""
        other = self.other_device.get(status, 0)
        return f"{self.counts[status]} {status}" + (f" ({other} on other device)" if other else "")

    def text(self) -> str:
        """The summary line: every status in order, the other-device ones counted apart."""
        return ", ".join(self.part(status) for status in VERDICTS)


def interval_text(verdict: Verdict, digits: int = 4) -> str:
    """The verdict's 95% interval as ``[low, high]`` (``digits`` significant digits), or ``""``."""
    if verdict.ci is None:
        return ""
    low, high = verdict.ci
    return f"[{low:.{digits}g}, {high:.{digits}g}]"


def verdict_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    """One row per claim: id, paper value, measured, its 95% interval, samples, gap, verdict label, note."""
    rows = [{
        "claim": v.claim.id,
        "paper": f"{v.claim.value:g} {v.claim.unit}".strip(),
        "measured": "" if v.measured is None else f"{v.measured:.4g}",
        "95% CI": interval_text(v),
        "n": "" if v.samples is None else str(v.samples),
        "gap": "" if v.gap is None else f"{v.gap:+.3g}",
        "verdict": v.label,
        "note": v.note,
    } for v in verdicts]
    return pd.DataFrame(rows, columns=["claim", "paper", "measured", "95% CI", "n", "gap", "verdict", "note"])


def format_table(frame: pd.DataFrame, max_rows: int = 40) -> str:
    """A DataFrame as aligned text, floats to 4 significant digits, long tables cut."""
    shown = frame if len(frame) <= max_rows else frame.head(max_rows)
    text = shown.to_string(index=False, float_format=lambda x: f"{x:.4g}")
    if len(frame) > max_rows:
        text += f"\n... {len(frame) - max_rows} more rows (see the report)"
    return text


def format_run(result) -> str:
    """The terminal summary of a :class:`~reproduce.harness.runner.RunResult`."""
    ctx, counts = result.context, result.counts
    status = pd.Series([r.status for r in result.records]).value_counts().to_dict()
    lines = [
        f"== {result.artifact.id} ({result.artifact.title}) at {ctx.scale} scale on {ctx.device.tag}",
        f"units: {status.get('ok', 0)} ok, {status.get('failed', 0)} failed, {status.get('skipped', 0)} skipped "
        f"(ran {counts['ran']}, reused {counts['reused']} from earlier runs)",
    ]
    if result.shard is not None:
        lines.append(f"shard {result.shard}: {len(result.share)} of {result.total_units} units; the records above "
                     "and below include the other shards' already in this results folder")
    if result.summary is not None:
        lines += ["", format_table(result.summary.table)]
        lines += [f"note: {n}" for n in result.summary.notes]
    for record in result.records:
        if record.status == "failed":
            lines.append(f"failed {record.unit}: {record.error.splitlines()[0]}")
    if result.verdicts:
        lines += ["", format_table(verdict_frame(result.verdicts)), f"verdicts: {Tally.of(result.verdicts).text()}"]
    return "\n".join(lines) + "\n"


def format_listing(artifacts: dict[str, Artifact]) -> str:
    """``repro list``: each artifact, its claims, what each scale needs, and the devices it runs on."""
    blocks = []
    for artifact in artifacts.values():
        claims = {c.id: c for c in load_claims(artifact.paper)}
        lines = [f"{artifact.id}: {artifact.title}", f"  devices: {', '.join(artifact.devices)}"]
        for cid in artifact.claims:
            claim = claims.get(cid)
            text = claim.text if claim else "(missing from claims.toml)"
            lines.append(textwrap.fill(f"claim {cid}: {text}", 100, initial_indent="  ",
                                       subsequent_indent="      "))
        for scale in SCALES:
            if scale in artifact.scales:
                need = artifact.needs.get(scale, "")
                lines.append(textwrap.fill(f"{scale}: {need}", 100, initial_indent="  ",
                                           subsequent_indent="      "))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "no artifacts found"
