"""eTag's appendix Table C.6: parameters and memory budget of every method (ResNet-18; CIFAR-100, ImageNet-100).

No training: each unit builds the networks of one method at the paper's size (ResNet-18 of base
width 64, a 100-way classifier; the CIFAR 3 x 3 stem, or for ImageNet-100 the public code's
7 x 7 stride-2 stem and max-pool; eTag's auxiliary heads and feature generator where the method
has them) and counts them. The accounting is our reading of the table (docs/papers/etag.md):

- parameters: the ResNet-18, plus for the "e" variants and eTag the first three auxiliary heads
  (:func:`methods.cl.etag.table_c6_parameters`), plus for GFR, eGFR and eTag the feature
  generator; IL2M, Lucir and PASS add nothing to the network (their class statistics, cosine
  scale and prototypes are not trained weights);
- memory budget: float32 MiB of what is kept between tasks, the inference network plus the
  generator's decoder (GFR, eTag; :func:`reproduce.etag.runs.memory_budget_mb`), PASS's class
  prototypes and radius (float32), or IL2M's and Lucir's 20 exemplars per class (appendix A.3) as
  8-bit images. The paper gives one memory value per method and its "e" variant.

The ImageNet-100 counts need no image: they are built like the CIFAR ones. The CIFAR-100 rows of
Joint/Fine and eTag are checked at every scale (about a second); the others at full.
"""

from __future__ import annotations

import pandas as pd
from torch import nn

from methods.cl import AuxiliaryResNet, FeatureCVAE, count_parameters, resnet18
from reproduce.etag.runs import MIB, memory_budget_mb
from reproduce.harness.artifact import Artifact, Context, Outcome, Summary, Unit
from reproduce.harness.records import Record, metric

# Method in the units -> (its row in Table C.6, what its count adds to the ResNet-18, what it keeps between
# tasks besides the inference network, the key of its memory claim).
ROWS = {
    "jointfine": ("Joint/Fine", (), (), "jointfine"),
    "il2m": ("IL2M", (), ("exemplars",), "il2m"),
    "eil2m": ("eIL2M", ("heads",), ("exemplars",), "il2m"),
    "lucir": ("Lucir", (), ("exemplars",), "lucir"),
    "elucir": ("eLucir", ("heads",), ("exemplars",), "lucir"),
    "pass": ("PASS", (), ("prototypes",), "pass"),
    "epass": ("ePASS", ("heads",), ("prototypes",), "pass"),
    "gfr": ("GFR", ("generator",), ("decoder",), "gfr"),
    "egfr": ("eGFR", ("heads", "generator"), ("decoder",), "gfr"),
    "etag": ("eTag", ("heads", "generator"), ("decoder",), "etag"),
}
# Dataset key of the claims -> input side (px) of its images.
SIDES = {"c100": 32, "in100": 224}
EXEMPLARS_PER_CLASS = 20


def imagenet_stem_(net: nn.Module) -> nn.Module:
    """The public code's ImageNet ResNet-18 stem, in place: a 7 x 7 stride-2 convolution (its max-pool has no
    parameters) instead of the CIFAR 3 x 3 one; the stages and classifier are the same."""
    net.conv1 = nn.Conv2d(net.conv1.in_channels, net.conv1.out_channels, 7, 2, 3, bias=False)
    return net


def units(ctx: Context) -> list[Unit]:
    return [Unit(f"{dataset}-{method}", {"dataset": dataset, "method": method})
            for dataset in ctx.config["datasets"] for method in ctx.config["methods"]]


def run_unit(unit: Unit, ctx: Context) -> Outcome:
    classes, width = ctx.config["classes"], ctx.config["width"]
    dataset, method = unit.params["dataset"], unit.params["method"]
    _, adds, keeps, _ = ROWS[method]
    net = AuxiliaryResNet(classes, width) if "heads" in adds else resnet18(classes, width)
    backbone = net.backbone if "heads" in adds else net
    if dataset == "in100":
        imagenet_stem_(backbone)
    cvae = FeatureCVAE(8 * width, classes) if "generator" in adds else None
    counted = count_parameters(backbone) + (0 if cvae is None else count_parameters(cvae))
    if "heads" in adds:
        counted += sum(count_parameters(head) for head in net.aux_heads[:3])
    kept_mb = memory_budget_mb(net, cvae if "decoder" in keeps else None)
    if "prototypes" in keeps:
        kept_mb += 4 * (classes * backbone.feature_dim + 1) / MIB
    if "exemplars" in keeps:
        kept_mb += EXEMPLARS_PER_CLASS * classes * 3 * SIDES[dataset] ** 2 / MIB
    trained = count_parameters(net) + (0 if cvae is None else count_parameters(cvae))
    return Outcome(metrics={
        "parameters_m": metric(counted / 1e6, "M"),
        "trained_parameters_m": metric(trained / 1e6, "M"),
        "memory_budget_mb": metric(kept_mb, "MB"),
    }, data={"classes": classes, "width": width, "dataset": dataset})


def summarize(records: list[Record], ctx: Context) -> Summary:
    rows = [{"dataset": r.params["dataset"], "method": ROWS[r.params["method"]][0], "key": r.params["method"],
             **{m: r.value(m) for m in ("parameters_m", "trained_parameters_m", "memory_budget_mb")}}
            for r in records if r.status == "ok"]
    table = pd.DataFrame(rows)
    measured = {}
    for row in rows:
        measured[f"c6-params-{row['dataset']}-{row['key']}"] = row["parameters_m"]
        # A method and its e variant keep the same (the heads are not kept): one claim, either row.
        measured[f"c6-mem-{row['dataset']}-{ROWS[row['key']][3]}"] = row["memory_budget_mb"]
    notes = [
        f"ResNet-18 of base width {ctx.config['width']}, {ctx.config['classes']} classes; CIFAR stem for c100, the "
        "public code's ImageNet stem for in100; float32 parameters, 8-bit exemplar images.",
        "Parameters: the ResNet-18, + the first three auxiliary heads (e variants, eTag), + the generator (GFR, eGFR, "
        "eTag); trained_parameters_m counts every module built (eTag's fourth head too, as the public code).",
        "Memory budget: the inference network, + the generator's decoder (GFR, eTag), + class prototypes and radius "
        f"(PASS), + {EXEMPLARS_PER_CLASS} exemplars per class (IL2M, Lucir); one value per method and its e variant.",
    ]
    return Summary(table=table.drop(columns="key") if not table.empty else table, measured=measured, notes=notes)


BOTH = {"classes": 100, "width": 64}
CHECKED_EVERYWHERE = {**BOTH, "datasets": ["c100"], "methods": ["jointfine", "etag"]}

ARTIFACT = Artifact(
    paper="etag",
    name="table_c6",
    title="Trainable parameters and memory budget on CIFAR-100 and ImageNet-100 (appendix Table C.6)",
    claims=tuple(f"c6-{kind}-{dataset}-{key}" for dataset in SIDES for kind, keys in (
        ("params", tuple(ROWS)), ("mem", tuple(dict.fromkeys(row[3] for row in ROWS.values())))) for key in keys),
    scales={"smoke": dict(CHECKED_EVERYWHERE), "quick": dict(CHECKED_EVERYWHERE),
            "full": {**BOTH, "datasets": list(SIDES), "methods": list(ROWS)}},
    needs={scale: "nothing: the networks are built and counted, not trained." for scale in ("smoke", "quick", "full")},
    units=units,
    run_unit=run_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
