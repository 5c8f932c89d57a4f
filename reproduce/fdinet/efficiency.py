"""FDINet's efficiency and accuracy against the plain rehearsal method (paper: abstract of arXiv 2503.22175).

No table of the paper is public; the abstract claims, as best cases, a backbone with 78%
fewer parameters, up to 80% less peak memory, up to 5x faster training on edge devices
and up to 7.49% higher accuracy. Each unit trains one (dataset, buffer, method, variant,
seed): ``plain`` is ER or DER++ on the width-64 reduced ResNet-18 (mammoth's, taken as
the unnamed reference); ``fdinet`` is the same learner on our clean-room FDINet
(``methods.cl.fdinet``: Haar DWT, low branch of width 24 on LL, high branch of width 18
on LH/HL/HH, concatenated features). Both use the same networks at every scale but
smoke; the scales differ in data and epochs only.

- ``quick``: the shared CIFAR-10 subset (100 train / 50 test images per class), Seq-CIFAR-10
  protocol with 2 epochs per task, on the CPU. The relative claims are judged here; the
  accuracy gain after so little training is indicative only.
- ``full``: Seq-CIFAR-10 and Seq-Tiny-ImageNet, buffers 50 and 125, CLFD's protocol (the
  paper's is not known), three seeds.
- ``smoke``: a synthetic stream and width-4/3/2 networks; seconds.

The paper compares with "state-of-the-art methods" on an unnamed edge device; we compare
with the base method on this machine, which is what "plugs into rehearsal" makes testable.
"""

from __future__ import annotations

import pandas as pd

from reproduce.continual import aggregate, cl_units, ratios, run_cl_unit
from reproduce.harness.artifact import Artifact, Context, Summary
from reproduce.harness.records import Record


def units(ctx: Context):
    return cl_units(ctx.config, ("plain", "fdinet"))


def summarize(records: list[Record], ctx: Context) -> Summary:
    table = aggregate(records)
    if table.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful unit"]}))
    gains = ratios(table, "fdinet")
    measured = {}
    if not gains.empty and ctx.scale != "smoke":
        measured = {
            "backbone-params": float(gains["parameter_reduction_pct"].max()),
            "peak-mem": float(gains["memory_reduction_pct"].max()),
            "edge-speedup": float(gains["speedup"].max()),
            "acc-gain-max": float(gains["class_il_gain"].max()),
        }
    notes = [
        f"Datasets {', '.join(ctx.config['datasets'])}; epochs per task {ctx.config.get('epochs') or 'protocol'}; "
        f"reference ResNet-18 width {ctx.config['width']}; FDINet branch widths {ctx.config['low_width']} (low) "
        f"and {ctx.config['high_width']} (high); device {ctx.device.kind}.",
        "FDINet over the plain method, per (dataset, buffer, method): " + "; ".join(
            f"{r.method} b{r.buffer}: {r.parameter_reduction_pct:.1f}% fewer parameters, {r.speedup:.2f}x faster, "
            f"{r.memory_reduction_pct:.1f}% less peak memory, class-IL {r.class_il_gain:+.1f} pp, "
            f"task-IL {r.task_il_gain:+.1f} pp" for r in gains.itertuples()),
        "Paper (abstract): 78% fewer backbone parameters, up to 80% less peak memory, up to 5x faster on edge "
        "devices, up to 7.49% more accuracy than state-of-the-art methods.",
        "Parameters count the whole network including the classifier; peak memory on the CPU is the growth of the "
        "process's resident-set high-water mark during the unit.",
    ]
    return Summary(table=table, measured=measured, notes=notes)


COMMON = {"batch_size": 32, "augment": True, "buffer_free": (), "methods": ["er", "derpp"]}
NETWORKS = {"width": 64, "low_width": 24, "high_width": 18}

ARTIFACT = Artifact(
    paper="fdinet",
    name="efficiency",
    title="FDINet against the plain rehearsal method: parameters, peak memory, training time, accuracy",
    claims=("backbone-params", "peak-mem", "edge-speedup", "acc-gain-max"),
    scales={
        "smoke": {**COMMON, "datasets": ["synthetic"], "train_per_class": 8, "test_per_class": 4, "width": 4,
                  "low_width": 3, "high_width": 2, "epochs": 1, "buffers": [50], "seeds": [0], "cpu_threads": 1},
        "quick": {**COMMON, **NETWORKS, "datasets": ["cifar10-subset"], "train_per_class": 100,
                  "test_per_class": 50, "epochs": 1, "buffers": [50], "seeds": [0], "cpu_threads": 1},
        "full": {**COMMON, **NETWORKS, "datasets": ["seq-cifar10", "seq-tinyimg"], "download": True, "epochs": None,
                 "buffers": [50, 125], "seeds": [0, 1, 2]},
    },
    needs={
        "smoke": "nothing: a seeded synthetic stream; no claim is judged.",
        "quick": "the shared CIFAR-10 subset in REPRO_DATA_DIRS (offline); 4 runs, about 9 minutes on 2 shared cores.",
        "full": "CIFAR-10 and Tiny ImageNet (downloaded on first use) and a CUDA GPU: 48 runs of 50-100 epochs.",
    },
    units=units,
    run_unit=run_cl_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
