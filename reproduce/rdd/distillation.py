"""RDD against progressive distillation and DDIM: sample quality at 1, 2, 4 and 8 steps (paper: abstract).

Shared by every unit of a run (trained once, cached by config; :func:`reproduce.diffusion_quality.load_or_train`):

- the teacher: an x0-predicting DDPM on the cosine schedule (``methods.diffusion.rdd``) trained
  on the scale's images on a ``base_steps`` grid;
- PD's ``rdd_from``-step student: progressive distillation of the teacher, halving its steps
  down to ``rdd_from`` (the public ``train_rdd.sh`` starts RDD from PD's 8-step model);
- RDD's feature classifier (the paper's DenseNet-201: a small CNN trained on the training images),
  and the proxy classifier whose features score the samples (a different network, trained on more
  digits: a model distilled on one network's features is not scored on that network's).

Per seed, three units (the seed draws the distillation batches and noise and the evaluation noise,
common to the three: every model of a seed samples from the same x_T):

- ``teacher``: the teacher sampled by DDIM at its own ``base_steps`` and at 8, 4, 2 and 1 steps;
  the proxy FID of noise images (the learning floor's yardstick);
- ``pd``: from PD's ``rdd_from``-step student, PD's halvings down to one step;
- ``rdd``: from the same student, the same halvings with RDD's relational objective
  (classifier-feature distillation, intra-sample and memory-queue pixel relations) instead of the
  PD loss (``pd_weight`` > 0 adds the PD loss back, ours).

Each unit records the FID (and IS, precision) of its samples at every step count and the
sampling time. Claims: at one step, RDD's FID is 1.47 lower than the best distillation
method's (here PD, the only one implemented), judged from the per-seed gains; the speed-up
over DDIM is the ratio of network evaluations (the DDIM teacher at ``base_steps`` over one
step), with the measured sampling-time ratio beside it. The gain is withheld when the teacher
or PD's one-step student is below its learning floor, or when a distilled model scores better
than the teacher it derives from (the metric is then unreliable at this scale).

- ``quick``: the 5,000 offline MNIST digits at 16 x 16, a 0.18 M-parameter UNet on a 32-step
  grid (800 training steps, cosine learning-rate decay), PD's 8-step student after two halvings,
  then three halvings per student and seed, each of 100 steps of 32 images; a **proxy** FID
  (500 samples; 256-d features of a classifier trained on 13,000 real digits) against 2,000 other
  digits of the shared MNIST test set; three seeds. RDD's feature classifier is a 32-channel CNN
  trained 10 epochs on the training digits: the paper's is an accurate network (DenseNet-201),
  and with 3 epochs (about 75% accurate) RDD's one-step FID was 11 points worse than PD's (per
  seed -17.4, +5.8, -21.4) where with 10 (86.5%) it is 11.9 better (+4.7, +18.7, +12.4): the
  gain rests on the classifier. The 256x speed-up needs a 256-step DDIM and is checked at full
  scale only.
- ``full``: CIFAR-10 at the public configs' sizes would need days on a GPU; the scale runs
  the protocol's shape (1024-step grid, 256-step DDIM, 10k steps per halving) with the FID
  Inception features, as far as a GPU allows.
- ``smoke``: an 8 x 8 UNet, a few steps; seconds.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from methods.diffusion import (
    RelationalDistillation,
    X0Model,
    distill_round,
    rdd_sample,
    rdd_train_base,
    tiny_unet,
)
from reproduce.diffusion_quality import (
    QualityData,
    Shared,
    accuracy,
    classifier_model,
    extract,
    feature_extractor,
    load_or_train,
    noise_images,
    proxy_model,
    quality_data,
    sample_quality,
    sanity_note,
)
from reproduce.harness.artifact import Artifact, Context, Outcome, Summary, Unit
from reproduce.harness.device import torch_threads
from reproduce.harness.paths import cache_dir, config_key
from reproduce.harness.records import Record, metric
from reproduce.harness.sanity import below_floor, better_than_source

STEPS = (8, 4, 2, 1)
MODEL_FIELDS = ("dataset", "side", "unet", "base_steps", "base_train_steps", "base_lr", "base_schedule", "batch_size")
START_FIELDS = (*MODEL_FIELDS, "round_steps", "round_batch", "round_lr", "rdd_from")
CLASSIFIER_FIELDS = ("dataset", "side", "classifier_width", "classifier_epochs")
# Learning floors (fractions of an FID): the teacher's FID at most this fraction of noise images'; PD's
# one-step student's at most this fraction of the teacher's own one-step DDIM (distillation must have
# learned more than plain one-step sampling of the teacher).
TEACHER_FLOOR = 0.1
STUDENT_FLOOR = 0.5
LABELS = {"teacher": "ddim (teacher)", "pd": "pd", "rdd": "rdd"}


def units(ctx: Context) -> list[Unit]:
    """``teacher``, ``pd`` and ``rdd`` per seed (``pd-s1``, ...). The first seed's RDD unit comes first (it trains
    the teacher, then PD's start), the teacher's evaluations next (they only need the teacher, so a second
    worker runs them while the first trains PD's start), then the other students."""
    seeds = ctx.config["seeds"]

    def unit(method: str, seed: int) -> Unit:
        return Unit(method + (f"-s{seed}" if seed else ""), {"method": method, "seed": seed})

    return ([unit("rdd", seeds[0])] + [unit("teacher", seed) for seed in seeds] + [unit("pd", seeds[0])]
            + [unit(method, seed) for seed in seeds[1:] for method in ("rdd", "pd")])


def _net(config: dict, channels: int) -> X0Model:
    unet = tiny_unet(sample_size=config["side"], in_channels=channels, **config["unet"], seed=0)
    return X0Model(unet, config["base_steps"])


def _teacher(config: dict, images: torch.Tensor, device) -> Shared:
    """The teacher: ``base_train_steps`` steps of :func:`rdd_train_base` (``base_lr``, ``base_schedule``)."""
    net = _net(config, images.shape[1]).to(device)
    return Shared(net, cache_dir("rdd") / f"teacher-{config_key(config, MODEL_FIELDS)}.pt",
                  lambda: rdd_train_base(net, images, config["base_steps"], steps=config["base_train_steps"],
                                         batch_size=config["batch_size"], lr=config["base_lr"],
                                         lr_schedule=config.get("base_schedule", "constant"),
                                         generator=torch.Generator().manual_seed(0)))


def _start(config: dict, teacher: X0Model, images: torch.Tensor, device) -> Shared:
    """PD's ``rdd_from``-step student, distilled from the (loaded) teacher by PD's halvings."""
    net = _net(config, images.shape[1]).to(device)

    def distil():
        chain = _chain(config, teacher, images, config["base_steps"], config["rdd_from"], None,
                       torch.Generator().manual_seed(0))
        net.load_state_dict(chain[config["rdd_from"]].state_dict())

    return Shared(net, cache_dir("rdd") / f"pd{config['rdd_from']}-{config_key(config, START_FIELDS)}.pt", distil)


def _classifier(config: dict, data: QualityData) -> Shared:
    """RDD's feature classifier: trained on the training images only (seed 1), unlike the proxy."""
    path = cache_dir("rdd") / f"classifier-{config_key(config, CLASSIFIER_FIELDS)}.pt"
    return classifier_model(data.train, data.train_labels, width=config["classifier_width"],
                            epochs=config["classifier_epochs"], path=path, seed=1)


def _chain(config, teacher: X0Model, images, start: int, stop: int, relational, generator) -> dict[int, X0Model]:
    """Halve ``start`` steps down to ``stop``: every student by its step count."""
    students, T = {}, start  # noqa: N806 - the paper's T
    while T > stop:
        student = copy.deepcopy(teacher).train()
        result = distill_round(teacher, student, images, T, steps=config["round_steps"],
                               batch_size=config["round_batch"], lr=config["round_lr"], generator=generator,
                               relational=relational)
        teacher, T = result.student.eval(), result.T  # noqa: N806
        students[T] = teacher
    return students


def run_unit(unit: Unit, ctx: Context) -> Outcome:
    with torch_threads(ctx.device, ctx.config.get("cpu_threads")):
        return _run(unit, ctx)


def _run(unit: Unit, ctx: Context) -> Outcome:
    config, method, seed = ctx.config, unit.params["method"], unit.params.get("seed", 0)
    device = torch.device(ctx.device.tag if ctx.device.kind == "cuda" else "cpu")
    data = quality_data(config)
    images = data.train.to(device)
    teacher = _teacher(config, images, device)
    proxy = [proxy_model(config, data)] if config["features"] == "proxy" else []
    classifier = _classifier(config, data)
    load_or_train(teacher, *proxy, classifier)  # whatever another worker is not training meanwhile
    teacher_net = teacher.module.eval()
    extractor, features = feature_extractor(config, data, device)
    # The seed's streams, common to its three units: the students' distillation draws and the evaluation x_T.
    distillation = torch.Generator().manual_seed(int(ctx.rng(f"distillation-s{seed}").integers(2**31)))
    evaluation = int(ctx.rng(f"evaluation-s{seed}").integers(2**31))
    base = config["base_steps"]
    if method == "teacher":
        models = {steps: (teacher_net, base) for steps in (base, *STEPS)}
    else:
        start = _start(config, teacher_net, images, device)
        load_or_train(start)
        relational = None if method == "pd" else RelationalDistillation(
            classifier.module.to(device), pd_weight=config["pd_weight"], seed=seed).to(device)
        students = _chain(config, start.module.eval(), images, config["rdd_from"], 1, relational, distillation)
        students[config["rdd_from"]] = start.module.eval()
        models = {steps: (students[steps], steps) for steps in STEPS if steps in students}
    reference = extract(extractor, data.reference)
    metrics, grids = {}, {}
    for steps, (net, grid) in sorted(models.items(), reverse=True):
        start_time = time.perf_counter()
        samples = rdd_sample(net, grid, steps, config["samples"], torch.Generator().manual_seed(evaluation),
                             batch_size=config["sample_batch"])
        seconds = time.perf_counter() - start_time
        quality = sample_quality(samples.images.cpu(), reference, extractor)
        metrics.update({f"fid_{steps}": metric(quality["fid"], "FID"), f"is_{steps}": metric(quality["is"], "IS"),
                        f"precision_{steps}": metric(quality["precision"], "%"),
                        f"sample_seconds_{steps}": metric(seconds, "s"), f"nfe_{steps}": metric(samples.nfe)})
        grids[steps] = samples.images[:16].add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).squeeze(1).tolist()
    if method == "teacher":  # the learning floor's yardstick: images of a model that learned nothing
        shape = tuple(data.reference.shape[1:])
        noise = noise_images(config["samples"], shape, torch.Generator().manual_seed(evaluation))
        metrics["noise_fid"] = metric(sample_quality(noise, reference, extractor)["fid"], "FID")
    if method == "rdd" and data.reference_labels is not None:
        metrics["classifier_accuracy"] = metric(accuracy(classifier.module, data.reference, data.reference_labels), "%")
    return Outcome(metrics=metrics, data={"features": features, "provenance": data.provenance, "sample_grids": grids})


