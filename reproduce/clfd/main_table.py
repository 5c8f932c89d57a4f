"""CLFD's main table: ER, DER++ and ER-ACE with and without CLFD, plus SGD and JOINT (paper: repo result2.jpg).

Each unit trains one (dataset, buffer, method, variant, seed) on a sequential stream with
the protocol of clfd.md section 4 (SGD without momentum, batch 32, the base method's
best arguments, the epochs of the protocol -- not the 2 that the public code forces) and
records class-IL and task-IL final average accuracy, forgetting, training time and peak
memory. ``plain`` is the base method on the reduced ResNet-18; ``clfd`` adds FFE, the
feature buffer with the same byte budget and CFFS (``methods.cl.clfd``).

- ``full``: Seq-CIFAR-10 and Seq-Tiny-ImageNet, buffers 50 and 125, three seeds, width-64
  ResNet-18: the paper's accuracy and memory numbers (memory judged on CUDA only).
- ``quick``: the shared 6,000-image CIFAR-10 subset (200 train / 100 test images per class),
  Seq-CIFAR-10 protocol with 2 epochs per task and GEM's width-20 ResNet-18, on the CPU:
  the relative claims (training-time speed-up, peak-memory reduction). Accuracies after
  2 epochs on 2% of CIFAR-10 are far below the paper's and are not judged.
- ``smoke``: a seeded synthetic stream and a width-4 network; seconds.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from reproduce.continual import aggregate, cl_units, ratios, run_cl_unit  # noqa: E402
from reproduce.harness.artifact import Artifact, Context, Summary  # noqa: E402
from reproduce.harness.records import Record  # noqa: E402

CLAIM_PREFIX = {"seq-cifar10": "c10", "seq-tinyimg": "tin"}
METHODS = ("er", "derpp", "erace")
TABLE_CLAIMS = tuple(
    f"{prefix}-b{buffer}-{variant}{method}-{column}"
    for prefix in CLAIM_PREFIX.values() for buffer in (50, 125) for variant in ("", "clfd-")
    for method in METHODS for column in ("cil", "til", "mem")
) + tuple(f"{prefix}-nb-{method}-{column}" for prefix in CLAIM_PREFIX.values() for method in ("sgd", "joint")
          for column in ("cil", "til"))


def units(ctx: Context):
    return cl_units(ctx.config, ("plain", "clfd"))


def _table_measurements(table: pd.DataFrame) -> dict[str, float]:
    measured = {}
    for row in table.itertuples():
        prefix = CLAIM_PREFIX.get(row.dataset)
        if prefix is None:
            continue
        if row.buffer == 0:
            stem = f"{prefix}-nb-{row.method}"
        else:
            stem = f"{prefix}-b{row.buffer}-{'clfd-' if row.variant == 'clfd' else ''}{row.method}"
        measured.update({f"{stem}-cil": row.class_il, f"{stem}-til": row.task_il, f"{stem}-mem": row.peak_memory_mb})
    return measured


def summarize(records: list[Record], ctx: Context) -> Summary:
    table = aggregate(records)
    if table.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful unit"]}))
    gains = ratios(table, "clfd")
    measured = _table_measurements(table)
    if not gains.empty and ctx.scale != "smoke":
        measured["abs-time-gain"] = float(gains["speedup"].max())
        measured["mem-gain"] = float(gains["memory_ratio"].max())
    notes = [
        f"Epochs per task: {ctx.config.get('epochs') or 'the protocol value'}; ResNet-18 base width "
        f"{ctx.config['width']}; datasets {', '.join(ctx.config['datasets'])}; device {ctx.device.kind}.",
        "CLFD over the plain method, per (dataset, buffer, method): " + "; ".join(
            f"{r.method} b{r.buffer}: {r.speedup:.2f}x faster, {r.memory_ratio:.2f}x less memory, "
            f"class-IL {r.class_il_gain:+.1f} pp, task-IL {r.task_il_gain:+.1f} pp" for r in gains.itertuples()),
        "Paper: up to 2.6x faster (Jetson Orin NX) and 2.4-2.7x less peak CUDA memory (main table, buffer 50).",
        "Peak memory on the CPU is the growth of the process's resident-set high-water mark during the unit.",
    ]
    return Summary(table=table, measured=measured, notes=notes,
                   figures=[("Training time and peak memory, plain vs CLFD", _plot(table))])


def _plot(table: pd.DataFrame):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    labels = [f"{r.method}\nb{r.buffer}" for r in table[table["variant"] == "plain"].itertuples()]
    for ax, column, title in ((axes[0], "train_seconds", "training time (s)"),
                              (axes[1], "peak_memory_mb", "peak memory (MB)")):
        for offset, variant in ((-0.2, "plain"), (0.2, "clfd")):
            values = table[table["variant"] == variant][column].to_numpy()
            ax.bar([i + offset for i in range(len(values))], values, width=0.4, label=variant)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


COMMON = {"batch_size": 32, "augment": True, "buffer_free": ()}

ARTIFACT = Artifact(
    paper="clfd",
    name="main_table",
    title="Class-IL / Task-IL accuracy and peak memory of rehearsal methods with and without CLFD",
    claims=(*TABLE_CLAIMS, "abs-time-gain", "mem-gain"),
    scales={
        "smoke": {**COMMON, "datasets": ["synthetic"], "train_per_class": 8, "test_per_class": 4, "width": 4,
                  "epochs": 2, "buffers": [50], "methods": list(METHODS), "seeds": [0], "cpu_threads": 1},
        "quick": {**COMMON, "datasets": ["cifar10-subset"], "train_per_class": 200, "test_per_class": 100,
                  "cpu_threads": 1, "width": 20, "epochs": 2, "buffers": [50], "methods": list(METHODS), "seeds": [0]},
        "full": {**COMMON, "datasets": ["seq-cifar10", "seq-tinyimg"], "download": True, "width": 64,
                 "epochs": None, "buffers": [50, 125], "methods": list(METHODS), "buffer_free": ["sgd", "joint"],
                 "seeds": [0, 1, 2]},
    },
    needs={
        "smoke": "nothing: a seeded synthetic stream; no claim is judged.",
        "quick": "the shared CIFAR-10 subset in REPRO_DATA_DIRS (offline); 6 runs, about 10 minutes on 2 shared cores.",
        "full": "CIFAR-10 and Tiny ImageNet (downloaded on first use) and a CUDA GPU: 84 runs of 50-100 epochs.",
    },
    units=units,
    run_unit=run_cl_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
