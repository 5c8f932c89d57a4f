"""eTag's appendix Table C.5: total training and testing time of eTag, its ablations B0-B4, PodNet and ABD.

The ablation setting is CIFAR-100 in 4 equal tasks of 25 classes. Each unit trains eTag, one
of its ablation variants (``b0``-``b4``, switches of :class:`methods.cl.etag.ETag`; see
``table_c1``, which judges their accuracies) or one of the two baselines of the table, PodNet
(:mod:`methods.cl.podnet`, 20 herded exemplars per class) and ABD (:mod:`methods.cl.abd`,
data-free, model inversion), for one seed with the protocol of ``table_b2`` and records the
wall time of training (network, generator or inversion, fine-tuning) and of the evaluations,
and the average incremental accuracy A. The paper's times were measured on V100 GPUs
(appendix A.4): they are judged only on a V100, and shown elsewhere. The time claims are
means over seeds, judged from the seeds' interval; so are the baselines' accuracy claims
(``c5-acc-podnet``, ``c5-acc-abd``). The artifact is ``timed``, so its units never share CPU
cores with one another.

- ``full``: CIFAR-100, 25 + 3 tasks, three seeds, width 64, 100 network and 100 generator
  epochs; PodNet and ABD with their published hyper-parameters (docs/papers/etag.md).
- ``smoke``: a seeded synthetic set, 5 + 1 tasks of a width-4 network (eTag, PodNet and ABD,
  ABD with a two-step inversion); seconds. There is
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
from reproduce.harness.artifact import Artifact, Context, Summary
from reproduce.harness.records import Record


def units(ctx: Context):
    return incremental_units(ctx.config)


# Setting name (runs.setting_name) of the ablation setting; per-run metric -> (method -> claim): the times of
# eTag and its ablations (their accuracies are table_c1's), and the times and accuracy of the two baselines.
ABLATION = setting_name("seq-cifar100", 25, 3)
TIMED = ("etag", "b0", "b1", "b2", "b3", "b4")
BASELINES = ("podnet", "abd")
TIMES = (("train_seconds", "train"), ("test_seconds", "test"))
CLAIMS = {column: {method: f"c5-{kind}-time-{method}" for method in TIMED} for column, kind in TIMES}
BASELINE_CLAIMS = {**{column: {method: f"c5-{kind}-time-{method}" for method in BASELINES} for column, kind in TIMES},
                   "average_incremental_accuracy": {method: f"c5-acc-{method}" for method in BASELINES}}


def summarize(records: list[Record], ctx: Context) -> Summary:
    rows = seed_rows(records)
    if rows.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful unit"]}))
    samples = {}
    for claims in (CLAIMS, BASELINE_CLAIMS):
        for column, by_method in claims.items():
            samples.update(claim_samples(rows, {(ABLATION, method): claim for method, claim in by_method.items()},
                                         column))
    notes = [f"{ctx.config['epochs']} network and {ctx.config['generator_epochs']} generator epochs per task; "
             f"ResNet-18 base width {ctx.config['width']}; seeds {ctx.config['seeds']}; device {ctx.device.kind} "
             f"({ctx.device.name}). Times are each run's whole training and testing wall time; the claims take "
             "their mean over seeds, with the seeds' interval; units run one at a time (timed). PodNet stores 20 "
             "exemplars per class; ABD none (data-free)."]
    notes += [f"{claim} per seed: {describe(drawn)}." for claim, drawn in samples.items()]
    return Summary(table=aggregate(records), measured={c: d.point() for c, d in samples.items()}, samples=samples,
                   notes=notes)


COMMON = {"batch_size": 128, "lr_decay_step": 30}

ARTIFACT = Artifact(
    paper="etag",
    name="table_c5",
    title="Training and testing time of eTag, its ablations, PodNet and ABD in the ablation setting, and the "
          "baselines' accuracy (appendix Table C.5)",
    claims=tuple(claim for claims in (CLAIMS, BASELINE_CLAIMS) for by_method in claims.values()
                 for claim in by_method.values()),
    scales={
        "smoke": {**COMMON, "methods": ["etag", *BASELINES],
                  "settings": [{"dataset": "synthetic", "first": 5, "tasks": 1}], **SMOKE},
        "full": {**COMMON, "methods": [*TIMED, *BASELINES],
                 "settings": [{"dataset": "seq-cifar100", "first": 25, "tasks": 3}], "download": True,
                 "width": 64, "epochs": 100, "generator_epochs": 100, "seeds": [0, 1, 2]},
    },
    needs={
        "smoke": "nothing: a seeded synthetic set; no claim is judged.",
        "full": "CIFAR-100 (downloaded on first use) and a CUDA GPU (a V100 for the timing claims): 24 runs.",
    },
    units=units,
    run_unit=run_incremental_unit,
    summarize=summarize,
    timed=True,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
