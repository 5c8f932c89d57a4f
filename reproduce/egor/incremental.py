"""EGOR (IOR) against fine-tuning and plain distillation in class-incremental detection, and the cost of generation.

Two tasks per class split: a GFL detector learns the first ``n_old`` classes (by category
id), then the rest from images that contain no old-class object (the non-co-occurrence
setting). Each method unit trains the expanded detector on task 2 and is evaluated with
pycocotools on the validation images (AP and AP50 on old, new and all classes):
``finetune`` (GFL loss on the new ground truth), ``distill`` (new-class loss plus the
balanced logit and box distillation from the old detector, without replay) and ``egor``
(the same on images into which objects inverted from the old detector are pasted, plus
feature distillation at those objects). The ``generation`` unit measures what the
inversion costs (time, peak memory, the bytes of generated images kept) against training
and sampling a separate generator (a small DDPM of the diffusion core trained on the
task-1 objects: a lower bound for a class-conditional one).

The paper's tables were not available to us and its abstract states no number; the claims
are its qualitative statements as thresholds of ours (claims.toml), judged on per-seed paired
gains over three seeds, once the task-1 detector clears a learning floor.

- ``full``: COCO 2017, 40+40, 50+30, 60+20, 70+10; GFL R50-FPN with torchvision's
  ImageNet backbone, 12 + 12 epochs at (1333, 800), 10 inverted images per old class at
  160 px and 2,000 iterations: a GPU run.
- ``quick``: real MNIST digits drawn on 64 px canvases (offline), 5+5 classes; the small
  GFL detector; three seeds; on the CPU, one thread per unit.
- ``smoke``: scikit-learn's 8x8 digits on 64 px canvases and a tiny detector; seconds.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F  # noqa: N812
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from methods.detection import METHODS
from methods.diffusion import ddim_sample, ddim_scheduler, ddpm_scheduler, tiny_unet, train_ddpm
from reproduce.egor.data import coco_root
from reproduce.egor.runs import (
    base_detector,
    evaluate,
    generated_objects,
    incremental_detector,
    load_split,
    untrained_detector,
)
from reproduce.harness.artifact import Artifact, Context, Outcome, Summary, Unit
from reproduce.harness.data import datasets
from reproduce.harness.device import torch_threads
from reproduce.harness.memory import PeakMemory
from reproduce.harness.records import Record, metric
from reproduce.harness.sanity import below_floor
from reproduce.harness.stats import Samples

MIB = 2**20
MAP_METRICS = ("ap_old", "ap50_old", "ap_new", "ap50_new", "ap_all", "ap50_all")
REFERENCE_METRICS = ("ap_old_before", "ap_old_untrained")
# The comparison claims: the baseline and EGOR's outcome over it on one seed (rows of per_seed).
COMPARISONS = {
    "old-gain-vs-finetune": ("finetune", lambda egor, base: egor.ap_old - base.ap_old),
    "old-gain-vs-distill": ("distill", lambda egor, base: egor.ap_old - base.ap_old),
    "new-kept-vs-finetune": ("finetune", lambda egor, base: egor.ap_new / base.ap_new if base.ap_new > 0 else np.nan),
    "all-gain-vs-distill": ("distill", lambda egor, base: egor.ap_all - base.ap_all),
}
# Learning floor (ours): a reference model must score this many AP points (mAP@[.5:.95], %) above an
# untrained detector before a comparison with it means anything.
FLOOR_MARGIN = 10.0


def units(ctx: Context) -> list[Unit]:
    """Per split: each method for every seed, with the generation-cost unit of the first seed after EGOR's.

    The storage claim is a count (the same for every seed), so generation is measured once per
    split. Methods go one seed after another so that two units running at once (local workers)
    are of different seeds and never both train the same (cached) task-1 detector; ``egor``
    comes second, as it inverts its seed's objects, which the generation unit then reuses (and
    the long generation unit then runs beside the short distillation ones).
    """
    result = []
    seeds = ctx.config["seeds"]
    order = [m for m in ("finetune", "egor", "distill") if m in ctx.config["methods"]]
    order += [m for m in ctx.config["methods"] if m not in order]
    for n_old in ctx.config["splits"]:
        split = f"{n_old}+{ctx.config['n_classes'] - n_old}"
        groups = [[Unit(f"{split}-{method}-s{seed}", {"n_old": n_old, "method": method, "seed": seed})
                   for seed in seeds] for method in order]
        groups.insert(order.index("egor") + 1 if "egor" in order else len(order),
                      [Unit(f"{split}-generation-s{seeds[0]}", {"n_old": n_old, "method": "generation",
                                                                 "seed": seeds[0]})])
        result += [unit for group in groups for unit in group]
    return result


def run_unit(unit: Unit, ctx: Context) -> Outcome:
    with torch_threads(ctx.device, ctx.config.get("cpu_threads")):
        return _run(unit, ctx)


def _run(unit: Unit, ctx: Context) -> Outcome:
    config, params = ctx.config, unit.params
    device = torch.device(ctx.device.tag if ctx.device.kind == "cuda" else "cpu")
    split = load_split(config, params["n_old"])
    data = {"provenance": split.train.provenance, "old_category_ids": split.old_ids,
            "new_category_ids": split.new_ids, "task1_images": len(split.task1.coco["images"]),
            "task2_images": len(split.task2.coco["images"]), "val_images": len(split.val.coco["images"])}
    base, base_stats = base_detector(split, config, params["seed"], device)
    if params["method"] == "generation":
        return _generation_cost(base, split, config, params["seed"], device, data)
    before = evaluate(base, split.val, split.old_ids, config)
    untrained = evaluate(untrained_detector(split, config, params["seed"], device), split.val, split.old_ids, config)
    objects = generated_objects(base, split, config, params["seed"]) if params["method"] == "egor" else None
    start = time.perf_counter()
    with PeakMemory(device) as memory:
        model, history = incremental_detector(params["method"], base, split, config, params["seed"], objects)
    seconds = time.perf_counter() - start
    result = evaluate(model, split.val, split.old_ids + split.new_ids, config)
    (ap_old, ap50_old), (ap_new, ap50_new) = result.subset(split.old_ids), result.subset(split.new_ids)
    metrics = {
        "ap_old": metric(ap_old, "AP"), "ap50_old": metric(ap50_old, "AP"),
        "ap_new": metric(ap_new, "AP"), "ap50_new": metric(ap50_new, "AP"),
        "ap_all": metric(result.ap, "AP"), "ap50_all": metric(result.ap50, "AP"),
        "ap_old_before": metric(before.ap, "AP"), "ap50_old_before": metric(before.ap50, "AP"),
        "ap_old_untrained": metric(untrained.ap, "AP"),
        "train_seconds": metric(seconds, "s"), "peak_memory_mb": metric(memory.peak_mb, "MB"),
    }
    step = max(1, len(history) // 50)
    data.update({"loss_history": [round(v, 4) for v in history[::step]], "loss_every": step,
                 "per_class_ap": {str(k): [None if np.isnan(x) else round(x, 3) for x in v]
                                  for k, v in result.per_class.items()},
                 "task1_train_seconds": base_stats.get("seconds")})
    if objects is not None:
        data["generated_objects"] = len(objects.labels)
    return Outcome(metrics=metrics, data=data)


def _object_crops(split, side: int) -> torch.Tensor:
    """Every task-1 object, cut out and resized to ``side`` px, in [-1, 1]: ``(N, 3, side, side)``."""
    crops = []
    for record in split.task1.coco["images"]:
        image = split.task1.image(record)
        boxes, _labels = split.task1.targets(record)
        for x1, y1, x2, y2 in boxes.round().long().tolist():
            if x2 > x1 and y2 > y1:
                crop = image[:, y1:y2, x1:x2][None]
                crops.append(F.interpolate(crop, size=(side, side), mode="bilinear", align_corners=False)[0])
    return torch.stack(crops) * 2 - 1


def _generation_cost(base, split, config: dict, seed: int, device, data: dict) -> Outcome:
    """Inversion's cost against a separate generator trained on the old objects (see the module docstring)."""
    objects = generated_objects(base, split, config, seed)
    seconds, peak_mb, final_loss = objects.cost.tolist()
    kept_bytes = objects.images.numel()  # kept as 8-bit images
    settings = config["generator"]
    crops = _object_crops(split, settings["side"]).to(device)
    unet = tiny_unet(settings["side"], 3, tuple(settings["channels"]), settings["layers"], seed=seed).to(device)
    scheduler = ddpm_scheduler()
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        train_ddpm(unet, scheduler, crops, steps=settings["steps"], batch_size=settings["batch_size"], lr=2e-4,
                   generator=torch.Generator().manual_seed(seed))
        train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        ddim_sample(unet, ddim_scheduler(), len(objects.labels), steps=settings["sample_steps"],
                    generator=torch.Generator().manual_seed(seed), batch_size=settings["batch_size"])
    sample_seconds = time.perf_counter() - start
    generator_bytes = 4 * sum(p.numel() for p in unet.parameters())
    metrics = {
        "inversion_seconds": metric(seconds, "s"), "inversion_peak_mb": metric(peak_mb, "MB"),
        "inversion_final_loss": metric(final_loss), "generated_images": metric(len(objects.labels)),
        "kept_mb": metric(kept_bytes / MIB, "MB"),
        "generator_train_seconds": metric(train_seconds, "s"), "generator_peak_mb": metric(memory.peak_mb, "MB"),
        "generator_sample_seconds": metric(sample_seconds, "s"),
        "generator_mb": metric(generator_bytes / MIB, "MB"),
        "generator_training_objects": metric(len(crops)),
    }
    data["inversion_cost"] = "measured when the objects were generated (they are cached with the task-1 detector)"
    data["inverted_examples"] = _examples(objects)
    return Outcome(metrics=metrics, data=data)


