"""One class-incremental run as a unit of work, shared by the eTag artifacts.

A unit is (dataset, first-task classes, number of later tasks, method, seed). It loads the
dataset's normalised tensors (:func:`reproduce.continual.load_stream`: the real files, the
shared CIFAR-10 subset offline, or a seeded synthetic set at smoke scale), draws the class
order from the unit's seed (eTag's seed-dependent permutation: every method of one seed
learns the same order), builds the network and learner, and measures
:func:`methods.cl.incremental.train_incremental` with peak memory around it.

Methods: ``etag`` (:class:`methods.cl.etag.ETag` on the ResNet-18 with auxiliary heads),
``finetune`` and ``lwf`` (:mod:`methods.cl.exemplar_free`, on the same ResNet-18 without
heads). All three use eTag's optimizer (Adam 1e-3, weight decay 2e-4, step decay) and
the network initialisation of eTag's code, so only the method differs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from methods.cl import (
    STREAMS,
    AdamSchedule,
    Augmentation,
    AuxiliaryResNet,
    ETag,
    FeatureCVAE,
    FineTune,
    LwF,
    black_level,
    class_splits,
    count_parameters,
    resnet18,
    table_c6_parameters,
    torchvision_init_,
    train_incremental,
)
from reproduce.continual import load_stream
from reproduce.harness.artifact import Context, Outcome, Unit
from reproduce.harness.device import torch_threads
from reproduce.harness.memory import PeakMemory
from reproduce.harness.records import Record, metric

METHODS = ("etag", "finetune", "lwf")
# The smoke scale of every eTag artifact: a seeded synthetic set and a width-4 network, one epoch each.
SMOKE = {"train_per_class": 8, "test_per_class": 4, "width": 4, "epochs": 1, "generator_epochs": 1, "batch_size": 32,
         "synthetic_batch": 16, "seeds": [0], "cpu_threads": 1}
MIB = 2**20


def memory_budget_mb(net: torch.nn.Module, cvae: FeatureCVAE | None) -> float:
    """What a method keeps from one task to the next, in MiB of float32 (Table C.6's "memory budget").

    Our reading of Table C.6: the network used at inference (backbone and classifier, not
    eTag's training-only auxiliary heads) plus, for eTag, the generator's decoder, which
    must be kept to draw old-class features. Joint/Fine's 42.80 MB is exactly 11.22 M
    float32 parameters; eTag's 45.38 MB matches ResNet-18 + decoder to 0.02 MB.
    """
    kept = net.backbone if isinstance(net, AuxiliaryResNet) else net
    parameters = count_parameters(kept) + (0 if cvae is None else count_parameters(cvae.decoder))
    return 4 * parameters / MIB


def build_network(method: str, n_classes: int, width: int, channels: int) -> torch.nn.Module:
    """The network of ``method``, with the Kaiming fan-out initialisation of eTag's code."""
    if method == "etag":
        return torchvision_init_(AuxiliaryResNet(n_classes, width, channels))
    if method in ("finetune", "lwf"):
        return torchvision_init_(resnet18(n_classes, width, channels))
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def build_learner(method: str, net: torch.nn.Module, config: dict, generator: torch.Generator):
    optim = AdamSchedule(decay_step=config["lr_decay_step"])
    if method == "etag":
        return ETag(net, generator=generator, generator_epochs=config["generator_epochs"], optim=optim,
                    synthetic_batch=config.get("synthetic_batch", 128))
    if method == "finetune":
        return FineTune(net, generator=generator, optim=optim)
    return LwF(net, generator=generator, optim=optim)


def run_incremental_unit(unit: Unit, ctx: Context) -> Outcome:
    """Train one (dataset, split, method, seed); the record's metrics.

    On the CPU, ``config["cpu_threads"]`` (if set) caps torch's threads for the unit
    (:func:`~reproduce.harness.device.torch_threads`).
    """
    with torch_threads(ctx.device, ctx.config.get("cpu_threads")):
        return _run(unit, ctx)


def _run(unit: Unit, ctx: Context) -> Outcome:
    config, params = ctx.config, unit.params
    data = load_stream(params["dataset"], config.get("download", False), config.get("train_per_class"),
                       config.get("test_per_class"))
    spec = STREAMS[data.stream]
    n_classes = int(data.train_y.max()) + 1
    order = np.random.default_rng(params["seed"]).permutation(n_classes)
    splits = class_splits(n_classes, params["first"], params["tasks"], order)
    device = torch.device(ctx.device.tag if ctx.device.kind == "cuda" else "cpu")
    torch.manual_seed(params["seed"])
    generator = torch.Generator().manual_seed(params["seed"])
    method = params["method"]
    with PeakMemory(device) as memory:
        net = build_network(method, n_classes, config["width"], spec.channels).to(device)
        learner = build_learner(method, net, config, generator)
        result = train_incremental(learner, data.train_x, data.train_y, data.test_x, data.test_y, splits,
                                   epochs=config["epochs"], batch_size=config["batch_size"],
                                   augment=Augmentation(spec.crop_padding, spec.flip), fill=black_level(spec))
    cvae = getattr(learner, "cvae", None)
    metrics = {
        "average_incremental_accuracy": metric(result.average_incremental_accuracy, "%"),
        "final_accuracy": metric(float(result.seen_accuracy[-1]), "%"),
        "forgetting": metric(result.forgetting, "pp"),
        "train_seconds": metric(result.train_seconds, "s"),
        "test_seconds": metric(result.test_seconds, "s"),
        "peak_memory_mb": metric(memory.peak_mb, "MB"),
        "trained_parameters": metric(count_parameters(net) + (0 if cvae is None else count_parameters(cvae))),
        "memory_budget_mb": metric(memory_budget_mb(net, cvae), "MB"),
        "exemplars_stored": metric(learner.stored_exemplars),
    }
    if cvae is not None:
        metrics["table_c6_parameters"] = metric(table_c6_parameters(net, cvae))
    return Outcome(metrics=metrics, data={
        "dataset": params["dataset"], "stream": data.stream, "provenance": data.provenance,
        "class_order": order.tolist(), "splits": [list(map(int, s)) for s in splits],
        "seen_accuracy": [round(float(a), 3) for a in result.seen_accuracy],
        "task_accuracy": [[None if np.isnan(v) else round(float(v), 3) for v in row] for row in result.task_accuracy],
        "loss_history": learner.history, "torch_threads": torch.get_num_threads(),
        "peak_memory_source": "cuda allocator" if device.type == "cuda" else "process VmHWM growth",
    })


def incremental_units(config: dict) -> list[Unit]:
    """One unit per (dataset, split, method, seed) of ``config["settings"]``, ``config["methods"]`` and seeds."""
    units = []
    for setting in config["settings"]:
        dataset, first, tasks = setting["dataset"], setting["first"], setting["tasks"]
        short = dataset.removeprefix("seq-")
        for seed in config["seeds"]:
            for method in config["methods"]:
                units.append(Unit(f"{short}-f{first}-t{tasks}-{method}-s{seed}", {
                    "dataset": dataset, "first": first, "tasks": tasks, "method": method, "seed": seed}))
    return units


METRICS = ("average_incremental_accuracy", "final_accuracy", "forgetting", "train_seconds", "test_seconds",
           "peak_memory_mb", "exemplars_stored")


def aggregate(records: list[Record]) -> pd.DataFrame:
    """Mean over seeds per (dataset, first, tasks, method), with the standard deviation of A."""
    rows = pd.DataFrame([{**{k: r.params[k] for k in ("dataset", "first", "tasks", "method", "seed")},
                          **{m: r.value(m) for m in METRICS}} for r in records if r.status == "ok"])
    if rows.empty:
        return rows
    grouped = rows.groupby(["dataset", "first", "tasks", "method"], sort=True)
    table = grouped[list(METRICS)].mean()
    table["A_std"] = grouped["average_incremental_accuracy"].std(ddof=0)
    table["seeds"] = grouped["seed"].count()
    return table.reset_index()


def gains(table: pd.DataFrame, baseline: str) -> pd.Series:
    """eTag's A minus ``baseline``'s, per (dataset, first, tasks) where both ran."""
    pivot = table.pivot_table(index=["dataset", "first", "tasks"], columns="method",
                              values="average_incremental_accuracy")
    if "etag" not in pivot or baseline not in pivot:
        return pd.Series(dtype=float)
    return (pivot["etag"] - pivot[baseline]).dropna()