def summarize(records: list[Record], ctx: Context) -> Summary:
    """Mean (and spread) over seeds per method and step count; RDD's one-step gain over PD per seed (paired);
    the learning floors and the metric's sanity decide whether the gain is judged."""
    ok = [r for r in records if r.status == "ok"]
    base = ctx.config["base_steps"]
    rows = pd.DataFrame([{"method": r.params["method"], "seed": r.params.get("seed", 0), "steps": steps,
                          **{name: r.value(f"{name}_{steps}") for name in ("fid", "is", "precision",
                                                                             "sample_seconds", "nfe")}}
                         for r in ok for steps in (base, *STEPS) if r.value(f"fid_{steps}") is not None])
    if rows.empty:
        return Summary(table=pd.DataFrame({"note": ["no successful unit"]}))
    grouped = rows.groupby(["method", "steps"], sort=False)
    table = grouped[["fid", "is", "precision", "sample_seconds"]].mean()
    table.insert(1, "fid_sd", grouped["fid"].std())
    table["seeds"] = grouped["seed"].count()
    table = table.reset_index()
    table["order"] = table["method"].map({name: k for k, name in enumerate(LABELS)})
    table = table.sort_values(["order", "steps"], ascending=[True, False]).drop(columns="order")
    table["method"] = table["method"].map(LABELS)
    table = table.reset_index(drop=True)
    fid = rows.pivot_table(index="seed", columns=["method", "steps"], values="fid")
    seeds = sorted(rows["seed"].unique().tolist())
    notes = [f"Features: {ok[0].data['features']}; {ctx.config['samples']} samples per step count (every model "
             f"of a seed from the same noise); teacher grid {base} steps; RDD and PD from PD's "
             f"{ctx.config['rdd_from']}-step student; seeds {seeds} (the table shows means and the FID's standard "
             "deviation over seeds)."]
    known = [r.value("classifier_accuracy") for r in ok if r.value("classifier_accuracy") is not None]
    if known:
        notes.append(f"RDD's feature classifier (a {ctx.config['classifier_width']}-channel CNN trained "
                     f"{ctx.config['classifier_epochs']} epochs on the training images, not the proxy): "
                     f"{known[0]:.1f}% accurate on the reference images.")
    measured, samples, withheld = {}, {}, {}
    if ("pd", 1) in fid and ("rdd", 1) in fid and ctx.scale != "smoke":
        gains = (fid["pd", 1] - fid["rdd", 1]).dropna()
        if not gains.empty:
            measured["fid-1step-gain"], samples["fid-1step-gain"] = float(gains.mean()), gains.tolist()
            notes.append(f"At one step, RDD's FID is {gains.mean():+.2f} below PD's (mean over seeds; per seed "
                         f"{', '.join(f'{g:+.2f}' for g in gains)}; FID {fid['rdd', 1].mean():.2f} vs "
                         f"{fid['pd', 1].mean():.2f}).")
    noise = [r.value("noise_fid") for r in ok if r.value("noise_fid") is not None]
    reasons = _floors(fid, base, float(np.mean(noise)) if noise else None, notes) + _sanity(fid, base, notes)
    if reasons and "fid-1step-gain" in measured:
        withheld["fid-1step-gain"] = "; ".join(reasons)
    ratio = _speedup(ok, base, notes)
    if ratio is not None and ctx.scale != "smoke":
        measured["speedup-vs-ddim"] = ratio
    return Summary(table=table, measured=measured, samples=samples, withheld=withheld, notes=notes,
                   figures=[("FID against sampling steps: mean and each seed", _plot(table, rows))])