def _examples(objects, per_class: int = 1, classes: int = 8, side: int = 64) -> list[dict]:
    """A few inverted images (one per old class, at most ``side`` px) as 8-bit lists, with box and label."""
    examples = []
    for label in range(min(classes, int(objects.labels.max()) + 1)):
        for index in (objects.labels == label).nonzero().flatten()[:per_class].tolist():
            image, box = objects.images[index], objects.boxes[index]
            scale = min(1.0, side / image.shape[-1])
            if scale < 1:
                image = F.interpolate(image[None], scale_factor=scale, mode="bilinear", align_corners=False)[0]
            examples.append({"label": label, "box": [round(float(v) * scale, 1) for v in box],
                             "pixels": image.mul(255).round().to(torch.uint8).permute(1, 2, 0).tolist()})
    return examples


def per_seed(records: list[Record]) -> pd.DataFrame:
    """One row per method unit: split, method, seed and the mAP, time and memory metrics."""
    return pd.DataFrame([{"split": f"{r.params['n_old']}+{len(r.data['new_category_ids'])}",
                          "method": r.params["method"], "seed": r.params["seed"],
                          **{m: r.value(m) for m in (*MAP_METRICS, *REFERENCE_METRICS, "train_seconds",
                                                     "peak_memory_mb")}}
                         for r in records if r.status == "ok" and r.params["method"] != "generation"])


