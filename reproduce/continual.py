"""One continual-learning run as a unit of work, shared by the rehearsal artifacts (CLFD, FDINet, E2Net).

The harness side of ``methods.cl``: it loads a sequential dataset (real files through
the harness loaders, or a seeded synthetic stream at smoke scale), builds the network
and learner of a unit (method x variant x buffer x seed), measures training time and peak
memory around :func:`methods.cl.train_stream`, and returns the record's metrics.

Peak memory is measured by :class:`reproduce.harness.memory.PeakMemory` around the whole
unit (network, buffer and training).

The summaries' side: :func:`seed_rows` lists each record's values, :func:`paired_samples`
turns two sides of a comparison into per-seed samples per setting (a gain, a speed-up, a
reduction) for the claim's statistic, and :func:`reference_floor` says whether the
reference model has learned enough (class-IL at least :data:`FLOOR_FACTOR` x the accuracy
of a guess that knows only the last task) for an accuracy comparison to be judged.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from methods.cl import (
    CIFAR10_CHOICES,
    CIFAR100_CHOICES,
    CLSER,
    DERPP,
    ER,
    ERACE,
    SI,
    STREAMS,
    Augmentation,
    CLFDNet,
    E2Net,
    ElasticResNet,
    FDINet,
    Learner,
    OnlineEWC,
    PlainNet,
    ReservoirBuffer,
    StreamSpec,
    WarmupLwF,
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
from reproduce.harness.sanity import below_floor
from reproduce.harness.stats import Samples

# Dataset key -> the sequential protocol it follows.
DATASET_STREAMS = {"synthetic": "seq-cifar10", "cifar10-subset": "seq-cifar10", "mnist-offline": "seq-mnist",
                   "seq-cifar10": "seq-cifar10", "seq-cifar100": "seq-cifar100", "seq-tinyimg": "seq-tinyimg"}

# CLFD's protocol (docs/papers/clfd.md, mammoth's best_args): lr, DER++'s alpha/beta and epochs per task,
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
# The CLFD table's other baselines (docs/papers/clfd.md): mammoth's best arguments, which CLFD's code loads;
# the keys besides lr and epochs are the learners' keyword arguments. oEWC: lambda, Fisher decay gamma; SI: c,
# damping xi; LwF: distillation weight alpha, temperature, SGD weight decay; CLS-ER: consistency weight, update
# frequencies and EMA decays of the plastic and stable memories.
for _stream, _epochs, _lamb, _lwf_alpha in (("seq-cifar10", 50, 10.0, 3.0), ("seq-tinyimg", 100, 25.0, 1.0)):
    HYPERPARAMETERS[_stream, "oewc", 0] = {"lr": 0.03, "lamb": _lamb, "gamma": 1.0, "epochs": _epochs}
    HYPERPARAMETERS[_stream, "si", 0] = {"lr": 0.03, "c": 0.5, "xi": 1.0, "epochs": _epochs}
    HYPERPARAMETERS[_stream, "lwf", 0] = {"lr": 0.01, "alpha": _lwf_alpha, "temperature": 2.0, "weight_decay": 5e-4,
                                          "epochs": _epochs}
for (_stream, _buffer), (_reg, _plastic, _stable) in {
        ("seq-cifar10", 50): (0.15, 0.5, 0.1), ("seq-cifar10", 125): (0.15, 0.9, 0.2),
        ("seq-tinyimg", 50): (0.1, 0.16, 0.08), ("seq-tinyimg", 125): (0.1, 0.16, 0.1)}.items():
    HYPERPARAMETERS[_stream, "clser", _buffer] = {"lr": 0.1, "reg_weight": _reg, "plastic_rate": _plastic,
                                                  "stable_rate": _stable, "plastic_alpha": 0.999,
                                                  "stable_alpha": 0.999, "epochs": 50}
# E2Net's protocol (docs/papers/e2net.md): buffers 200/500/5120 with DER++'s best arguments (E2Net's are
# identical), the same on Seq-CIFAR-100; ER at mammoth's Seq-CIFAR-10 rate, which we also use on CIFAR-100.
for _stream in ("seq-cifar10", "seq-cifar100"):
    for _buffer, (_alpha, _beta) in {200: (0.1, 0.5), 500: (0.2, 0.5), 5120: (0.1, 1.0)}.items():
        HYPERPARAMETERS[_stream, "derpp", _buffer] = {"lr": 0.03, "alpha": _alpha, "beta": _beta, "epochs": 50}
        HYPERPARAMETERS[_stream, "er", _buffer] = {"lr": 0.1, "epochs": 50}
LEARNERS = {"sgd": Learner, "joint": Learner, "er": ER, "derpp": DERPP, "erace": ERACE, "e2net": E2Net,
            "oewc": OnlineEWC, "si": SI, "lwf": WarmupLwF, "clser": CLSER}
# Methods whose best arguments are another method's (E2Net's are DER++'s, docs/papers/e2net.md).
SAME_ARGUMENTS = {"e2net": "derpp"}


@dataclass
class StreamData:
    """A loaded sequential dataset: normalised tensors, the protocol they follow and where they came from.

    ``spec`` is ``STREAMS[stream]`` unless the images were shrunk (``side``): then its side and crop
    padding are scaled down with them.
    """

    stream: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    provenance: dict
    spec: StreamSpec


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


def _shrink(images: ImageSet, side: int | None) -> ImageSet:
    """``images`` average-pooled by the smallest integer factor ``f`` with ``H / f <= side`` (rows and columns
    beyond a multiple of ``f`` dropped); unchanged when ``side`` is None or they already fit."""
    height = images.images.shape[1]
    if side is None or height <= side:
        return images
    factor = -(-height // side)
    cut = height // factor * factor
    pixels = images.images[:, :cut, :cut].astype(np.float32)
    pooled = pixels.reshape(len(pixels), cut // factor, factor, cut // factor, factor, *pixels.shape[3:]).mean((2, 4))
    return ImageSet(np.rint(pooled).astype(np.uint8), images.labels, images.classes,
                    {**images.provenance, "notes": f"{images.provenance['notes']}; {factor}x{factor} average-pooled"})


def stream_spec(stream: str, side: int | None = None) -> StreamSpec:
    """The protocol of ``stream`` at ``side`` pixels (None: its own): crop padding scaled with the side."""
    spec = STREAMS[stream]
    if side is None or side == spec.side:
        return spec
    return dataclasses.replace(spec, side=side, crop_padding=spec.crop_padding * side // spec.side)


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
                test_per_class: int | None = None, side: int | None = None) -> StreamData:
    """The normalised train and test tensors of ``dataset`` (cached per process).

    ``side`` (pixels, None: the stream's own) shrinks the images by :func:`_shrink` and pads them to
    ``side x side``: a cheaper stream at quick scale (MNIST's 28 x 28 digits become 14 x 14 in 16 x 16).
    """
    stream = DATASET_STREAMS.get(dataset)
    if stream is None:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_STREAMS)}")
    sets = _image_sets(dataset, download, (train_per_class, test_per_class))
    train, test = (_shrink(images, side) for images in sets)
    spec = stream_spec(stream, side)
    return StreamData(stream, to_tensor(train.images, spec), torch.from_numpy(train.labels),
                      to_tensor(test.images, spec), torch.from_numpy(test.labels),
                      {"train": train.provenance, "test": test.provenance}, spec)


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


def unit_seed(ctx: Context, params: dict) -> int:
    """The torch seed of a unit: drawn from the run's seed and the unit's (profile, dataset, buffer, seed),
    not its method or variant, so that the runs a comparison pairs by seed start from the same draws
    (common random numbers: the same data order and replay draws as far as their methods draw alike,
    the same initial weights where their networks match), and their difference carries less noise."""
    name = f"{params.get('profile', '')}{params['dataset']}-b{params['buffer']}-s{params['seed']}"
    return int(ctx.rng(name).integers(2**31))


def run_cl_unit(unit: Unit, ctx: Context) -> Outcome:
    """Train one (method, variant, buffer, seed) on the configured stream; metrics of the record.

    On the CPU, ``config["cpu_threads"]`` (if set) caps torch's threads for the unit
    (:func:`~reproduce.harness.device.torch_threads`).
    """
    with torch_threads(ctx.device, unit_config(ctx.config, unit.params).get("cpu_threads")):
        return _run_cl_unit(unit, ctx)


def _run_cl_unit(unit: Unit, ctx: Context) -> Outcome:
    params = unit.params
    config = unit_config(ctx.config, params)
    dataset = params.get("dataset", config.get("dataset"))
    data = load_stream(dataset, config.get("download", False), config.get("train_per_class"),
                       config.get("test_per_class"), config.get("side"))
    spec = data.spec
    method, variant, nominal = params["method"], params["variant"], params["buffer"]
    hyper = hyperparameters(data.stream, method, nominal)
    epochs = config.get("epochs") or hyper["epochs"]
    device = torch.device(ctx.device.tag if ctx.device.kind == "cuda" else "cpu")
    _warm_up(variant, spec, config, device, data)
    seed = unit_seed(ctx, params)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    tasks = split_tasks(data.train_y, data.test_y, spec)
    augment = Augmentation(spec.crop_padding, spec.flip)
    with PeakMemory(device) as memory:
        net = build_net(variant, spec, config, generator, device)
        buffer = None
        if LEARNERS[method].uses_buffer:
            # Byte budget of `nominal` images; CLFD's features are a quarter of that each (4x the items).
            item = (3, spec.side // net.downsample, spec.side // net.downsample) if variant == "clfd" \
                else (spec.channels, spec.side, spec.side)
            buffer = ReservoirBuffer.from_bytes(nominal * spec.channels * spec.side ** 2 * 4, item)
        extra = {k: v for k, v in hyper.items() if k not in ("lr", "epochs")}
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
        "dataset": dataset, "stream": data.stream, "image_side": spec.side, "provenance": data.provenance,
        "hyperparameters": {**hyper, "epochs": epochs}, "torch_seed": seed, "torch_threads": torch.get_num_threads(),
        "peak_memory_source": "cuda allocator"
        if device.type == "cuda" else "process VmHWM growth",
        "class_il_matrix": _matrix(result.class_il), "task_il_matrix": _matrix(result.task_il),
    })


def _matrix(matrix: np.ndarray) -> list[list[float | None]]:
    """An accuracy matrix as JSON rows, None for tasks not yet seen."""
    return [[None if np.isnan(v) else round(float(v), 3) for v in row] for row in matrix]


def unit_config(config: dict, params: dict) -> dict:
    """The config a unit runs with: ``config`` updated by its profile's entries (``config["profiles"]``), if
    the unit has a ``profile`` (an artifact's timing units at the paper's widths and its learning units at
    smaller ones, say)."""
    profile = params.get("profile")
    return {**config, **config["profiles"][profile]} if profile else config


def cl_units(config: dict, variants: tuple[str, ...]) -> list[Unit]:
    """One unit per (dataset, buffer, method, variant, seed) of ``config``; buffer-free methods once per dataset
    and seed (of ``config["buffer_free_seeds"]`` only, if given).

    With ``config["profiles"]`` (name -> config entries), the units of each profile in turn, their ids
    prefixed with its name and their params holding it. Within a seed the methods and variants
    alternate, so a timed sweep interleaves the runs it compares.
    """
    if config.get("profiles"):
        return [Unit(f"{name}-{unit.id}", {**unit.params, "profile": name}) for name in config["profiles"]
                for unit in cl_units({**config, "profiles": None, **config["profiles"][name]}, variants)]
    units = []
    for dataset in config["datasets"]:
        short = dataset.removeprefix("seq-")
        for seed in config["seeds"]:
            for method in config.get("buffer_free", ()) if seed in config.get("buffer_free_seeds", [seed]) else ():
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
KEYS = ("dataset", "buffer", "method", "variant")
# A final class-IL accuracy counts as learned at FLOOR_FACTOR x that of a guess that knows only the last task.
FLOOR_FACTOR = 1.5


def seed_rows(records) -> pd.DataFrame:
    """One row per successful record: its ``KEYS``, ``seed`` and ``profile`` ("" when the unit has none)
    and the values of ``METRICS``."""
    return pd.DataFrame([{**{k: r.params[k] for k in (*KEYS, "seed")}, "profile": r.params.get("profile", ""),
                          **{m: r.value(m) for m in METRICS}} for r in records if r.status == "ok"])


def aggregate(records) -> pd.DataFrame:
    """Mean and standard deviation over seeds per (profile, dataset, buffer, method, variant); the
    profile column only when some unit has one."""
    rows = seed_rows(records)
    if rows.empty:
        return rows
    keys = (["profile"] if (rows["profile"] != "").any() else []) + list(KEYS)
    grouped = rows.groupby(keys, sort=True)
    table = grouped[list(METRICS)].mean()
    for name in ("class_il", "task_il"):
        table[f"{name}_std"] = grouped[name].std(ddof=0)
    table["seeds"] = grouped["seed"].count()
    return table.reset_index()


def _select(rows: pd.DataFrame, where: dict) -> pd.DataFrame:
    keep = np.ones(len(rows), dtype=bool)
    for key, value in where.items():
        keep &= (rows[key] == value).to_numpy()
    return rows[keep]


def stratum_name(key: tuple) -> str:
    """``("cifar10-subset", 50, "er")`` -> ``"cifar10-subset b50 er"``: a stratum's name in notes and samples."""
    return " ".join(f"b{v}" if isinstance(v, int | np.integer) else str(v) for v in key)


def paired_samples(rows: pd.DataFrame, column: str, new: dict, base: dict, combine, strata: tuple[str, ...],
                   statistic: str = "mean") -> Samples | None:
    """Per stratum, per seed: ``combine(new value, base value)`` of ``column``, the runs paired by seed.

    Parameters
    ----------
    rows : pd.DataFrame
        :func:`seed_rows`.
    new, base : dict
        The fields that select the two sides, e.g. ``{"variant": "clfd"}`` and ``{"variant": "plain"}``.
    combine : callable(np.ndarray, np.ndarray) -> np.ndarray
        The per-seed quantity: a gain ``new - base``, a speed-up ``base / new``, ...
    strata : tuple of str
        The columns that name a stratum (the settings the claim's statistic runs over).
    statistic : str
        :data:`reproduce.harness.stats.STATISTICS`.

    Returns
    -------
    Samples or None
        None when no seed has both sides.
    """
    joined = _select(rows, new).merge(_select(rows, base), on=[*strata, "seed"], suffixes=("_new", "_base"))
    if joined.empty:
        return None
    values = {}
    for key, group in joined.sort_values("seed").groupby(list(strata), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        values[stratum_name(key)] = [float(v) for v in combine(group[f"{column}_new"].to_numpy(),
                                                               group[f"{column}_base"].to_numpy())]
    return Samples(values, statistic)


def gain(new: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Points gained: ``new - base``."""
    return new - base


def cut(new: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Points saved (of a lower-is-better quantity such as forgetting): ``base - new``."""
    return base - new


def times_smaller(new: np.ndarray, base: np.ndarray) -> np.ndarray:
    """How many times ``new`` is below ``base`` (a speed-up, a memory ratio): ``base / new``."""
    return base / new


def ratio(new: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``new / base`` (a time or storage ratio)."""
    return new / base


def reduction_pct(new: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Percent of ``base`` that ``new`` saves: ``100 (1 - new / base)``."""
    return 100.0 * (1.0 - new / base)


def chance_floor(dataset: str) -> float:
    """The learning floor of a final class-IL accuracy (%) on ``dataset``'s stream: ``FLOOR_FACTOR`` x the
    accuracy of a guess that knows only the last task (100 / number of tasks; 20% on five tasks)."""
    return FLOOR_FACTOR * 100.0 / STREAMS[DATASET_STREAMS[dataset]].n_tasks


def reference_floor(rows: pd.DataFrame, reference: dict, strata: tuple[str, ...], what: str
                    ) -> tuple[str | None, str]:
    """Whether the reference model (``reference`` selects its runs) clears :func:`chance_floor` in every stratum.

    Returns
    -------
    withheld : str or None
        The ``not judged`` note (:func:`~reproduce.harness.sanity.below_floor`) of the strata whose mean
        class-IL over seeds is below the floor; None when every stratum clears it.
    report : str
        Every stratum's mean class-IL against its floor, for the artifact's notes.
    """
    below, levels = [], []
    for key, group in _select(rows, reference).groupby(list(strata), sort=True):
        name = stratum_name(key if isinstance(key, tuple) else (key,))
        dataset = group["dataset"].iloc[0]
        value, floor = float(group["class_il"].mean()), chance_floor(dataset)
        guess = 100.0 / STREAMS[DATASET_STREAMS[dataset]].n_tasks
        levels.append(f"{name} {value:.1f}% (floor {floor:.0f}% = {FLOOR_FACTOR:g} x {guess:g}%)")
        note = below_floor(f"{what} class-IL ({name}, mean of {len(group)} seeds)", value, floor,
                           f"{FLOOR_FACTOR:g} x the {guess:g}% of a guess that knows only the last task")
        if note:
            below.append(note)
    report = (f"{what} class-IL against the learning floor ({FLOOR_FACTOR:g} x the accuracy of a guess that knows "
              f"only the last task): {'; '.join(levels)}")
    return ("; ".join(below) or None), report


def describe(samples: Samples, digits: int = 2) -> str:
    """Per-seed values of each stratum, for notes: ``"er: 1.50, 1.62, 1.58"``."""
    return "; ".join(f"{name or 'all'}: {', '.join(f'{v:.{digits}f}' for v in values)}"
                     for name, values in samples.strata.items())
