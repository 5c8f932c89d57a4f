"""RDD against progressive distillation and DDIM: sample quality at 1, 2, 4 and 8 steps (paper: abstract).

Three units, run in order, each reusing its predecessor's model from the cache:

- ``teacher``: an x0-predicting DDPM on the cosine schedule (``methods.diffusion.rdd``) trained
  on the scale's images, sampled by DDIM at its own ``base_steps`` and at 8, 4, 2 and 1 steps;
- ``pd``: progressive distillation, halving the teacher's steps round by round down to one;
- ``rdd``: from PD's ``rdd_from``-step student, the same halvings with RDD's relational
  objective (classifier-feature distillation, intra-sample and memory-queue pixel relations)
  instead of the PD loss, as the public ``train_rdd.sh`` does for 8 -> 4 (``pd_weight`` > 0 adds
  the PD loss back, ours).

Each unit records the FID (and IS, precision) of its samples at every step count and the
sampling time. Claims: at one step, RDD's FID is 1.47 lower than the best distillation
method's (here PD, the only one implemented); the speed-up over DDIM is the ratio of
network evaluations (the DDIM teacher at ``base_steps`` over one step), with the measured
sampling-time ratio beside it.

- ``quick``: the 5,000 offline MNIST digits at 16 x 16, a 0.18 M-parameter UNet on a 64-step
  grid, 800 base steps and 150 steps per halving; a **proxy** FID from a classifier trained on
  the same digits (also RDD's feature classifier), against 2,000 digits of the shared MNIST
  test set. The 256x speed-up needs a 256-step DDIM and is checked at full scale only.
- ``full``: CIFAR-10 at the public configs' sizes would need days on a GPU; the scale runs
  the protocol's shape (1024-step grid, 256-step DDIM, 10k steps per halving) with the FID
  Inception features, as far as a GPU allows.
- ``smoke``: an 8 x 8 UNet, a few steps; seconds.
"""

from __future__ import annotations

import copy
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from methods.diffusion import (  # noqa: E402
    RelationalDistillation,
    X0Model,
    distill_round,
    rdd_sample,
    rdd_train_base,
    tiny_unet,
)
from reproduce.diffusion_quality import extract, feature_extractor, quality_data, sample_quality  # noqa: E402
from reproduce.harness.artifact import Artifact, Context, Outcome, Summary, Unit  # noqa: E402
from reproduce.harness.device import torch_threads  # noqa: E402
from reproduce.harness.paths import cache_dir, cached_weights, config_key  # noqa: E402
from reproduce.harness.records import Record, metric  # noqa: E402

STEPS = (8, 4, 2, 1)
MODEL_FIELDS = ("dataset", "side", "unet", "base_steps", "base_train_steps", "base_lr", "batch_size")


def units(ctx: Context) -> list[Unit]:
    return [Unit(name, {"method": name}) for name in ("teacher", "pd", "rdd")]


def _net(config: dict, channels: int) -> X0Model:
    unet = tiny_unet(sample_size=config["side"], in_channels=channels, **config["unet"], seed=0)
    return X0Model(unet, config["base_steps"])


def _cached(name: str, config: dict, fields: tuple[str, ...], build, channels: int, device) -> X0Model:
    """The model ``name`` from the cache, or the one ``build()`` returns, saved there (keyed by ``fields``)."""
    net = _net(config, channels).to(device)
    cached_weights(net, cache_dir("rdd") / f"{name}-{config_key(config, fields)}.pt",
                   lambda: net.load_state_dict(build().state_dict()))
    return net.eval()


def _chain(config, teacher: X0Model, images, start: int, stop: int, relational, generator, store: dict) -> X0Model:
    """Halve ``start`` steps down to ``stop``; every student is kept in ``store`` by its step count."""
    T = start  # noqa: N806 - the sheet's T
    while T > stop:
        student = copy.deepcopy(teacher).train()
        result = distill_round(teacher, student, images, T, steps=config["round_steps"],
                               batch_size=config["batch_size"], lr=config["round_lr"], generator=generator,
                               relational=relational)
        teacher, T = result.student.eval(), result.T  # noqa: N806
        store[T] = teacher
    return teacher


def run_unit(unit: Unit, ctx: Context) -> Outcome:
    with torch_threads(ctx.device, ctx.config.get("cpu_threads")):
        return _run(unit, ctx)