def aggregate(records: list[Record]) -> pd.DataFrame:
    """Mean over seeds per (split, method) of the mAP, time and memory metrics, with the seed count and the
    spread (std over seeds) of the all-class AP."""
    rows = per_seed(records)
    if rows.empty:
        return rows
    grouped = rows.groupby(["split", "method"], sort=True)
    table = grouped[[c for c in rows.columns if c not in ("split", "method", "seed")]].mean()
    table["ap_all_std"] = grouped["ap_all"].std(ddof=1)
    table["seeds"] = grouped["seed"].count()
    return table.reset_index()


def generation_table(records: list[Record]) -> pd.DataFrame:
    return pd.DataFrame([{"split": f"{r.params['n_old']}+{len(r.data['new_category_ids'])}", "seed": r.params["seed"],
                          **{k: v["value"] for k, v in r.metrics.items()}}
                         for r in records if r.status == "ok" and r.params["method"] == "generation"])


def _paired(rows: pd.DataFrame, baseline: str, outcome) -> dict[str, list[float]]:
    """Per split, ``outcome(egor_row, baseline_row)`` of each seed both methods ran (paired by seed); a
    seed whose outcome is not finite (a ratio over a zero AP) is left out."""
    strata = {}
    for split, group in rows.groupby("split", sort=True):
        egor, base = (group[group["method"] == m].set_index("seed") for m in ("egor", baseline))
        values = [float(outcome(egor.loc[seed], base.loc[seed])) for seed in sorted(set(egor.index) & set(base.index))]
        if values := [v for v in values if np.isfinite(v)]:
            strata[split] = values
    return strata


