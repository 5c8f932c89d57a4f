"""CLFD's edge chart: accuracy and training time of four rehearsal methods with and without CLFD on an edge GPU.

The chart (authors' repository ``images/result1.jpg``, probably the paper's Fig. 1: NVIDIA Jetson Orin
NX, split CIFAR-10) gives, for ER, DER++, ER-ACE and CLS-ER each plain and with CLFD, the average
accuracy (bars) and the training time in hours (line), read off the chart. Its accuracies do not
match the cloud table: per the authors (issue #1 of their repository), augmentation was off for
the edge runs. The buffer size, epochs and power mode are not given.

Each unit trains one (method, variant, seed) as ``clfd/main_table`` does (``reproduce.continual``)
but with ``augment`` off, the edge protocol as far as it is known. Choices (ours, the chart naming
neither): buffer 50, the table's smaller one and the abstract's headline setting, and the protocol's
epochs per task (mammoth's best arguments). "Average accuracy" is taken as the class-IL final
average accuracy. The claims are ``full`` only; the time claims need the Jetson Orin itself
(``requires = "cuda:orin"`` in ``claims.toml``): hours on another device say nothing about it.

- ``full``: Seq-CIFAR-10, buffer 50, the width-64 reduced ResNet-18, three seeds: 24 runs of 50
  epochs per task on a CUDA GPU.
- ``smoke``: a seeded synthetic stream and a width-4 network; seconds; nothing judged.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from reproduce.continual import DATASET_STREAMS, KEYS, aggregate, cl_units, run_cl_unit, seed_rows
from reproduce.harness.artifact import Artifact, Context, Summary
from reproduce.harness.records import Record
from reproduce.harness.stats import Samples

METHODS = ("er", "derpp", "erace", "clser")
CLAIMS = tuple(f"edge-c10-{variant}{method}-{column}" for method in METHODS for variant in ("", "clfd-")
               for column in ("acc", "time"))


def units(ctx: Context):
    return cl_units(ctx.config, ("plain", "clfd"))


def _measurements(rows: pd.DataFrame) -> tuple[dict[str, float], dict[str, Samples]]:
    """Each bar (class-IL, %) and each point of the line (training time, h) from its seeds, on Seq-CIFAR-10."""
    measured, samples = {}, {}
    cifar = rows[rows["dataset"].map(DATASET_STREAMS) == "seq-cifar10"]
    for (_, _, method, variant), group in cifar.groupby(list(KEYS), sort=True):
        stem = f"edge-c10-{'clfd-' if variant == 'clfd' else ''}{method}"
        ordered = group.sort_values("seed")
        for claim, values in ((f"{stem}-acc", ordered["class_il"]), (f"{stem}-time", ordered["train_seconds"] / 3600)):
            if claim in CLAIMS:
                samples[claim] = Samples.of(values.astype(float).tolist())
                measured[claim] = samples[claim].point()
    return measured, samples


def summarize(records: list[Record], ctx: Context) -> Summary:
    table = aggregate(records)
    if table.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful unit"]}))
    measured, samples = _measurements(seed_rows(records))
    notes = [
        f"Edge protocol: augmentation {'on' if ctx.config['augment'] else 'off'}; buffer {ctx.config['buffers']}; "
        f"epochs per task {ctx.config.get('epochs') or 'the protocol value'}; seeds {ctx.config['seeds']}; "
        f"device {ctx.device.kind}.",
        "The chart's values are read off a chart (about +-0.3 units) and its protocol is not fully known: the "
        "accuracy claims are indicative; the time claims are judged on a Jetson Orin only.",
    ]
    return Summary(table=table, measured=measured, samples=samples, notes=notes,
                   figures=[("Accuracy and training time, plain vs CLFD (edge protocol)", _plot(table))])


def _plot(table: pd.DataFrame):
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    methods = sorted(table["method"].unique())
    for offset, variant in ((-0.2, "plain"), (0.2, "clfd")):
        rows = table[table["variant"] == variant].set_index("method").reindex(methods)
        ax.bar([i + offset for i in range(len(methods))], rows["class_il"], width=0.4, label=f"{variant} accuracy")
    ax.set_ylabel("class-IL accuracy (%)")
    ax.set_xticks(range(len(methods)), methods)
    twin = ax.twinx()
    for variant, style in (("plain", "o-"), ("clfd", "s--")):
        rows = table[table["variant"] == variant].set_index("method").reindex(methods)
        twin.plot(range(len(methods)), rows["train_seconds"] / 3600, style, color="black", label=f"{variant} time")
    twin.set_ylabel("training time (h)")
    ax.legend(fontsize=7, loc="upper left")
    twin.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


COMMON = {"batch_size": 32, "augment": False, "buffer_free": (), "buffers": [50], "methods": list(METHODS)}

ARTIFACT = Artifact(
    paper="clfd",
    name="edge_chart",
    title="Average accuracy and training time on an edge GPU of rehearsal methods with and without CLFD",
    claims=CLAIMS,
    scales={
        "smoke": {**COMMON, "datasets": ["synthetic"], "train_per_class": 8, "test_per_class": 4, "width": 4,
                  "epochs": 2, "seeds": [0], "cpu_threads": 1},
        "full": {**COMMON, "datasets": ["seq-cifar10"], "download": True, "width": 64, "epochs": None,
                 "seeds": [0, 1, 2]},
    },
    needs={
        "smoke": "nothing: a seeded synthetic stream; no claim is judged.",
        "full": "CIFAR-10 (downloaded on first use) and a CUDA GPU: 24 runs of 50 epochs per task; the time claims "
                "need a Jetson Orin (an edge GPU) and are 'not run' elsewhere.",
    },
    units=units,
    run_unit=run_cl_unit,
    summarize=summarize,
    timed=True,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