def _floors(fid: pd.DataFrame, base: int, noise: float | None, notes: list[str]) -> list[str]:
    """The learning floors (means over seeds): the teacher against noise images (``noise``: their FID), PD's
    one-step student against the teacher's one-step DDIM; a note per floor and the reasons of those not cleared."""
    reasons = []
    if ("teacher", base) in fid and noise is not None:
        teacher = float(fid["teacher", base].mean())
        notes.append(f"Learning floor (teacher): its {base}-step FID {teacher:.2f} against noise images' "
                     f"{noise:.1f} (floor: at most {TEACHER_FLOOR:.0%} of noise's).")
        reasons.append(below_floor(f"the teacher's {base}-step FID reduction from noise images' (1 - FID / "
                                   "FID_noise)", 1.0 - teacher / noise, 1.0 - TEACHER_FLOOR,
                                   f"FID {teacher:.3g} against noise images' {noise:.3g}: a model that has learned "
                                   f"the images scores under {TEACHER_FLOOR:.0%} of noise's FID"))
    if ("pd", 1) in fid and ("teacher", 1) in fid:
        student, ddim = float(fid["pd", 1].mean()), float(fid["teacher", 1].mean())
        notes.append(f"Learning floor (PD's one-step student, the gain's baseline): its FID {student:.2f} against "
                     f"the teacher's one-step DDIM {ddim:.2f} (floor: at most {STUDENT_FLOOR:.0%} of it).")
        reasons.append(below_floor("PD's one-step FID reduction from the teacher's one-step DDIM (1 - FID_PD / "
                                   "FID_DDIM)", 1.0 - student / ddim, 1.0 - STUDENT_FLOOR,
                                   f"FID {student:.3g} against {ddim:.3g}: a distilled one-step model that has "
                                   f"learned scores under {STUDENT_FLOOR:.0%} of the undistilled one-step "
                                   "sampler's FID"))
    return [reason for reason in reasons if reason]


