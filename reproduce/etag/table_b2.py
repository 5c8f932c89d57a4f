"""eTag's appendix Table B.2: average incremental accuracy of exemplar-free class-incremental learning.

Half the classes in the first task, then 5, 10 or 20 equal tasks; no exemplar and no
prototype is stored. Each unit trains one (dataset, split, method, seed) with eTag's
protocol (Adam 1e-3, weight decay 2e-4, learning rate x0.1 every 30 epochs, batch 128,
100 epochs for the network and 100 for the generator, a seed-dependent class order) and
records the average incremental accuracy A (mean over steps of the accuracy on all seen
classes), forgetting, training and testing time and peak memory. Methods: eTag
(``methods.cl.etag``) and two exemplar-free baselines on the same ResNet-18 and
optimizer, fine-tuning and LwF. The table's other rows (IL2A, R-DFCIL, SSRE, FeTrIL) are
not implemented here.

- ``full``: CIFAR-100 (50 + 5/10/20 tasks) and Tiny-ImageNet (100 + 5/10/20 tasks, on the
  same CIFAR-style ResNet-18 at 64 x 64), three seeds, width 64: the eTag rows of the table.
- ``quick``: the shared CIFAR-10 subset (200 train / 100 test images per class), 5 classes
  then 5 tasks of one class, width-8 network, 8 epochs for the network and for the
  generator, on the CPU: eTag above fine-tuning and LwF without exemplars (the accuracies
  themselves are far from the paper's and are not judged).
- ``smoke``: a seeded synthetic set and a width-4 network; seconds.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from reproduce.etag.runs import SMOKE, aggregate, gains, incremental_units, run_incremental_unit  # noqa: E402
from reproduce.harness.artifact import Artifact, Context, Summary  # noqa: E402
from reproduce.harness.records import Record  # noqa: E402

PREFIX = {"seq-cifar100": "c100", "seq-tinyimg": "tin"}
TABLE_CLAIMS = tuple(f"b2-{prefix}-{tasks}-etag" for prefix in PREFIX.values() for tasks in (5, 10, 20))


def units(ctx: Context):
    return incremental_units(ctx.config)


def summarize(records: list[Record], ctx: Context) -> Summary:
    table = aggregate(records)
    if table.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful unit"]}))
    measured = {f"b2-{PREFIX[r.dataset]}-{r.tasks}-etag": r.average_incremental_accuracy
                for r in table.itertuples() if r.method == "etag" and r.dataset in PREFIX}
    settings = ", ".join(f"{s['dataset']} {s['first']}+{s['tasks']}" for s in ctx.config["settings"])
    notes = [f"Settings {settings}; "
             f"{ctx.config['epochs']} network and {ctx.config['generator_epochs']} generator epochs per task; "
             f"ResNet-18 base width {ctx.config['width']}; seeds {ctx.config['seeds']}; device {ctx.device.kind}."]
    for baseline, claim in (("finetune", "gain-vs-finetune"), ("lwf", "gain-vs-lwf")):
        gain = gains(table, baseline)
        if gain.empty:
            continue
        notes.append(f"eTag's A over {baseline}: " + "; ".join(
            f"{dataset} {first}+{tasks}: {value:+.2f} pp" for (dataset, first, tasks), value in gain.items()))
        if ctx.scale != "smoke":
            measured[claim] = float(gain.min())
    etag = table[table["method"] == "etag"]
    if not etag.empty and ctx.scale != "smoke":
        measured["exemplars-stored"] = float(etag["exemplars_stored"].max())
    return Summary(table=table, measured=measured, notes=notes,
                   figures=[("Accuracy on all seen classes after each task", _plot(records))])


def _plot(records: list[Record]):
    """Seen-class accuracy after each step, per method (mean over seeds), one panel per setting."""
    curves: dict[tuple, dict[str, list]] = {}
    for record in records:
        if record.status != "ok":
            continue
        key = (record.params["dataset"], record.params["first"], record.params["tasks"])
        curves.setdefault(key, {}).setdefault(record.params["method"], []).append(record.data["seen_accuracy"])
    fig, axes = plt.subplots(1, max(len(curves), 1), figsize=(4 * max(len(curves), 1), 3.2), squeeze=False)
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
    claims=(*TABLE_CLAIMS, "gain-vs-finetune", "gain-vs-lwf", "exemplars-stored"),
    scales={
        "smoke": {**COMMON, "settings": [{"dataset": "synthetic", "first": 6, "tasks": 2}], **SMOKE},
        "quick": {**COMMON, "settings": [{"dataset": "cifar10-subset", "first": 5, "tasks": 5}],
                  "train_per_class": 200, "test_per_class": 100, "width": 8, "epochs": 8, "generator_epochs": 8,
                  "lr_decay_step": 6, "seeds": [0], "cpu_threads": 1},
        "full": {**COMMON, "settings": [{"dataset": d, "first": first, "tasks": t}
                                        for d, first in (("seq-cifar100", 50), ("seq-tinyimg", 100))
                                        for t in (5, 10, 20)],
                 "download": True, "width": 64, "epochs": 100, "generator_epochs": 100, "seeds": [0, 1, 2]},
    },
    needs={
        "smoke": "nothing: a seeded synthetic set; no claim is judged.",
        "quick": "the shared CIFAR-10 subset in REPRO_DATA_DIRS (offline); 3 runs on 2 cores.",
        "full": "CIFAR-100 and Tiny ImageNet (downloaded on first use) and a CUDA GPU: 54 runs of 100 epochs per task.",
    },
    units=units,
    run_unit=run_incremental_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
