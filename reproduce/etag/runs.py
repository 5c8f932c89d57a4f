"""One class-incremental run as a unit of work, shared by the eTag artifacts.

A unit is (dataset, first-task classes, number of later tasks, method, seed). It loads the
dataset's normalised tensors (:func:`reproduce.continual.load_stream`: the real files, the
bundled MNIST digits offline, optionally shrunk to ``config["side"]`` pixels, or a seeded
synthetic set at smoke scale), draws the class
order from the unit's seed (eTag's seed-dependent permutation: every method of one seed
learns the same order), builds the network and learner, and measures
:func:`methods.cl.incremental.train_incremental` with peak memory around it.

Methods: :data:`METHODS`, one entry per name of a config's ``methods`` list: a builder with the
shape every exemplar-free learner module provides, ``build(n_classes, width, channels, *, generator,
optim, **hyper) -> IncrementalLearner`` (the learner's ``.net`` is the network it infers with), and
the hyper-parameters it takes. ``etag`` and its ablation variants (``b0``-``b4`` of Table C.1, the
self-supervised tasks of Table C.2, the prototype and naive-KD variants of Table C.4, eTag on VGG-11 and
TinyViT of Table C.3: switches of :class:`methods.cl.etag.ETag` and its network, not other methods),
``finetune`` and ``lwf``
(:mod:`methods.cl.exemplar_free`), and the exemplar-free baselines of Table B.2: ``pass``, ``il2a``
and ``ssre`` (:mod:`methods.cl.prototype_methods`), ``fetril`` (:mod:`methods.cl.fetril`) and
``rdfcil`` (:mod:`methods.cl.rdfcil`); Table B.1's ``gfr`` (switches of :class:`methods.cl.etag.ETag`)
and ``der`` and ``foster`` (:mod:`methods.cl.der`, :mod:`methods.cl.foster`, which store
exemplars); the generative baselines of Table B.3, ``bir`` (:mod:`methods.cl.bir`) and ``gc``
(:mod:`methods.cl.generative_classifier`); the data-free ``abd`` of Tables B.3 and C.5
(:mod:`methods.cl.abd`) and Table C.5's ``podnet`` (:mod:`methods.cl.podnet`, which stores
exemplars). Every learner gets eTag's optimizer (Adam 1e-3, weight decay 2e-4, step decay), and the
ResNet-18s eTag's initialisation, so only the method differs.

The summaries' side: per-seed rows (:func:`seed_rows`), eTag's gain over a baseline per seed,
paired by seed (:func:`gain_samples`), and the learning floor a baseline must clear for a gain
over it to be judged (:func:`learning_floor`, :func:`reference_floor`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from methods.cl import (
    AdamSchedule,
    Augmentation,
    AuxiliaryResNet,
    FeatureCVAE,
    IncrementalLearner,
    abd,
    average_incremental_accuracy,
    bir,
    black_level,
    class_splits,
    count_parameters,
    fetril,
    foster,
    generative_classifier,
    podnet,
    rdfcil,
    table_c6_parameters,
    train_incremental,
)
from methods.cl import etag as etag_method
from methods.cl.aux_backbones import NETWORKS, AuxiliaryNet
from methods.cl.der import build as build_der
from methods.cl.exemplar_free import build_finetune, build_lwf
from methods.cl.prototype_methods import build_il2a, build_pass, build_ssre
from reproduce.continual import FLOOR_FACTOR, gain, load_stream, paired_samples
from reproduce.harness.artifact import Context, Outcome, Unit
from reproduce.harness.device import torch_threads
from reproduce.harness.memory import PeakMemory
from reproduce.harness.records import Record, metric
from reproduce.harness.sanity import below_floor
from reproduce.harness.stats import Samples

Builder = Callable[..., IncrementalLearner]
"""``build(n_classes, width, channels, *, generator, optim, **hyper) -> IncrementalLearner``."""


@dataclass(frozen=True)
class Method:
    """One row of the eTag tables: how its learner is built.

    Attributes
    ----------
    build : Builder
        Called with the stream's classes, the config's ``width``, the input channels, the unit's
        ``generator`` (a seeded CPU ``torch.Generator``), eTag's optimizer and the hyper-parameters.
    switches : mapping
        Fixed keyword arguments of ``build`` that make this row (an ablation's switches).
    config_keys : tuple of str
        Config keys passed to ``build`` as keyword arguments when the scale sets them (eTag's
        generator epochs, learning rate and replayed batch). A config's ``hyper`` mapping,
        ``{method: {keyword: value}}``, adds or overrides any for one method.
    """

    build: Builder
    switches: Mapping[str, Any] = field(default_factory=dict)
    config_keys: tuple[str, ...] = ()


ETAG_KEYS = ("generator_epochs", "generator_lr", "synthetic_batch")


def etag_variant(**switches) -> Method:
    """eTag with the given :class:`~methods.cl.etag.ETag` switches (``self_supervision``, ``distillation``,
    ``generation``) or backbone (``network``, :data:`methods.cl.aux_backbones.NETWORKS`); none: eTag itself."""
    return Method(etag_method.build, switches, ETAG_KEYS)


# Name in a config's ``methods`` -> its row. A new exemplar-free baseline is one entry:
# ``"name": Method(module.build)``.
METHODS: dict[str, Method] = {
    "etag": etag_variant(),
    "finetune": Method(build_finetune),
    "lwf": Method(build_lwf),
    # Table B.2's exemplar-free baselines.
    "pass": Method(build_pass),
    "il2a": Method(build_il2a),
    "ssre": Method(build_ssre),
    "fetril": Method(fetril.build),
    "rdfcil": Method(rdfcil.build),
    # Table B.1's baselines with an exemplar memory.
    "foster": Method(foster.build),
    # Table B.3's and C.5's data-free ABD; Table C.5's PodNet (20 herded exemplars per class).
    "abd": Method(abd.build),
    "podnet": Method(podnet.build),
    # Table B.3's generative baselines.
    "bir": Method(bir.build),
    "gc": Method(generative_classifier.build),
    # Table C.1: GE task-oriented / naive, KD embedding / naive, self-supervision (SS) on / off.
    "b0": etag_variant(self_supervision="none"),
    "b1": etag_variant(generation="naive", distillation="logit", self_supervision="none"),
    "b2": etag_variant(distillation="logit", self_supervision="none"),
    "b3": etag_variant(generation="naive"),
    "b4": etag_variant(generation="naive", self_supervision="none"),
    # Table C.2: the self-supervised task.
    "ss-jigsaw": etag_variant(self_supervision="jigsaw"),
    "ss-colorperm": etag_variant(self_supervision="colorperm"),
    # Table C.4: embedding / naive KD with task-oriented generation or PASS's fixed prototypes.
    "epass": etag_variant(generation="prototype"),
    "a": etag_variant(distillation="logit"),
    "b": etag_variant(distillation="logit", generation="prototype"),
    # Table B.1's baselines: GFR (distillation of the pooled features, eTag's conditional VAE without the
    # classifier terms, no auxiliary head, no self-supervision: switches of the same learner) and DER (with exemplars).
    "gfr": etag_variant(distillation="feature", generation="naive", self_supervision="none"),
    "der": Method(build_der),
    # Table C.3: eTag on other backbones (methods.cl.aux_backbones).
    "etag-vgg11": etag_variant(network=NETWORKS["vgg11"]),
    "etag-tinyvit5m": etag_variant(network=NETWORKS["tinyvit-5m"]),
    "etag-tinyvit11m": etag_variant(network=NETWORKS["tinyvit-11m"]),
}
# The smoke scale of every eTag artifact: a seeded synthetic set and a width-4 network, one epoch each.
SMOKE = {"train_per_class": 8, "test_per_class": 4, "width": 4, "epochs": 1, "generator_epochs": 1, "batch_size": 32,
         "synthetic_batch": 16, "seeds": [0], "cpu_threads": 1,
         "hyper": {"rdfcil": {"inversion_steps": 2, "inversion_batch": 8, "generator_width": 8, "latent": 16,
                              "finetune_epochs": 1},
                   "der": {"memory_size": 40},
                   "abd": {"inversion_steps": 2, "inversion_batch": 8, "generator_width": 8, "latent": 16},
                   "bir": {"hidden": 32, "latent": 8}, "gc": {"hidden": 16, "latent": 4, "samples": 16}}}
# The quick scale of the tables set in equal tasks (C.1-C.4, and B.1's stand-in): the bundled MNIST digits at
# 16 px in 2 + 4 x 2 classes, 100 training and 50 test digits per class, a width-8 network, three seeds.
# Batch 8 gives 50 optimizer steps per epoch of a two-digit task: at 32, eTag learned no new task.
QUICK_EQUAL_TASKS = {"side": 16, "train_per_class": 100, "test_per_class": 50, "width": 8, "epochs": 4,
                     "generator_epochs": 15, "generator_lr": 1e-3, "batch_size": 8, "synthetic_batch": 8,
                     "lr_decay_step": 3, "seeds": [0, 1, 2], "cpu_threads": 1}
MIB = 2**20


def memory_budget_mb(net: torch.nn.Module, cvae: FeatureCVAE | None) -> float:
    """What a method keeps from one task to the next, in MiB of float32 (Table C.6's "memory budget").

    Our reading of Table C.6: the network used at inference (backbone and classifier, not
    eTag's training-only auxiliary heads) plus, for eTag, the generator's decoder, which
    must be kept to draw old-class features. Joint/Fine's 42.80 MB is exactly 11.22 M
    float32 parameters; eTag's 45.38 MB matches ResNet-18 + decoder to 0.02 MB.
    """
    kept = net.backbone if isinstance(net, AuxiliaryResNet | AuxiliaryNet) else net
    parameters = count_parameters(kept) + (0 if cvae is None else count_parameters(cvae.decoder))
    return 4 * parameters / MIB


def build_learner(method: str, n_classes: int, width: int, channels: int, config: dict,
                  generator: torch.Generator) -> IncrementalLearner:
    """The learner of ``method`` (:data:`METHODS`) with eTag's optimizer (``config["lr_decay_step"]``)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    entry = METHODS[method]
    hyper = {**entry.switches, **{k: config[k] for k in entry.config_keys if k in config},
             **config.get("hyper", {}).get(method, {})}
    return entry.build(n_classes, width, channels, generator=generator,
                       optim=AdamSchedule(decay_step=config["lr_decay_step"]), **hyper)


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
                       config.get("test_per_class"), config.get("side"))
    spec = data.spec
    n_classes = int(data.train_y.max()) + 1
    order = np.random.default_rng(params["seed"]).permutation(n_classes)
    splits = class_splits(n_classes, params["first"], params["tasks"], order)
    device = torch.device(ctx.device.tag if ctx.device.kind == "cuda" else "cpu")
    torch.manual_seed(params["seed"])
    generator = torch.Generator().manual_seed(params["seed"])
    method = params["method"]
    with PeakMemory(device) as memory:
        with device:  # the learner's modules are created on the unit's device
            learner = build_learner(method, n_classes, config["width"], spec.channels, config, generator)
        net = learner.net
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
        # Stored exemplars count as 8-bit images, as Table C.6 counts IL2M's and Lucir's (table_c6).
        "memory_budget_mb": metric(memory_budget_mb(net, cvae)
                                   + learner.stored_exemplars * data.train_x[0].numel() / MIB, "MB"),
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
    unknown = [m for m in config["methods"] if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; register them in reproduce/etag/runs.py METHODS "
                         f"({', '.join(METHODS)})")
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


def setting_name(dataset: str, first: int, tasks: int) -> str:
    """``("seq-cifar100", 50, 5)`` -> ``"cifar100 50+5"``: a setting's name in tables, notes and samples."""
    return f"{dataset.removeprefix('seq-')} {first}+{tasks}"


def guess_accuracy(task_sizes: list[int]) -> np.ndarray:
    """Accuracy (%) after each step of a guess that knows only the newest task, ``(T,)``.

    At step ``t`` it picks uniformly among the ``n_t`` classes of task ``t``: on a class-balanced
    test set it is right on ``(n_t / N_t) (1 / n_t) = 1 / N_t`` of the rows of the ``N_t`` seen
    classes. Fine-tuning on one-class tasks scores exactly this after the first task (it predicts
    the newest class for every row).
    """
    return 100.0 / np.cumsum(task_sizes)


def learning_floor(task_sizes: list[int]) -> float:
    """The least average incremental accuracy A (%) at which a model has learned enough for a gain over it
    to mean something: ``FLOOR_FACTOR`` x the A of :func:`guess_accuracy` (14.1% on 5 + 5 x 1 classes,
    so a floor of 21.1%)."""
    return FLOOR_FACTOR * average_incremental_accuracy(guess_accuracy(task_sizes))


def seed_rows(records: list[Record]) -> pd.DataFrame:
    """One row per successful record: setting, method, seed, :data:`METRICS`, the task sizes, the
    accuracy (%) on each task after the last step (``final_row``, ``(T,)``), on each task after the
    first right after learning it (``new_task_accuracy``: the mean of the task matrix's diagonal
    after its first entry; NaN for a single task), and how many of the steps after the first
    scored 100% on the newest task and 0% on every older one (``newest_only_steps``,
    :func:`newest_only_steps`)."""
    rows = []
    for r in records:
        if r.status != "ok":
            continue
        matrix = np.array(r.data["task_accuracy"], dtype=float)
        diagonal = np.diagonal(matrix)[1:]
        rows.append({**{k: r.params[k] for k in ("dataset", "first", "tasks", "method", "seed")},
                     "setting": setting_name(r.params["dataset"], r.params["first"], r.params["tasks"]),
                     **{m: r.value(m) for m in METRICS}, "first_task_accuracy": float(matrix[0, 0]),
                     "new_task_accuracy": float(diagonal.mean()) if diagonal.size else float("nan"),
                     "newest_only_steps": newest_only_steps(matrix),
                     "final_row": matrix[-1].tolist(), "task_sizes": [len(s) for s in r.data["splits"]]})
    return pd.DataFrame(rows)


def newest_only_steps(task_accuracy: np.ndarray) -> int:
    """Steps ``t >= 1`` after which the accuracy was 100% on task ``t`` and 0% on every task before it.

    ``task_accuracy`` is the ``(T, T)`` matrix of :class:`~methods.cl.incremental.IncrementalResult`.
    The seen accuracy is then ``100 n_t / N_t``, that of predicting the newest task's classes for every
    test row (on one-class tasks, the newest class), whatever the method kept of the old classes'
    logits among themselves.
    """
    return sum(1 for t in range(1, len(task_accuracy))
               if task_accuracy[t, t] == 100.0 and np.all(task_accuracy[t, :t] == 0.0))


def collapse_notes(rows: pd.DataFrame) -> list[str]:
    """Notes on methods that ended some step predicting only the newest task (:func:`newest_only_steps`).

    One note per method with such steps, and one per pair of methods whose every later step did so in
    every seed with the same first-task accuracy per seed: their A, final accuracy and forgetting are
    then set by the first task alone and coincide.
    """
    notes, whole = [], {}
    for method, group in rows.groupby("method", sort=True):
        later = int(sum(len(sizes) - 1 for sizes in group["task_sizes"]))
        collapsed = int(group["newest_only_steps"].sum())
        if collapsed:
            notes.append(f"{method}: after {collapsed} of its {later} steps after the first task (all seeds), 100% on "
                         "the newest task and 0% on every older one: the seen-class argmax picked the newest task's "
                         "classes for every test row (seen accuracy 100 n_t / N_t).")
        if later and collapsed == later:
            whole[method] = group.set_index(["setting", "seed"])["first_task_accuracy"]
    names = sorted(whole)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if whole[first].sort_index().equals(whole[second].sort_index()):
                notes.append(f"{first} and {second} predicted only the newest task after every later step in every "
                             "seed and reached the same first-task accuracy per seed, so their A, final accuracy and "
                             "forgetting coincide: they are set by the first task alone (docs/papers/etag.md, "
                             "'LwF and fine-tuning on one-class tasks').")
    return notes


def aggregate(records: list[Record]) -> pd.DataFrame:
    """Mean over seeds per (setting, method), with the standard deviation of A and the seeds."""
    rows = seed_rows(records)
    if rows.empty:
        return rows
    grouped = rows.groupby(["setting", "method"], sort=True)
    table = grouped[[*METRICS, "first_task_accuracy", "new_task_accuracy"]].mean()
    table["A_std"] = grouped["average_incremental_accuracy"].std(ddof=0)
    table["seeds"] = grouped["seed"].count()
    return table.reset_index()


def gain_samples(rows: pd.DataFrame, baseline: str, statistic: str = "min", method: str = "etag") -> Samples | None:
    """``method``'s A minus ``baseline``'s per seed (the runs of one seed share the class order), one stratum
    per setting; ``statistic`` over settings. None when no seed has both."""
    return paired_samples(rows, "average_incremental_accuracy", {"method": method}, {"method": baseline}, gain,
                          ("setting",), statistic)


def claim_samples(rows: pd.DataFrame, claims: Mapping[tuple[str, str], str],
                  column: str = "average_incremental_accuracy") -> dict[str, Samples]:
    """``{claim: per-seed values of column}`` for each ``(setting, method)`` of ``claims`` that ``rows`` measured."""
    drawn = {}
    for (setting, method), claim in claims.items():
        values = method_samples(rows, method, column).get(setting)
        if values:
            drawn[claim] = Samples.of(values)
    return drawn


def published_references(rows: pd.DataFrame, published: Mapping[tuple[str, str], str],
                         judged: Mapping[tuple[str, str], str]) -> tuple[dict[str, Samples], dict[str, str]]:
    """The rows a paper copies from other papers (Table B.2's †), shown beside our measurement, not judged.

    ``published`` and ``judged`` map ``(setting, method)`` to the copied number's claim and to the
    authors' re-run's claim. Returns the samples of each copied claim (the same runs as the re-run's)
    and the reason each is withheld.
    """
    drawn = claim_samples(rows, published)
    reasons = {claim: f"the appendix copies this number from the method's own paper (its protocol may differ): "
                      f"shown beside our runs as that paper's reference, not judged; the authors' re-run in the "
                      f"same setting, {judged[key]}, is the one judged"
               for key, claim in published.items() if claim in drawn}
    return drawn, reasons


def final_rows(rows: pd.DataFrame) -> str:
    """Each method's accuracy (%) on each task after the last step, mean over seeds, per setting: for notes."""
    parts = []
    for (name, method), group in rows.groupby(["setting", "method"], sort=True):
        mean = np.mean(np.stack(group["final_row"].to_numpy()), axis=0)
        parts.append(f"{name} {method}: {', '.join(f'{v:.1f}' for v in mean)}")
    return "; ".join(parts)


def per_seed(rows: pd.DataFrame, column: str) -> str:
    """``column`` of each method's runs in seed order, per setting (``"setting method: v0, v1; ..."``): for notes."""
    parts = []
    for (name, method), group in rows.groupby(["setting", "method"], sort=True):
        values = group.sort_values("seed")[column]
        parts.append(f"{name} {method}: {', '.join(f'{v:.2f}' for v in values)}")
    return "; ".join(parts)


def method_samples(rows: pd.DataFrame, method: str, column: str) -> dict[str, list[float]]:
    """``column`` of ``method``'s runs per setting, in seed order: ``{setting: [value per seed]}``."""
    chosen = rows[rows["method"] == method].sort_values("seed")
    return {name: [float(v) for v in group[column]] for name, group in chosen.groupby("setting", sort=True)}


def reference_floor(rows: pd.DataFrame, baseline: str) -> tuple[str | None, str]:
    """Whether ``baseline`` clears :func:`learning_floor` in every setting (its A, mean over seeds).

    Returns
    -------
    withheld : str or None
        The ``not judged`` note (:func:`~reproduce.harness.sanity.below_floor`) of the settings below
        the floor; None when every setting clears it.
    report : str
        Each setting's mean A against its floor, for the artifact's notes.
    """
    below, levels = [], []
    for name, group in rows[rows["method"] == baseline].groupby("setting", sort=True):
        sizes = group["task_sizes"].iloc[0]
        value, floor = float(group["average_incremental_accuracy"].mean()), learning_floor(sizes)
        guess = average_incremental_accuracy(guess_accuracy(sizes))
        levels.append(f"{name}: {value:.2f}% (floor {floor:.2f}%)")
        note = below_floor(f"{baseline}'s A ({name}, mean of {len(group)} seeds)", value, floor,
                           f"{FLOOR_FACTOR:g} x the {guess:.2f}% of a guess that knows only the newest task")
        if note:
            below.append(note)
    return ("; ".join(below) or None), f"{baseline}'s A against the learning floor: {'; '.join(levels)}"
