"""One continual-learning run as a unit of work, shared by the rehearsal artifacts (CLFD, FDINet, E2Net).

The harness side of ``methods.cl``: it loads a sequential dataset (real files through
the harness loaders, or a seeded synthetic stream at smoke scale), builds the network
and learner of a unit (method x variant x buffer x seed), measures training time and peak
memory around :func:`methods.cl.train_stream`, and returns the record's metrics.

Peak memory is measured by :class:`reproduce.harness.memory.PeakMemory` around the whole
unit (network, buffer and training).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from methods.cl import (
    CIFAR10_CHOICES,
    CIFAR100_CHOICES,
    DERPP,
    ER,
    ERACE,
    STREAMS,
    Augmentation,
    CLFDNet,
    E2Net,
    ElasticResNet,
    FDINet,
    Learner,
    PlainNet,
    ReservoirBuffer,
    backward_transfer,
    black_level,
    count_parameters,
    final_average_accuracy,
    forgetting,
    joint_tasks,
    resnet18,
    split_tasks,
    to_tensor,
    train_stream,
)
from reproduce.harness.artifact import Context, Outcome, Unit
from reproduce.harness.data.datasets import fetch
from reproduce.harness.data.images import (
    ImageSet,
    load_cifar,
    load_image_folder,
    load_mnist,
    offline_mnist_train,
    read_tiny_imagenet,
    shared_image_set,
)
from reproduce.harness.device import torch_threads
from reproduce.harness.errors import DataError
from reproduce.harness.memory import PeakMemory
from reproduce.harness.records import metric

# Dataset key -> the sequential protocol it follows.
DATASET_STREAMS = {"synthetic": "seq-cifar10", "cifar10-subset": "seq-cifar10", "mnist-offline": "seq-mnist",
                   "seq-cifar10": "seq-cifar10", "seq-cifar100": "seq-cifar100", "seq-tinyimg": "seq-tinyimg"}

# CLFD's protocol (clfd.md section 4, mammoth's best_args): lr, DER++'s alpha/beta and epochs per task,
# by stream, method and buffer. SGD and JOINT use mammoth's SGD learning rate (ours for JOINT).
HYPERPARAMETERS = {
    ("seq-cifar10", "sgd", 0): {"lr": 0.1, "epochs": 50},
    ("seq-cifar10", "joint", 0): {"lr": 0.1, "epochs": 50},
    ("seq-cifar10", "er", 50): {"lr": 0.1, "epochs": 50},
    ("seq-cifar10", "er", 125): {"lr": 0.1, "epochs": 50},
    ("seq-cifar10", "derpp", 50): {"lr": 0.03, "alpha": 0.1, "beta": 0.5, "epochs": 50},
    ("seq-cifar10", "derpp", 125): {"lr": 0.03, "alpha": 0.2, "beta": 0.5, "epochs": 50},
    ("seq-cifar10", "erace", 50): {"lr": 0.03, "epochs": 50},
    ("seq-cifar10", "erace", 125): {"lr": 0.03, "epochs": 50},
    ("seq-tinyimg", "sgd", 0): {"lr": 0.03, "epochs": 100},
    ("seq-tinyimg", "joint", 0): {"lr": 0.03, "epochs": 100},
    ("seq-tinyimg", "er", 50): {"lr": 0.1, "epochs": 100},
    ("seq-tinyimg", "er", 125): {"lr": 0.03, "epochs": 100},
    ("seq-tinyimg", "derpp", 50): {"lr": 0.03, "alpha": 0.1, "beta": 0.5, "epochs": 100},
    ("seq-tinyimg", "derpp", 125): {"lr": 0.03, "alpha": 0.1, "beta": 0.5, "epochs": 100},
    ("seq-tinyimg", "erace", 50): {"lr": 0.03, "epochs": 50},
    ("seq-tinyimg", "erace", 125): {"lr": 0.03, "epochs": 50},
}
# E2Net's protocol (e2net.md section 4): buffers 200/500/5120 with DER++'s best arguments (E2Net's are
# identical), the same on Seq-CIFAR-100; ER at mammoth's Seq-CIFAR-10 rate, which we also use on CIFAR-100.
for _stream in ("seq-cifar10", "seq-cifar100"):
    for _buffer, (_alpha, _beta) in {200: (0.1, 0.5), 500: (0.2, 0.5), 5120: (0.1, 1.0)}.items():
        HYPERPARAMETERS[_stream, "derpp", _buffer] = {"lr": 0.03, "alpha": _alpha, "beta": _beta, "epochs": 50}
        HYPERPARAMETERS[_stream, "er", _buffer] = {"lr": 0.1, "epochs": 50}
LEARNERS = {"sgd": Learner, "joint": Learner, "er": ER, "derpp": DERPP, "erace": ERACE, "e2net": E2Net}
# Methods whose best arguments are another method's (E2Net's are DER++'s, e2net.md section 4).
SAME_ARGUMENTS = {"e2net": "derpp"}


@dataclass
class StreamData:
    """A loaded sequential dataset: normalised tensors and where they came from."""

    stream: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    provenance: dict


def hyperparameters(stream: str, method: str, buffer: int) -> dict:
    """The protocol's values for ``method``; quick-scale streams borrow Seq-CIFAR-10's."""
    method = SAME_ARGUMENTS.get(method, method)
    key_stream = stream if (stream, method, buffer) in HYPERPARAMETERS else "seq-cifar10"
    if (key_stream, method, buffer) not in HYPERPARAMETERS:
        buffer = 50 if buffer else 0
    return dict(HYPERPARAMETERS[key_stream, method, buffer])


def _per_class(images: ImageSet, count: int | None) -> ImageSet:
    """The first ``count`` images of each class, in file order (all if None)."""
    if count is None:
        return images
    rows = np.concatenate([np.flatnonzero(images.labels == c)[:count] for c in range(len(images.classes))])
    rows.sort()
    return ImageSet(images.images[rows], images.labels[rows], images.classes,
                    {**images.provenance, "notes": f"{images.provenance['notes']}; first {count} per class"})


def _synthetic(split: str, per_class: int) -> ImageSet:
    """Seeded 32x32 RGB images, one mean colour per class plus noise (smoke scale only)."""
    rng = np.random.default_rng(0 if split == "train" else 1)
    labels = np.repeat(np.arange(10), per_class)
    colours = np.random.default_rng(7).integers(40, 216, (10, 3))
    images = np.clip(colours[labels][:, None, None, :] + rng.normal(0, 30, (len(labels), 32, 32, 3)), 0, 255)
    return ImageSet(images.astype(np.uint8), labels.astype(np.int64), [str(c) for c in range(10)],
                    {"source": "synthetic (seeded, numpy)", "files": {}, "notes": "class colour + N(0, 30) noise"})


def _image_sets(dataset: str, download: bool, per_class: tuple[int | None, int | None]) -> tuple[ImageSet, ImageSet]:
    if dataset == "synthetic":
        return _synthetic("train", per_class[0] or 8), _synthetic("test", per_class[1] or 4)
    if dataset == "cifar10-subset":
        folder = shared_image_set("cifar10")
        sets = load_image_folder(folder, "train"), load_image_folder(folder, "test")
    elif dataset == "mnist-offline":
        sets = offline_mnist_train(), load_mnist("test", download=False)
    elif dataset in ("seq-cifar10", "seq-cifar100"):
        name = dataset.removeprefix("seq-")
        sets = load_cifar(name, "train", download=download), load_cifar(name, "test", download=download)
    elif dataset == "seq-tinyimg":
        archive = fetch("tiny_imagenet", ["tiny-imagenet-200.zip"], download=download)["tiny-imagenet-200.zip"]
        sets = read_tiny_imagenet(archive, "train"), read_tiny_imagenet(archive, "val")
    else:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_STREAMS)}")
    return _per_class(sets[0], per_class[0]), _per_class(sets[1], per_class[1])


@functools.lru_cache(maxsize=2)
def load_stream(dataset: str, download: bool = False, train_per_class: int | None = None,
                test_per_class: int | None = None) -> StreamData:
    """The normalised train and test tensors of ``dataset`` (cached per process)."""
    stream = DATASET_STREAMS.get(dataset)
    if stream is None:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_STREAMS)}")
    train, test = _image_sets(dataset, download, (train_per_class, test_per_class))
    spec = STREAMS[stream]
    return StreamData(stream, to_tensor(train.images, spec), torch.from_numpy(train.labels),
                      to_tensor(test.images, spec), torch.from_numpy(test.labels),
                      {"train": train.provenance, "test": test.provenance})


def build_net(variant: str, spec, config: dict, generator: torch.Generator, device: torch.device):
    """The network of a variant: ``plain`` ResNet-18, ``clfd`` (FFE + ResNet-18 + CFFS), ``fdinet``, or
    ``elastic`` (E2Net's elastic ResNet-18, which every method of the E2Net comparison trains)."""
    black = black_level(spec)
    if variant == "plain":
        net = PlainNet(resnet18(spec.n_classes, config["width"], spec.channels), black)
    elif variant == "clfd":
        net = CLFDNet(resnet18(spec.n_classes, config["width"], 3), spec.channels, spec.n_classes, black, generator)
    elif variant == "fdinet":
        net = FDINet(spec.n_classes, spec.channels, black, config["low_width"], config["high_width"])
    elif variant == "elastic":
        # E2Net's working network; with basic blocks its maximal configuration is the reduced ResNet-18.
        choices = CIFAR10_CHOICES if spec.n_classes <= 10 else CIFAR100_CHOICES
        net = PlainNet(ElasticResNet(spec.n_classes, config["width"], spec.channels, expand_ratios=choices,
                                     width_mults=choices, block="basic"), black)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return net.to(device)


def _warm_up(variant: str, spec, config: dict, device: torch.device, data: StreamData) -> None:
    """One training step of a throw-away network, so that torch's lazy initialisation (kernel
    selection, allocator pools) falls outside the unit's timed and memory-measured block."""
    net = build_net(variant, spec, config, torch.Generator().manual_seed(0), device)
    batch = data.train_x[:config["batch_size"]].to(device)
    labels = data.train_y[:len(batch)].to(device)
    Learner(net, lr=0.0, generator=torch.Generator().manual_seed(0)).observe(batch, labels, batch)


def run_cl_unit(unit: Unit, ctx: Context) -> Outcome:
    """Train one (method, variant, buffer, seed) on the configured stream; metrics of the record.

    On the CPU, ``config["cpu_threads"]`` (if set) caps torch's threads for the unit
    (:func:`~reproduce.harness.device.torch_threads`).
    """
    with torch_threads(ctx.device, ctx.config.get("cpu_threads")):
        return _run_cl_unit(unit, ctx)


def _run_cl_unit(unit: Unit, ctx: Context) -> Outcome:
    config, params = ctx.config, unit.params
    dataset = params.get("dataset", config.get("dataset"))
    data = load_stream(dataset, config.get("download", False), config.get("train_per_class"),
                       config.get("test_per_class"))
    spec = STREAMS[data.stream]
    method, variant, nominal = params["method"], params["variant"], params["buffer"]
    hyper = hyperparameters(data.stream, method, nominal)
    epochs = config.get("epochs") or hyper["epochs"]
    device = torch.device(ctx.device.tag if ctx.device.kind == "cuda" else "cpu")
    _warm_up(variant, spec, config, device, data)
    seed = int(ctx.rng(unit).integers(2**31))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    tasks = split_tasks(data.train_y, data.test_y, spec)
    augment = Augmentation(spec.crop_padding, spec.flip)
    with PeakMemory(device) as memory:
        net = build_net(variant, spec, config, generator, device)
        buffer = None
        if method not in ("sgd", "joint"):
            # Byte budget of `nominal` images; CLFD's features are a quarter of that each (4x the items).
            item = (3, spec.side // net.downsample, spec.side // net.downsample) if variant == "clfd" \
                else (spec.channels, spec.side, spec.side)
            buffer = ReservoirBuffer.from_bytes(nominal * spec.channels * spec.side ** 2 * 4, item)
        extra = {k: hyper[k] for k in ("alpha", "beta") if k in hyper}
        if method == "e2net":
            extra.update(n_tasks=len(tasks), n_candidates=config.get("n_candidates", 500))
        learner = LEARNERS[method](net, lr=hyper["lr"], generator=generator, buffer=buffer,
                                   minibatch=config["batch_size"], augment=augment, **extra)
        stream = joint_tasks(tasks) if method == "joint" else tasks
        result = train_stream(learner, data.train_x, data.train_y, data.test_x, data.test_y, stream,
                              n_epochs=epochs, batch_size=config["batch_size"],
                              stream_augment=config.get("augment", True), eval_tasks=tasks)
    metrics = {
        "class_il": metric(final_average_accuracy(result.class_il), "%"),
        "task_il": metric(final_average_accuracy(result.task_il), "%"),
        "forgetting_cil": metric(forgetting(result.class_il), "pp"),
        "bwt_cil": metric(backward_transfer(result.class_il), "pp"),
        "forgetting_til": metric(forgetting(result.task_il), "pp"),
        "train_seconds": metric(result.train_seconds, "s"),
        "peak_memory_mb": metric(memory.peak_mb, "MB"),
        "parameters": metric(count_parameters(net)),
        "buffer_items": metric(0 if buffer is None else buffer.capacity),
        "buffer_bytes": metric(0 if buffer is None else buffer.nbytes, "B"),
        "buffer_offered": metric(0 if buffer is None else buffer.seen),
        "storage_bytes": metric(learner.storage_bytes(), "B"),
        "epochs": metric(epochs),
    }
    return Outcome(metrics=metrics, data={
        "dataset": dataset, "stream": data.stream, "provenance": data.provenance,
        "hyperparameters": {**hyper, "epochs": epochs}, "torch_threads": torch.get_num_threads(),
        "peak_memory_source": "cuda allocator"
        if device.type == "cuda" else "process VmHWM growth",
        "class_il_matrix": _matrix(result.class_il), "task_il_matrix": _matrix(result.task_il),
    })


def _matrix(matrix: np.ndarray) -> list[list[float | None]]:
    """An accuracy matrix as JSON rows, None for tasks not yet seen."""
    return [[None if np.isnan(v) else round(float(v), 3) for v in row] for row in matrix]


def cl_units(config: dict, variants: tuple[str, ...]) -> list[Unit]:
    """One unit per (dataset, buffer, method, variant, seed) of ``config``; buffer-free methods once per dataset."""
    units = []
    for dataset in config["datasets"]:
        short = dataset.removeprefix("seq-")
        for seed in config["seeds"]:
            for method in config.get("buffer_free", ()):
                units.append(Unit(f"{short}-nb-plain-{method}-s{seed}", {
                    "dataset": dataset, "method": method, "variant": "plain", "buffer": 0, "seed": seed}))
            for buffer in config["buffers"]:
                for method in config["methods"]:
                    for variant in variants:
                        units.append(Unit(f"{short}-b{buffer}-{variant}-{method}-s{seed}", {
                            "dataset": dataset, "method": method, "variant": variant, "buffer": buffer, "seed": seed}))
    return units


METRICS = ("class_il", "task_il", "forgetting_cil", "bwt_cil", "train_seconds", "peak_memory_mb", "parameters",
           "storage_bytes")


def aggregate(records) -> pd.DataFrame:
    """Mean and standard deviation over seeds per (dataset, buffer, method, variant)."""
    rows = pd.DataFrame([{**{k: r.params[k] for k in ("dataset", "buffer", "method", "variant", "seed")},
                          **{m: r.value(m) for m in METRICS}} for r in records if r.status == "ok"])
    if rows.empty:
        return rows
    grouped = rows.groupby(["dataset", "buffer", "method", "variant"], sort=True)
    table = grouped[list(METRICS)].mean()
    for name in ("class_il", "task_il"):
        table[f"{name}_std"] = grouped[name].std(ddof=0)
    table["seeds"] = grouped["seed"].count()
    return table.reset_index()


def ratios(table: pd.DataFrame, variant: str) -> pd.DataFrame:
    """Per (dataset, buffer, method): plain / ``variant`` time and memory, and the accuracy gain in points."""
    plain = table[table["variant"] == "plain"].set_index(["dataset", "buffer", "method"])
    other = table[table["variant"] == variant].set_index(["dataset", "buffer", "method"])
    joined = plain.merge(other, left_index=True, right_index=True, suffixes=("_plain", "_new"))
    return pd.DataFrame({
        "speedup": joined["train_seconds_plain"] / joined["train_seconds_new"],
        "memory_ratio": joined["peak_memory_mb_plain"] / joined["peak_memory_mb_new"],
        "memory_reduction_pct": 100 * (1 - joined["peak_memory_mb_new"] / joined["peak_memory_mb_plain"]),
        "parameter_reduction_pct": 100 * (1 - joined["parameters_new"] / joined["parameters_plain"]),
        "class_il_gain": joined["class_il_new"] - joined["class_il_plain"],
        "task_il_gain": joined["task_il_new"] - joined["task_il_plain"],
    }).reset_index()
