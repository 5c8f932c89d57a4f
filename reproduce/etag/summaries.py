"""The summary shared by eTag's accuracy tables (B.1, B.2, B.3, C.1-C.4): claims, gains, notes, one figure.

Every such table is a set of class-incremental runs (:mod:`reproduce.etag.runs`) whose rows are
methods (or eTag's ablation variants) and whose cells are average incremental accuracies, plus
gains of one row over another. :func:`accuracy_summary` turns the records into

- the samples of each cell's claim (per-seed A, :func:`~reproduce.etag.runs.claim_samples`),
- the samples of each gain's claim (per-seed differences paired by seed), withheld while the
  baseline is below the learning floor (:func:`~reproduce.etag.runs.reference_floor`),
- the numbers a table copies from other papers, shown beside the same runs and never judged
  (:func:`~reproduce.etag.runs.published_references`),
- notes: the protocol, the gains, each row's A per seed, its final per-task accuracy and its
  accuracy on each new task right after learning it, rows that ended steps
  predicting only the newest task, and the claims of rows this suite does not run, with why;
- a figure of the seen-class accuracy after each task.

Nothing is judged at smoke scale.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from matplotlib.figure import Figure

from reproduce.continual import FLOOR_FACTOR, describe
from reproduce.etag.runs import (
    aggregate,
    claim_samples,
    collapse_notes,
    final_rows,
    gain_samples,
    per_seed,
    published_references,
    reference_floor,
    seed_rows,
    setting_name,
)
from reproduce.harness.artifact import Context, Summary
from reproduce.harness.records import Record


def protocol_note(ctx: Context) -> str:
    """The settings, data sizes, epochs, batch, width, seeds and device of a run, in one sentence."""
    config = ctx.config
    side = f" at {config['side']} x {config['side']} px" if config.get("side") else ""
    settings = ", ".join(setting_name(s["dataset"], s["first"], s["tasks"]) for s in config["settings"])
    return (f"Settings {settings}{side}; {config.get('train_per_class') or 'all'} training and "
            f"{config.get('test_per_class') or 'all'} test images per class; {config['epochs']} network and "
            f"{config['generator_epochs']} generator epochs per task (generator lr "
            f"{config.get('generator_lr', 1e-4):g}); batch {config['batch_size']}; network base width "
            f"{config['width']}; methods {', '.join(config['methods'])}; seeds {config['seeds']}; "
            f"device {ctx.device.kind}.")


def not_run_notes(not_run: Mapping[str, str]) -> list[str]:
    """One note per claim this suite does not run, ``claim -> reason``: the report says why it stays ``not run``."""
    return [f"{claim}: not measured here: {reason}." for claim, reason in not_run.items()]


def accuracy_summary(records: list[Record], ctx: Context, cells: Mapping[tuple[str, str], str], *,
                     gains: Mapping[str, tuple[str, str]] | None = None,
                     published: Mapping[tuple[str, str], str] | None = None,
                     not_run: Mapping[str, str] | None = None) -> Summary:
    """The summary of an accuracy table's runs.

    Parameters
    ----------
    records : list of Record
        Successful unit records of :func:`reproduce.etag.runs.run_incremental_unit`.
    ctx : Context
    cells : mapping
        ``(setting name, method) -> claim`` on that row's average incremental accuracy A.
    gains : mapping, optional
        ``claim -> (method, baseline)``: the claim on ``method``'s A minus ``baseline``'s, per seed.
    published : mapping, optional
        ``(setting name, method) -> claim`` of numbers the paper copies from the method's own paper;
        shown beside ``cells[(setting, method)]``'s runs, withheld from judgement.
    not_run : mapping, optional
        ``claim -> reason`` for the claims of rows this suite does not run (a dataset it cannot get,
        a method or backbone it does not have): one note each, so the report says why.
    """
    notes = not_run_notes(not_run or {})
    rows = seed_rows(records)
    if rows.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful unit"]}), notes=notes)
    notes.insert(0, protocol_note(ctx))
    samples = claim_samples(rows, cells)
    references, withheld = published_references(rows, published or {}, cells)
    samples.update(references)
    if gains:
        notes.append(f"Learning floor of a gain: the baseline's A (mean over seeds) at least {FLOOR_FACTOR:g} x the A "
                     "of a guess that knows only the newest task (right on 1/N of the rows of the N classes seen at "
                     "each step).")
    for claim, (method, baseline) in (gains or {}).items():
        drawn = gain_samples(rows, baseline, method=method)
        if drawn is None:
            continue
        samples[claim] = drawn
        notes.append(f"{method}'s A over {baseline} per seed (pp): {describe(drawn)}.")
        floor, report = reference_floor(rows, baseline)
        if floor:
            withheld[claim] = floor
        notes.append(f"{report}, for {claim}: {'below, not judged' if floor else 'cleared'}.")
    notes.append(f"Accuracy (%) on each task after the last one, mean over seeds: {final_rows(rows)}.")
    notes.append(f"A (%) per seed: {per_seed(rows, 'average_incremental_accuracy')}.")
    notes.append("Accuracy (%) on each new task right after learning it (mean over the tasks after the first), per "
                 f"seed: {per_seed(rows, 'new_task_accuracy')}.")
    notes += collapse_notes(rows)
    judged = {} if ctx.scale == "smoke" else samples
    return Summary(table=aggregate(records), measured={claim: drawn.point() for claim, drawn in judged.items()},
                   samples=dict(judged), withheld={c: w for c, w in withheld.items() if c in judged}, notes=notes,
                   figures=[("Accuracy on all seen classes after each task", seen_accuracy_figure(records))])


def seen_accuracy_figure(records: list[Record]) -> Figure:
    """Seen-class accuracy after each step, per method (mean over seeds), one panel per setting."""
    curves: dict[tuple, dict[str, list]] = {}
    for record in records:
        if record.status != "ok":
            continue
        key = (record.params["dataset"], record.params["first"], record.params["tasks"])
        curves.setdefault(key, {}).setdefault(record.params["method"], []).append(record.data["seen_accuracy"])
    fig = Figure(figsize=(4 * max(len(curves), 1), 3.2))
    axes = fig.subplots(1, max(len(curves), 1), squeeze=False)
    for ax, ((dataset, first, tasks), methods) in zip(axes[0], sorted(curves.items()), strict=False):
        for method, runs in sorted(methods.items()):
            mean = pd.DataFrame(runs).mean(axis=0)
            ax.plot(range(len(mean)), mean, marker="o", label=method)
        ax.set_title(f"{dataset} {first} + {tasks} tasks", fontsize=9)
        ax.set_xlabel("task")
        ax.set_ylabel("accuracy on seen classes (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