def comparison_samples(rows: pd.DataFrame) -> dict[str, Samples]:
    """The comparison claims' samples: per split (a stratum) EGOR's paired gain (or ratio) over its
    baseline for each seed; the statistic is the minimum over splits (the worst split must pass)."""
    samples = {}
    for claim, (baseline, outcome) in COMPARISONS.items():
        if strata := _paired(rows, baseline, outcome):
            samples[claim] = Samples(strata, statistic="min")
    return samples


def learning_floors(rows: pd.DataFrame) -> tuple[dict[str, str], list[str]]:
    """The comparisons withheld because a reference model is below its learning floor, and notes with the numbers.

    Chance is the mAP of the untrained task-1 detector on the old classes (mean over seeds); the floor is
    :data:`FLOOR_MARGIN` AP points above it. The old-class and all-class comparisons need the task-1
    detector above it (on every split: nothing to forget otherwise); the new-class ratio needs fine-tuning's
    new-class AP above it (nothing learned to keep otherwise)."""
    chance = float(rows["ap_old_untrained"].mean())
    floor = chance + FLOOR_MARGIN
    means = rows.groupby(["split", "method"])[["ap_old_before", "ap_new"]].mean()
    task1 = float(means["ap_old_before"].groupby("split").min().min())
    finetune = means.xs("finetune", level="method")["ap_new"] if "finetune" in means.index.get_level_values(1) \
        else pd.Series(dtype=float)
    reason = f"chance: the untrained detector's old-class AP {chance:.2f}, plus {FLOOR_MARGIN:g} AP points; ours"
    withheld, notes = {}, []
    references = {"the task-1 detector's old-class AP (worst split, mean over seeds)": (task1, (
        "old-gain-vs-finetune", "old-gain-vs-distill", "all-gain-vs-distill"))}
    if not finetune.empty:
        references["fine-tuning's new-class AP (worst split, mean over seeds)"] = (float(finetune.min()),
                                                                                   ("new-kept-vs-finetune",))
    for what, (value, claims) in references.items():
        verdict = below_floor(what, value, floor, reason)
        notes.append(f"Learning floor (ours): {what} {value:.2f} against {floor:.2f} ({reason}): "
                     + ("below, so " + ", ".join(claims) + " are not judged." if verdict else "cleared."))
        if verdict:
            withheld.update(dict.fromkeys(claims, verdict))
    return withheld, notes


NO_GROUND_TRUTH = "no ground truth"


