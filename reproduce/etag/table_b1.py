"""eTag's appendix Table B.1: average incremental accuracy on ImageNet-1000 in 10 tasks of 100 classes.

Rows: GFR, DER, FOSTER and eTag, and eTag's gains over the three. Not run here: ImageNet-1000
(ILSVRC-2012) is licensed and downloaded by hand, and this suite's data layer has no reader for
it, so each full-scale unit is skipped with that reason; GFR, DER and FOSTER are not implemented
either (the notes say so).

- ``full``: ImageNet-1000, 100 + 9 tasks, eTag with the paper's protocol (70 network epochs on
  ImageNet), three seeds: skipped, the data are not available.
- ``smoke``: a seeded synthetic set and a width-4 network, eTag; seconds; nothing judged.
"""

from __future__ import annotations

from reproduce.etag.runs import SMOKE, incremental_units, run_incremental_unit, setting_name
from reproduce.etag.summaries import accuracy_summary
from reproduce.harness.artifact import Artifact, Context, Outcome, SkipUnit, Summary, Unit
from reproduce.harness.records import Record

IMAGENET = "imagenet-1000"
SETTING = setting_name(IMAGENET, 100, 9)
CELLS = {(SETTING, "etag"): "b1-in1k-etag"}
NOT_RUN = {
    **{f"b1-in1k-{method}": f"{name} is not implemented in this suite"
       for method, name in (("gfr", "GFR"), ("der", "DER"), ("foster", "FOSTER"))},
    **{f"b1-in1k-gain-vs-{method}": f"{name} is not implemented in this suite, and ImageNet-1000 is not available"
       for method, name in (("gfr", "GFR"), ("der", "DER"), ("foster", "FOSTER"))},
}
NO_DATA = ("ImageNet-1000 (ILSVRC-2012) is not available: it is licensed, downloaded by hand, and this suite's "
           "data layer has no reader for it")


def units(ctx: Context):
    return incremental_units(ctx.config)


def run_unit(unit: Unit, ctx: Context) -> Outcome:
    if unit.params["dataset"] == IMAGENET:
        raise SkipUnit(NO_DATA)
    return run_incremental_unit(unit, ctx)


def summarize(records: list[Record], ctx: Context) -> Summary:
    return accuracy_summary(records, ctx, CELLS, not_run={**NOT_RUN, "b1-in1k-etag": NO_DATA})


COMMON = {"methods": ["etag"], "batch_size": 128, "lr_decay_step": 30}

ARTIFACT = Artifact(
    paper="etag",
    name="table_b1",
    title="Average incremental accuracy on ImageNet-1000, 10 tasks of 100 classes (appendix Table B.1)",
    claims=(*CELLS.values(), *NOT_RUN),
    scales={
        "smoke": {**COMMON, "settings": [{"dataset": "synthetic", "first": 5, "tasks": 1}], **SMOKE},
        "full": {**COMMON, "settings": [{"dataset": IMAGENET, "first": 100, "tasks": 9}], "width": 64,
                 "epochs": 70, "generator_epochs": 100, "seeds": [0, 1, 2]},
    },
    needs={
        "smoke": "nothing: a seeded synthetic set; no claim is judged.",
        "full": "ImageNet-1000, which this suite cannot obtain: every unit is skipped with that reason.",
    },
    units=units,
    run_unit=run_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