def _run(unit: Unit, ctx: Context) -> Outcome:
    config, method = ctx.config, unit.params["method"]
    device = torch.device(ctx.device.tag if ctx.device.kind == "cuda" else "cpu")
    data = quality_data(config)
    images, channels = data.train.to(device), data.train.shape[1]
    extractor, features = feature_extractor(config, data, device)
    generator = torch.Generator().manual_seed(0)

    def train_teacher():
        net = _net(config, channels).to(device)
        rdd_train_base(net, images, config["base_steps"], steps=config["base_train_steps"],
                       batch_size=config["batch_size"], lr=config["base_lr"], generator=generator)
        return net

    teacher = _cached("teacher", config, MODEL_FIELDS, train_teacher, channels, device)
    pd_fields = (*MODEL_FIELDS, "round_steps", "round_lr")
    pd_models: dict[int, X0Model] = {}
    if method == "teacher":
        models = {steps: (teacher, config["base_steps"]) for steps in (config["base_steps"], *STEPS)}
    else:
        start = _cached(f"pd{config['rdd_from']}", config, pd_fields, lambda: _chain(
            config, teacher, images, config["base_steps"], config["rdd_from"], None, generator, pd_models),
            channels, device)
        if method == "pd":
            _chain(config, start, images, config["rdd_from"], 1, None, generator, pd_models)
        else:
            relational = RelationalDistillation(extractor, pd_weight=config["pd_weight"]).to(device)
            _chain(config, start, images, config["rdd_from"], 1, relational, generator, pd_models)
        pd_models[config["rdd_from"]] = start
        models = {steps: (pd_models[steps], steps) for steps in STEPS if steps in pd_models}
    reference = extract(extractor, data.reference)
    metrics, grids = {}, {}
    for steps, (net, grid) in sorted(models.items(), reverse=True):
        start_time = time.perf_counter()
        samples = rdd_sample(net, grid, steps, config["samples"], torch.Generator().manual_seed(1),
                             batch_size=config["sample_batch"])
        seconds = time.perf_counter() - start_time
        quality = sample_quality(samples.images.cpu(), reference, extractor)
        metrics.update({f"fid_{steps}": metric(quality["fid"], "FID"), f"is_{steps}": metric(quality["is"], "IS"),
                        f"precision_{steps}": metric(quality["precision"], "%"),
                        f"sample_seconds_{steps}": metric(seconds, "s"), f"nfe_{steps}": metric(samples.nfe)})
        grids[steps] = samples.images[:16].add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).squeeze(1).tolist()
    return Outcome(metrics=metrics, data={"features": features, "provenance": data.provenance, "sample_grids": grids})


def summarize(records: list[Record], ctx: Context) -> Summary:
    ok = {r.params["method"]: r for r in records if r.status == "ok"}
    base = ctx.config["base_steps"]
    rows = []
    for method, record in ok.items():
        for steps in (base, *STEPS):
            if record.value(f"fid_{steps}") is not None:
                rows.append({"method": "ddim (teacher)" if method == "teacher" else method, "steps": steps,
                             "fid": record.value(f"fid_{steps}"), "is": record.value(f"is_{steps}"),
                             "precision": record.value(f"precision_{steps}"),
                             "sample_seconds": record.value(f"sample_seconds_{steps}")})
    table = pd.DataFrame(rows)
    if table.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful unit"]}))
    measured, notes = {}, [f"Features: {next(iter(ok.values())).data['features']}; {ctx.config['samples']} samples "
                           f"per step count; teacher grid {base} steps; RDD from PD's {ctx.config['rdd_from']}-step "
                           "student."]
    if "pd" in ok and "rdd" in ok and ctx.scale != "smoke":
        gain = ok["pd"].value("fid_1") - ok["rdd"].value("fid_1")
        measured["fid-1step-gain"] = gain
        notes.append(f"At one step, RDD's FID is {gain:+.2f} below PD's "
                     f"({ok['rdd'].value('fid_1'):.2f} vs {ok['pd'].value('fid_1'):.2f}).")
    if "teacher" in ok and "rdd" in ok and ctx.scale != "smoke":
        nfe_ratio = ok["teacher"].value(f"nfe_{base}") / ok["rdd"].value("nfe_1")
        time_ratio = ok["teacher"].value(f"sample_seconds_{base}") / ok["rdd"].value("sample_seconds_1")
        measured["speedup-vs-ddim"] = nfe_ratio
        notes.append(f"DDIM at {base} steps against RDD at one: {nfe_ratio:.0f}x fewer network evaluations, "
                     f"{time_ratio:.1f}x less measured sampling time.")
    return Summary(table=table, measured=measured, notes=notes,
                   figures=[("FID against sampling steps", _plot(table))])


def _plot(table: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for method, rows in table.groupby("method"):
        rows = rows.sort_values("steps")
        ax.plot(rows["steps"], rows["fid"], marker="o", label=method)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("FID")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


MNIST = {"dataset": "mnist-offline", "features": "proxy", "proxy_epochs": 3, "side": 16, "batch_size": 64,
         "unet": {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8}, "rdd_from": 8,
         "pd_weight": 0.0}

ARTIFACT = Artifact(
    paper="rdd",
    name="distillation",
    title="Sample quality of RDD, progressive distillation and DDIM at 1-8 steps, and the speed-up over DDIM",
    claims=("fid-1step-gain", "speedup-vs-ddim"),
    scales={
        "smoke": {**MNIST, "side": 8, "unet": {"block_out_channels": [8, 16], "layers_per_block": 1,
                                               "norm_num_groups": 4},
                  "base_steps": 16, "base_train_steps": 4, "base_lr": 1e-3, "round_steps": 2, "round_lr": 1e-4,
                  "proxy_epochs": 1, "samples": 32, "sample_batch": 32, "reference_images": 64},
        "quick": {**MNIST, "base_steps": 64, "base_train_steps": 800, "base_lr": 1e-3, "round_steps": 150,
                  "round_lr": 2e-4, "samples": 500, "sample_batch": 250, "reference_images": 2000},
        "full": {**MNIST, "dataset": "cifar10", "download": True, "features": "inception", "side": 32,
                 "unet": {"block_out_channels": [128, 256, 256, 256], "layers_per_block": 2},
                 "base_steps": 1024, "base_train_steps": 800_000, "base_lr": 2e-4, "batch_size": 128,
                 "round_steps": 10_000, "round_lr": 5e-5, "samples": 5000, "sample_batch": 500,
                 "reference_images": 10000},
    },
    needs={
        "smoke": "the offline MNIST digits and the shared MNIST test set; seconds.",
        "quick": "the offline MNIST digits and the shared MNIST test set in REPRO_DATA_DIRS; 3 units, ~12 min.",
        "full": "CIFAR-10 and the FID Inception weights (downloaded on first use) and a CUDA GPU for days.",
    },
    units=units,
    run_unit=run_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