def for_display(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` as the report shows it: an AP that is NaN reads :data:`NO_GROUND_TRUTH`, not a dash.

    ``coco_map`` and ``MapResult.subset`` give NaN, not 0, for categories without ground truth
    in the test images; the mean over seeds is of the seeds that had some, NaN when none had.
    """
    out = table.copy()
    for column in (c for c in out.columns if c.startswith("ap") and not c.endswith("_std")):
        if out[column].isna().any():
            out[column] = out[column].astype(object).where(out[column].notna(), NO_GROUND_TRUTH)
    return out


def summarize(records: list[Record], ctx: Context) -> Summary:
    table = aggregate(records)
    if table.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful method unit"]}))
    rows = per_seed(records)
    notes = [f"Dataset {ctx.config['dataset']}; splits {ctx.config['splits']}; detector {ctx.config['detector']}; "
             f"{ctx.config['base_epochs']} + {ctx.config['incremental_epochs']} epochs; "
             f"{ctx.config['per_class']} inverted objects per old class; seeds {ctx.config['seeds']}; "
             f"device {ctx.device.kind}. AP is COCO's mAP@[.5:.95] in percent (pycocotools), the mean over seeds; "
             "ap_old_before is the task-1 detector on the old classes, ap_old_untrained the same detector before "
             "training (chance)."]
    samples = comparison_samples(rows)
    measured = {claim: drawn.point() for claim, drawn in samples.items()}
    for claim, drawn in samples.items():
        shown = "{:.3f}" if claim == "new-kept-vs-finetune" else "{:+.2f}"
        notes.append(f"{claim}, per seed: " + "; ".join(
            f"{split}: " + ", ".join(shown.format(v) for v in values) for split, values in drawn.strata.items())
            + f" (min over splits of the means: {drawn.point():.3f}).")
    withheld, floor_notes = learning_floors(rows)
    notes += floor_notes
    cost = generation_table(records)
    if not cost.empty:
        row = cost.mean(numeric_only=True)
        notes.append(f"Generation (seed {int(cost['seed'].iloc[0])}): inverting {row.generated_images:.0f} images "
                     f"took {row.inversion_seconds:.1f} s (peak {row.inversion_peak_mb:.0f} MB) and keeps "
                     f"{row.kept_mb:.2f} MB of images; a separate DDPM generator trained "
                     f"{row.generator_train_seconds:.1f} s (peak {row.generator_peak_mb:.0f} MB) "
                     f"on {row.generator_training_objects:.0f} real old objects, samples as many images in "
                     f"{row.generator_sample_seconds:.1f} s and stores {row.generator_mb:.2f} MB of weights. "
                     "Times are indicative (other units may run at once); the storage claim is a count.")
        measured["storage-vs-generator"] = float((cost["kept_mb"] / cost["generator_mb"]).max())
    figures = [("mAP on old, new and all classes after task 2, per method (mean over seeds)", _plot(table))]
    examples = [r.data["inverted_examples"] for r in records
                if r.params["method"] == "generation" and r.data.get("inverted_examples")]
    if examples:
        figures.append(("Objects inverted from the task-1 detector (one per old class; red: the target box)",
                        _plot_examples(examples[0])))
    return Summary(table=for_display(table), measured=measured, samples=samples, withheld=withheld, notes=notes,
                   figures=figures)


def _plot_examples(examples: list[dict]):
    fig = Figure(figsize=(1.3 * len(examples), 1.5))
    axes = fig.subplots(1, len(examples), squeeze=False)
    for ax, example in zip(axes[0], examples, strict=True):
        ax.imshow(np.asarray(example["pixels"], dtype=np.uint8))
        x1, y1, x2, y2 = example["box"]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="red", linewidth=1))
        ax.set_title(f"class {example['label']}", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    return fig


def _plot(table: pd.DataFrame):
    splits = sorted(table["split"].unique())
    fig = Figure(figsize=(4.2 * len(splits), 3.2))
    axes = fig.subplots(1, len(splits), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        rows = table[table["split"] == split].set_index("method")
        methods = [m for m in METHODS if m in rows.index]
        x = np.arange(3)
        for k, method in enumerate(methods):
            values = [rows.loc[method, c] for c in ("ap_old", "ap_new", "ap_all")]
            ax.bar(x + (k - (len(methods) - 1) / 2) * 0.25, values, width=0.25, label=method)
        before = rows["ap_old_before"].mean()
        ax.axhline(before, color="gray", linestyle=":", linewidth=1, label="task 1 (old)")
        ax.set_xticks(x, ["old", "new", "all"])
        ax.set_title(f"split {split}", fontsize=9)
        ax.set_ylabel("AP (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fetch(ctx: Context) -> list[str]:
    """Download and extract what the scale needs: COCO 2017 and the ImageNet ResNet-50 at full scale."""
    if ctx.config["dataset"] != "coco2017":
        return [f"nothing to download at {ctx.scale} scale ({ctx.config['dataset']} ships offline)"]
    lines = [f"COCO 2017: {coco_root(download=True)}"]
    return lines + [f"{name}: {path}" for name, path in datasets.fetch("resnet50_imagenet").items()]


COMMON = {"methods": list(METHODS), "cpu_threads": None}
ARTIFACT = Artifact(
    paper="egor",
    name="incremental",
    title="Class-incremental detection without old-class data: EGOR against fine-tuning and distillation",
    claims=("old-gain-vs-finetune", "old-gain-vs-distill", "new-kept-vs-finetune", "all-gain-vs-distill",
            "storage-vs-generator"),
    scales={
        "smoke": {**COMMON, "dataset": "digits-canvas", "n_classes": 10, "splits": [5], "n_train": 48, "n_val": 16,
                  "canvas": 64, "digit_side": [16, 28], "detector": "small", "width": 8, "base_epochs": 1,
                  "incremental_epochs": 1, "batch_size": 8, "lr": 0.01, "warmup": 2, "per_class": 1,
                  "inversion": {"iterations": 2, "resolution": 32}, "inversion_batch": 5,
                  "generator": {"side": 16, "channels": [8, 16], "layers": 1, "steps": 2, "batch_size": 4,
                                "sample_steps": 2},
                  "seeds": [0], "cpu_threads": 1},
        "quick": {**COMMON, "dataset": "mnist-canvas", "n_classes": 10, "splits": [5], "n_train": 1500, "n_val": 300,
                  "canvas": 64, "digit_side": [16, 28], "detector": "small", "width": 16, "base_epochs": 12,
                  "incremental_epochs": 12, "batch_size": 16, "lr": 0.01, "warmup": 100, "per_class": 10,
                  "inversion": {"iterations": 200, "resolution": 48}, "inversion_batch": 25,
                  "generator": {"side": 32, "channels": [32, 64], "layers": 1, "steps": 150, "batch_size": 16,
                                "sample_steps": 50},
                  "seeds": [0, 1, 2], "cpu_threads": 1},
        "full": {**COMMON, "dataset": "coco2017", "download": True, "n_classes": 80, "splits": [40, 50, 60, 70],
                 "image_scale": [1333, 800], "flip": 0.5, "detector": "resnet50", "base_epochs": 12,
                 "incremental_epochs": 12, "batch_size": 16, "lr": 0.01, "warmup": 500, "per_class": 10,
                 "inversion": {}, "inversion_batch": 40,
                 "generator": {"side": 64, "channels": [64, 128, 256], "layers": 2, "steps": 50000, "batch_size": 64,
                               "sample_steps": 50},
                 "seeds": [0, 1, 2]},
    },
    needs={
        "smoke": "nothing: scikit-learn's bundled digits; no claim is judged.",
        "quick": "the shared MNIST test files in REPRO_DATA_DIRS (offline); 3 seeds x 3 methods + 1 generation unit, "
                 "one thread each, two at once on 2 CPU cores.",
        "full": "COCO 2017 (about 19 GB, downloaded and extracted on first use), torchvision's ImageNet ResNet-50 "
                "weights, and a CUDA GPU: 4 splits x 3 seeds x (12 + 3 x 12 epochs).",
    },
    options={
        "--splits": {"type": int, "nargs": "+", "metavar": "N_OLD",
                     "help": "class splits by their number of old classes (COCO: 40 50 60 70; digits: 1-9)"},
        "--methods": {"nargs": "+", "choices": list(METHODS), "help": "the incremental methods to train"},
        "--seeds": {"type": int, "nargs": "+", "help": "seeds of the task-1 detector and of each method"},
    },
    units=units,
    run_unit=run_unit,
    summarize=summarize,
    fetch=fetch,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
