"""eTag's appendix Tables C.1 and C.5: accuracy and total training and testing time in the ablation setting.

The ablation setting is CIFAR-100 in 4 equal tasks of 25 classes (e.g. ``c1-c100-4eq-etag``,
64.10%, equals the 4-equal-task value of Tables C.3/C.4). Each unit trains eTag for one
seed with the protocol of ``table_b2`` and records the average incremental accuracy and the
wall time of training (network and generator) and of the evaluations. The paper's times
were measured on V100 GPUs (appendix A.4): they are judged only on a V100, and shown
elsewhere. The claims are means over seeds, judged from the seeds' interval; the artifact is
``timed``, so its units never share CPU cores with one another. The ablation variants B0-B4,
PodNet and ABD are not implemented here.

- ``full``: CIFAR-100, 25 + 3 tasks, three seeds, width 64, 100 network and 100 generator
  epochs.
- ``smoke``: a seeded synthetic set, 5 + 1 tasks of a width-4 network; seconds. There is
  no ``quick`` scale: ``table_b2``'s quick run already times eTag on the CPU, and none of
  this table's numbers can be checked without CIFAR-100.
"""

from __future__ import annotations

import pandas as pd

from reproduce.continual import describe
from reproduce.etag.runs import (
    SMOKE,
    aggregate,
    incremental_units,
    method_samples,
    run_incremental_unit,
    seed_rows,
    setting_name,
)
from reproduce.harness.artifact import Artifact, Context, Summary
from reproduce.harness.records import Record
from reproduce.harness.stats import Samples


def units(ctx: Context):
    return incremental_units(ctx.config)


# Setting name (runs.setting_name) of the ablation setting -> per-run metric -> claim.
ABLATION = setting_name("seq-cifar100", 25, 3)
CLAIMS = {"average_incremental_accuracy": "c1-c100-4eq-etag", "train_seconds": "c5-train-time-etag",
          "test_seconds": "c5-test-time-etag"}


def summarize(records: list[Record], ctx: Context) -> Summary:
    rows = seed_rows(records)
    if rows.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful unit"]}))
    samples = {claim: Samples.of(per_setting[ABLATION]) for column, claim in CLAIMS.items()
               if ABLATION in (per_setting := method_samples(rows, "etag", column))}
    notes = [f"{ctx.config['epochs']} network and {ctx.config['generator_epochs']} generator epochs per task; "
             f"ResNet-18 base width {ctx.config['width']}; seeds {ctx.config['seeds']}; device {ctx.device.kind} "
             f"({ctx.device.name}). Times are each run's whole training and testing wall time; the claims take "
             "their mean over seeds, with the seeds' interval; units run one at a time (timed)."]
    notes += [f"{claim} per seed: {describe(drawn)}." for claim, drawn in samples.items()]
    return Summary(table=aggregate(records), measured={c: d.point() for c, d in samples.items()}, samples=samples,
                   notes=notes)


COMMON = {"methods": ["etag"], "batch_size": 128, "lr_decay_step": 30}

ARTIFACT = Artifact(
    paper="etag",
    name="table_c5",
    title="Accuracy and training / testing time of eTag in the ablation setting (appendix Tables C.1, C.5)",
    claims=("c1-c100-4eq-etag", "c5-train-time-etag", "c5-test-time-etag"),
    scales={
        "smoke": {**COMMON, "settings": [{"dataset": "synthetic", "first": 5, "tasks": 1}], **SMOKE},
        "full": {**COMMON, "settings": [{"dataset": "seq-cifar100", "first": 25, "tasks": 3}], "download": True,
                 "width": 64, "epochs": 100, "generator_epochs": 100, "seeds": [0, 1, 2]},
    },
    needs={
        "smoke": "nothing: a seeded synthetic set; no claim is judged.",
        "full": "CIFAR-100 (downloaded on first use) and a CUDA GPU (a V100 for the timing claims): 3 runs.",
    },
    units=units,
    run_unit=run_incremental_unit,
    summarize=summarize,
    timed=True,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
