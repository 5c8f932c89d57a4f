"""eTag's appendix Table C.6: trainable parameters and memory budget of Joint/Fine and eTag (ResNet-18, CIFAR-100).

No training: each unit builds the networks of one method at the paper's size (ResNet-18
of base width 64 with the CIFAR stem, a 100-way classifier, eTag's auxiliary heads and
feature generator) and counts them. Both readings of the paper's accounting are ours
and are stated in ``reproduce/etag/runs.py`` and ``methods/cl/etag.py``:

- parameters: Joint/Fine is the ResNet-18; eTag's 43.20 M equals the ResNet-18 + the first
  three auxiliary heads + the generator (:func:`methods.cl.etag.table_c6_parameters`); the
  network we train has a fourth head too, reported beside it;
- memory budget: float32 MiB of what is kept between tasks, the inference network plus,
  for eTag, the generator's decoder (:func:`reproduce.etag.runs.memory_budget_mb`).

Every scale runs the same count (the networks are built, not trained; about a second).
"""

from __future__ import annotations

import pandas as pd

from methods.cl import AuxiliaryResNet, FeatureCVAE, count_parameters, resnet18, table_c6_parameters
from reproduce.etag.runs import memory_budget_mb
from reproduce.harness.artifact import Artifact, Context, Outcome, Summary, Unit
from reproduce.harness.records import Record, metric

# Method in the units -> its row in Table C.6.
ROWS = {"jointfine": "Joint/Fine", "etag": "eTag"}


def units(ctx: Context) -> list[Unit]:
    return [Unit(f"c100-{method}", {"method": method}) for method in ROWS]


def run_unit(unit: Unit, ctx: Context) -> Outcome:
    classes, width = ctx.config["classes"], ctx.config["width"]
    if unit.params["method"] == "etag":
        net, cvae = AuxiliaryResNet(classes, width), FeatureCVAE(8 * width, classes)
        paper_count = table_c6_parameters(net, cvae)
        trained = count_parameters(net) + count_parameters(cvae)
    else:
        net, cvae = resnet18(classes, width), None
        paper_count = trained = count_parameters(net)
    return Outcome(metrics={
        "parameters_m": metric(paper_count / 1e6, "M"),
        "trained_parameters_m": metric(trained / 1e6, "M"),
        "memory_budget_mb": metric(memory_budget_mb(net, cvae), "MB"),
    }, data={"classes": classes, "width": width})


def summarize(records: list[Record], ctx: Context) -> Summary:
    rows = [{"method": ROWS[r.params["method"]], "key": r.params["method"],
             **{m: r.value(m) for m in ("parameters_m", "trained_parameters_m", "memory_budget_mb")}}
            for r in records if r.status == "ok"]
    table = pd.DataFrame(rows)
    measured = {}
    for row in rows:
        measured[f"c6-params-c100-{row['key']}"] = row["parameters_m"]
        measured[f"c6-mem-c100-{row['key']}"] = row["memory_budget_mb"]
    notes = [
        f"ResNet-18 of base width {ctx.config['width']}, CIFAR stem, {ctx.config['classes']} classes; float32.",
        "eTag's parameters follow the paper's accounting (ResNet-18 + three auxiliary heads + generator); "
        "trained_parameters_m counts the network we train, with the fourth auxiliary head (as the public code).",
    ]
    return Summary(table=table.drop(columns="key") if not table.empty else table, measured=measured, notes=notes)


SIZE = {"classes": 100, "width": 64}

ARTIFACT = Artifact(
    paper="etag",
    name="table_c6",
    title="Trainable parameters and memory budget of Joint/Fine and eTag on CIFAR-100 (appendix Table C.6)",
    claims=("c6-params-c100-jointfine", "c6-mem-c100-jointfine", "c6-params-c100-etag", "c6-mem-c100-etag"),
    scales={"smoke": dict(SIZE), "quick": dict(SIZE), "full": dict(SIZE)},
    needs={scale: "nothing: the networks are built and counted, not trained." for scale in ("smoke", "quick", "full")},
    units=units,
    run_unit=run_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