def _sanity(fid: pd.DataFrame, base: int, notes: list[str]) -> list[str]:
    """Metric sanity: a distilled model (PD or RDD, any step count) whose FID beats the teacher's at its own
    ``base`` steps, paired by seed, by more than the 95% interval of the difference; the notes of those that do."""
    if ("teacher", base) not in fid:
        return []
    reasons, closest = [], None
    for method, steps in fid.columns:
        if method == "teacher":
            continue
        paired = fid[[("teacher", base), (method, steps)]].dropna()
        reason = better_than_source(paired[method, steps].tolist(), paired["teacher", base].tolist(), "lower",
                                    f"{method} at {steps} steps")
        if reason:
            reasons.append(reason)
        if len(paired):
            gap, name = float((paired[method, steps] - paired["teacher", base]).mean()), f"{method} at {steps} steps"
            closest = min(closest or (gap, name, len(paired)), (gap, name, len(paired)))
    if closest is not None and not reasons:
        notes.append(sanity_note("distilled model", f"the teacher at {base} steps", closest))
    return reasons


def _speedup(ok: list[Record], base: int, notes: list[str]) -> float | None:
    """Network evaluations of the DDIM teacher at ``base`` steps over RDD's at one step (the same for every seed),
    with the measured sampling-time ratio (mean over seeds) in the notes."""
    teacher = {r.params.get("seed", 0): r for r in ok if r.params["method"] == "teacher"}
    rdd = {r.params.get("seed", 0): r for r in ok if r.params["method"] == "rdd"}
    both = sorted(set(teacher) & set(rdd))
    if not both:
        return None
    nfe = teacher[both[0]].value(f"nfe_{base}") / rdd[both[0]].value("nfe_1")
    times = [teacher[s].value(f"sample_seconds_{base}") / rdd[s].value("sample_seconds_1") for s in both]
    notes.append(f"DDIM at {base} steps against RDD at one: {nfe:.0f}x fewer network evaluations, "
                 f"{np.mean(times):.1f}x less measured sampling time (mean of {len(times)} seeds; units ran two at "
                 "a time, so the times are indicative).")
    return nfe


