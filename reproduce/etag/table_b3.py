"""eTag's appendix Table B.3: average incremental accuracy of generative class-incremental learning.

CIFAR-100 in 10 equal tasks of 10 classes, mean ± standard deviation over seeds. Each unit trains
one method for one seed with ``table_b2``'s protocol: eTag, BI-R (:mod:`methods.cl.bir`) and GC
(:mod:`methods.cl.generative_classifier`), both on a ResNet-18 extractor pre-trained on the first
task and then frozen (their papers pre-train on CIFAR-10, which the harness does not provide;
docs/papers/etag.md), and ABD (:mod:`methods.cl.abd`: model inversion of the old network, with
its published inversion settings).

- ``full``: CIFAR-100, 10 + 9 tasks, three seeds, width 64, 100 network and 100 generator epochs;
  GC's likelihood estimates use 10,000 importance samples (its paper's CIFAR-100 runs).
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
METHODS = ("etag", "bir", "gc", "abd")
CELLS = {(SETTING, method): f"b3-c100-10eq-{method}" for method in METHODS}


def units(ctx: Context):
    return incremental_units(ctx.config)


def summarize(records: list[Record], ctx: Context) -> Summary:
    return accuracy_summary(records, ctx, CELLS)


COMMON = {"methods": list(METHODS), "batch_size": 128, "lr_decay_step": 30}

ARTIFACT = Artifact(
    paper="etag",
    name="table_b3",
    title="Average incremental accuracy of generative class-incremental learning, 10 equal tasks (appendix Table B.3)",
    claims=tuple(CELLS.values()),
    scales={
        "smoke": {**COMMON, "settings": [{"dataset": "synthetic", "first": 5, "tasks": 1}], **SMOKE},
        "full": {**COMMON, "settings": [{"dataset": "seq-cifar100", "first": 10, "tasks": 9}], "download": True,
                 "width": 64, "epochs": 100, "generator_epochs": 100, "seeds": [0, 1, 2],
                 "hyper": {"gc": {"samples": 10_000}}},
    },
    needs={
        "smoke": "nothing: a seeded synthetic set; no claim is judged.",
        "full": "CIFAR-100 (downloaded on first use) and a CUDA GPU: 12 runs (4 methods, 3 seeds), 100 epochs a task.",
    },
    units=units,
    run_unit=run_incremental_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
