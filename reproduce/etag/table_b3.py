"""eTag's appendix Table B.3: average incremental accuracy of generative class-incremental learning.

CIFAR-100 in 10 equal tasks of 10 classes, mean ± standard deviation over seeds. Each unit trains
eTag for one seed with ``table_b2``'s protocol. The table's other rows, BI-R, GC and ABD (generative
replay of images or of features by model inversion), are not run: this suite has none of them
(the notes say so).

- ``full``: CIFAR-100, 10 + 9 tasks, three seeds, width 64, 100 network and 100 generator epochs.
- ``smoke``: a seeded synthetic set and a width-4 network; seconds. No ``quick`` scale: the table's
  claims are absolute accuracies on CIFAR-100, and ``table_b2``'s quick run already trains eTag on
  the digits.
"""

from __future__ import annotations

from reproduce.etag.runs import SMOKE, incremental_units, run_incremental_unit, setting_name
from reproduce.etag.summaries import accuracy_summary
from reproduce.harness.artifact import Artifact, Context, Summary
from reproduce.harness.records import Record

SETTING = setting_name("seq-cifar100", 10, 9)
CELLS = {(SETTING, "etag"): "b3-c100-10eq-etag"}
NOT_RUN = {f"b3-c100-10eq-{method}": f"{name} is not implemented in this suite"
           for method, name in (("bir", "BI-R"), ("gc", "GC"), ("abd", "ABD"))}


def units(ctx: Context):
    return incremental_units(ctx.config)


def summarize(records: list[Record], ctx: Context) -> Summary:
    return accuracy_summary(records, ctx, CELLS, not_run=NOT_RUN)


COMMON = {"methods": ["etag"], "batch_size": 128, "lr_decay_step": 30}

ARTIFACT = Artifact(
    paper="etag",
    name="table_b3",
    title="Average incremental accuracy of generative class-incremental learning, 10 equal tasks (appendix Table B.3)",
    claims=(*CELLS.values(), *NOT_RUN),
    scales={
        "smoke": {**COMMON, "settings": [{"dataset": "synthetic", "first": 5, "tasks": 1}], **SMOKE},
        "full": {**COMMON, "settings": [{"dataset": "seq-cifar100", "first": 10, "tasks": 9}], "download": True,
                 "width": 64, "epochs": 100, "generator_epochs": 100, "seeds": [0, 1, 2]},
    },
    needs={
        "smoke": "nothing: a seeded synthetic set; no claim is judged.",
        "full": "CIFAR-100 (downloaded on first use) and a CUDA GPU: 3 runs of 100 epochs per task.",
    },
    units=units,
    run_unit=run_incremental_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