def _plot(table: pd.DataFrame, rows: pd.DataFrame):
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    for method, label in LABELS.items():
        means = table[table["method"] == label].sort_values("steps")
        if means.empty:
            continue
        line, = ax.plot(means["steps"], means["fid"], marker="o", label=label)
        seeds = rows[rows["method"] == method]
        ax.scatter(seeds["steps"], seeds["fid"], color=line.get_color(), s=8, alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("FID")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


MNIST = {"dataset": "mnist-offline", "features": "proxy", "proxy_width": 64, "proxy_epochs": 10,
         "classifier_width": 32, "classifier_epochs": 10, "side": 16, "batch_size": 64, "base_schedule": "cosine",
         "unet": {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8}, "rdd_from": 8,
         "pd_weight": 0.0, "cpu_threads": 1, "reference_images": 2000}

ARTIFACT = Artifact(
    paper="rdd",
    name="distillation",
    title="Sample quality of RDD, progressive distillation and DDIM at 1-8 steps, and the speed-up over DDIM",
    claims=("fid-1step-gain", "speedup-vs-ddim"),
    scales={
        "smoke": {**MNIST, "side": 8, "unet": {"block_out_channels": [8, 16], "layers_per_block": 1,
                                               "norm_num_groups": 4},
                  "base_steps": 16, "base_train_steps": 4, "base_lr": 1e-3, "round_steps": 2, "round_batch": 16,
                  "round_lr": 1e-4,
                  "proxy_width": 8, "proxy_epochs": 1, "classifier_width": 8, "classifier_epochs": 1,
                  "samples": 32, "sample_batch": 32, "reference_images": 64, "seeds": [0]},
        "quick": {**MNIST, "base_steps": 32, "base_train_steps": 800, "base_lr": 1e-3, "round_steps": 100,
                  "round_batch": 32, "round_lr": 2e-4, "samples": 500, "sample_batch": 250, "seeds": [0, 1, 2]},
        "full": {**MNIST, "dataset": "cifar10", "download": True, "features": "inception", "side": 32,
                 "unet": {"block_out_channels": [128, 256, 256, 256], "layers_per_block": 2},
                 "base_steps": 1024, "base_train_steps": 800_000, "base_lr": 2e-4, "base_schedule": "constant",
                 "classifier_width": 64, "classifier_epochs": 30, "batch_size": 128, "round_steps": 10_000,
                 "round_batch": 128, "round_lr": 5e-5, "samples": 5000, "sample_batch": 500, "reference_images": 10000,
                 "cpu_threads": None, "seeds": [0, 1, 2]},
    },
    needs={
        "smoke": "the offline MNIST digits and the shared MNIST test set; seconds.",
        "quick": "the offline MNIST digits and the shared MNIST test set in REPRO_DATA_DIRS; 9 single-threaded units "
                 "(3 seeds), ~6 min with two workers.",
        "full": "CIFAR-10 and the FID Inception weights (downloaded on first use) and a CUDA GPU for days.",
    },
    units=units,
    run_unit=run_unit,
    summarize=summarize,
)

if __name__ == "__main__":
    from reproduce.harness.cli import script_main

    raise SystemExit(script_main(ARTIFACT))
