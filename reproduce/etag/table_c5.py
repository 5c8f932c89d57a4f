"""eTag's appendix Table C.5: total training and testing time of eTag and its ablations B0-B4.

The ablation setting is CIFAR-100 in 4 equal tasks of 25 classes. Each unit trains eTag or
one of its ablation variants (``b0``-``b4``, switches of :class:`methods.cl.etag.ETag`; see
``table_c1``, which judges their accuracies) for one seed with the protocol of ``table_b2``
and records the wall time of training (network and generator) and of the evaluations. The
paper's times were measured on V100 GPUs (appendix A.4): they are judged only on a V100, and
shown elsewhere. The claims are means over seeds, judged from the seeds' interval; the
artifact is ``timed``, so its units never share CPU cores with one another. The table's
PodNet and ABD rows (times and accuracies) are not run: this suite has neither method (the
notes say so).

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
    claim_samples,
    incremental_units,
    run_incremental_unit,
    seed_rows,
    setting_name,
)
from reproduce.etag.summaries import not_run_notes
from reproduce.harness.artifact import Artifact, Context, Summary
from reproduce.harness.records import Record


def units(ctx: Context):
    return incremental_units(ctx.config)


# Setting name (runs.setting_name) of the ablation setting; per-run metric -> (method -> claim).
ABLATION = setting_name("seq-cifar100", 25, 3)
TIMED = ("etag", "b0", "b1", "b2", "b3", "b4")
CLAIMS = {column: {method: f"c5-{kind}-time-{method}" for method in TIMED}
          for column, kind in (("train_seconds", "train"), ("test_seconds", "test"))}
NOT_RUN = {f"c5-{claim}-{method}": f"{name} is not implemented in this suite"
           for method, name in (("podnet", "PodNet"), ("abd", "ABD"))
           for claim in ("train-time", "test-time", "acc")}


def summarize(records: list[Record], ctx: Context) -> Summary:
    not_run = not_run_notes(NOT_RUN)
    rows = seed_rows(records)
    if rows.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful unit"]}), notes=not_run)
    samples = {}
    for column, claims in CLAIMS.items():
        samples.update(claim_samples(rows, {(ABLATION, method): claim for method, claim in claims.items()}, column))
    notes = [f"{ctx.config['epochs']} network and {ctx.config['generator_epochs']} generator epochs per task; "
             f"ResNet-18 base width {ctx.config['width']}; seeds {ctx.config['seeds']}; device {ctx.device.kind} "
             f"({ctx.device.name}). Times are each run's whole training and testing wall time; the claims take "
             "their mean over seeds, with the seeds' interval; units run one at a time (timed)."]
    notes += [f"{claim} per seed: {describe(drawn)}." for claim, drawn in samples.items()]
    notes += not_run
    return Summary(table=aggregate(records), measured={c: d.point() for c, d in samples.items()}, samples=samples,
                   notes=notes)


COMMON = {"batch_size": 128, "lr_decay_step": 30}

ARTIFACT = Artifact(
    paper="etag",
    name="table_c5",
    title="Training and testing time of eTag and its ablations in the ablation setting (appendix Table C.5)",
    claims=(*(claim for claims in CLAIMS.values() for claim in claims.values()), *NOT_RUN),
    scales={
        "smoke": {**COMMON, "methods": ["etag"], "settings": [{"dataset": "synthetic", "first": 5, "tasks": 1}],
                  **SMOKE},
        "full": {**COMMON, "methods": list(TIMED), "settings": [{"dataset": "seq-cifar100", "first": 25, "tasks": 3}],
                 "download": True, "width": 64, "epochs": 100, "generator_epochs": 100, "seeds": [0, 1, 2]},
    },
    needs={
        "smoke": "nothing: a seeded synthetic set; no claim is judged.",
        "full": "CIFAR-100 (downloaded on first use) and a CUDA GPU (a V100 for the timing claims): 18 runs.",
    },
    units=units,
    run_unit=run_incremental_unit,
    summarize=summarize,
    timed=True,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
