"""The stages of one EGOR run: data, the task-1 detector, inversion, task-2 training, mAP.

A unit is one (class split, method, seed), or the generation-cost measurement of a split.
Stages that several units share are computed once and cached by config
(:func:`~reproduce.harness.paths.cached_weights`): the task-1 detector of a split and
seed, and the objects inverted from it. Each method then trains its own copy of the
expanded detector on the task-2 images and is evaluated with pycocotools on the
validation images, on old, new and all classes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from methods.detection import (
    AspectRatioSampler,
    CropCycle,
    DistillationConfig,
    GFLDetector,
    InversionConfig,
    Schedule,
    Targets,
    class_split,
    coco_map,
    crop_objects,
    evaluation_subset,
    expand_classes,
    gfl_detector,
    gfl_loss,
    incremental_loss,
    invert,
    is_finite,
    non_cooccurrence_split,
    optimizer_for,
    pad_batch,
    paste_objects,
    predict,
    resize_keep_ratio,
)
from reproduce.egor.data import CANVAS_SOURCES, DetectionSet, coco_sets, digit_canvas_sets
from reproduce.harness.data.datasets import fetch
from reproduce.harness.errors import DataError, ReproError
from reproduce.harness.memory import PeakMemory
from reproduce.harness.paths import cache_dir, cached_weights, config_key

DATA_FIELDS = ("dataset", "n_train", "n_val", "canvas", "digit_side")
MODEL_FIELDS = ("detector", "width", "image_scale")


class TrainingDivergedError(ReproError):
    """A loss became NaN or infinite; the message names the stage and the iteration."""


@dataclass
class Split:
    """The task split of one run: data sets and class bookkeeping."""

    train: DetectionSet
    val: DetectionSet
    task1: DetectionSet
    task2: DetectionSet
    old_ids: list[int]
    new_ids: list[int]

    @property
    def n_old(self) -> int:
        return len(self.old_ids)


def load_split(config: dict, n_old: int) -> Split:
    """The training and validation sets of ``config["dataset"]`` split into task 1 and task 2."""
    if config["dataset"] in CANVAS_SOURCES:
        train, val = digit_canvas_sets(config["dataset"], config["n_train"], config["n_val"], config["canvas"],
                                       config.get("data_seed", 0), tuple(config["digit_side"]))
    elif config["dataset"] == "coco2017":
        train, val = coco_sets(config.get("download", False))
    else:
        raise DataError(f"unknown detection dataset {config['dataset']!r}")
    old_ids, new_ids = class_split(train.coco["categories"], n_old)
    task1, task2 = non_cooccurrence_split(train.coco, old_ids, new_ids)
    return Split(train, val, train.subset(task1), train.subset(task2), old_ids, new_ids)


def _load(dataset: DetectionSet, record: dict, config: dict, generator: torch.Generator):
    image = dataset.image(record)
    boxes, labels = dataset.targets(record)
    if config.get("image_scale"):
        image, boxes, _ = resize_keep_ratio(image, boxes, tuple(config["image_scale"]))
    if config.get("flip", 0) and torch.rand((), generator=generator) < config["flip"]:
        width = image.shape[-1]
        image = image.flip(-1)
        boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    return image, boxes, labels


def batches(dataset: DetectionSet, config: dict, generator: torch.Generator, model: GFLDetector, *,
            crops: CropCycle | None = None, shuffle: bool = True):
    """One epoch of ``(images (B, 3, H, W), targets, replayed boxes, records)``, images padded to
    the largest stride; with ``crops``, generated objects are pasted into each image (EGOR)."""
    records = dataset.coco["images"]
    order = torch.randperm(len(records), generator=generator).tolist() if shuffle else range(len(records))
    order = list(order)
    crop_stream = iter(crops) if crops is not None else None
    for start in range(0, len(order), config["batch_size"]):
        images, targets, replayed, chosen = [], [], [], []
        for index in order[start:start + config["batch_size"]]:
            image, boxes, labels = _load(dataset, records[index], config, generator)
            pasted_boxes = boxes.new_zeros((0, 4))
            if crop_stream is not None:
                image, all_boxes, all_labels, n = paste_objects(image, boxes, labels, crop_stream, generator)
                pasted_boxes = all_boxes[len(all_boxes) - n:]
            images.append(image)
            targets.append(Targets(boxes, labels))
            replayed.append(pasted_boxes)
            chosen.append(records[index])
        yield pad_batch(images, max(model.strides), model.pixel_mean.flatten()), targets, replayed, chosen


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _to(targets: list[Targets], device) -> list[Targets]:
    return [Targets(t.boxes.to(device), t.labels.to(device)) for t in targets]


def train(model: GFLDetector, dataset: DetectionSet, config: dict, epochs: int, generator: torch.Generator,
          loss_fn, stage: str) -> list[float]:
    """SGD on ``loss_fn(images, targets, replayed) -> dict`` for ``epochs`` over ``dataset``; the loss per iteration."""
    per_epoch = max(1, math.ceil(len(dataset.coco["images"]) / config["batch_size"]))
    schedule = Schedule(epochs * per_epoch, config["batch_size"], base_lr=config.get("lr", 0.01),
                        warmup_iterations=config.get("warmup", 500))
    optimizer, scheduler = optimizer_for(model, schedule)
    device, history = _device(model), []
    model.train()
    for _epoch in range(epochs):
        for images, targets, replayed, _ in loss_fn.batches(generator):
            losses = loss_fn(images.to(device), _to(targets, device), [r.to(device) for r in replayed])
            if not is_finite(losses):
                values = {k: float(v.detach()) for k, v in losses.items()}
                raise TrainingDivergedError(f"{stage}: the loss diverged at iteration {len(history)} ({values}); "
                                            "lower the learning rate")
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            history.append(float(loss.detach()))
    return history


class _Objective:
    """A loss over batches of one dataset (optionally with replay), as :func:`train` calls it."""

    def __init__(self, dataset, config, model, loss, crops=None):
        self.dataset, self.config, self.model, self.loss, self.crops = dataset, config, model, loss, crops

    def batches(self, generator):
        return batches(self.dataset, self.config, generator, self.model, crops=self.crops)

    def __call__(self, images, targets, replayed):
        return self.loss(images, targets, replayed)


def untrained_detector(split: Split, config: dict, seed: int, device: torch.device) -> GFLDetector:
    """The task-1 detector of ``seed`` as initialised, before any training (with the ImageNet backbone
    for ``resnet50``): what its mAP is by chance, the reference of the learning floor."""
    torch.manual_seed(seed)
    model = gfl_detector(split.n_old, config["detector"], width=config.get("width", 16)).to(device)
    if config["detector"] == "resnet50":
        _load_imagenet_backbone(model, config.get("download", False))
    return model


def base_detector(split: Split, config: dict, seed: int, device: torch.device) -> tuple[GFLDetector, dict]:
    """The task-1 detector (old classes), trained once per config and seed and cached."""
    model = untrained_detector(split, config, seed, device)
    key = config_key({**config, "seed": seed, "n_old": split.n_old},
                     (*DATA_FIELDS, *MODEL_FIELDS, "n_old", "base_epochs", "batch_size", "lr", "seed"))
    stats = {}

    def fit():
        start = time.perf_counter()
        objective = _Objective(split.task1, config, model,
                               lambda x, t, _r: gfl_loss(model(x), t, model.reg_max)[0])
        train(model, split.task1, config, config["base_epochs"], torch.Generator().manual_seed(seed), objective,
              "task-1 training")
        stats["seconds"] = time.perf_counter() - start

    cached_weights(model, cache_dir("egor") / f"base-{key}.pt", fit)
    return model.eval(), stats


def _load_imagenet_backbone(model: GFLDetector, download: bool) -> None:
    """torchvision's ImageNet ResNet-50 weights (the paper's initialisation), checksum-verified."""
    path = fetch("resnet50_imagenet", download=download)["resnet50-0676ba61.pth"]
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    if missing or set(unexpected) - {"fc.weight", "fc.bias"}:
        raise DataError(f"{path} is not a torchvision ResNet-50 state dict (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}); delete it so it is fetched again.")


class GeneratedObjects(nn.Module):
    """Inverted images, their target boxes and labels, and what generating them cost (buffers, so cacheable)."""

    def __init__(self, n: int, resolution: int):
        super().__init__()
        self.register_buffer("images", torch.zeros(n, 3, resolution, resolution))
        self.register_buffer("boxes", torch.zeros(n, 4))
        self.register_buffer("labels", torch.zeros(n, dtype=torch.long))
        self.register_buffer("cost", torch.full((3,), float("nan")))  # seconds, peak MB, final loss

    def crops(self, generator: torch.Generator) -> CropCycle:
        return CropCycle(crop_objects(self.images, self.boxes), self.labels.tolist(), generator)


def inversion_config(config: dict) -> InversionConfig:
    return InversionConfig(**config.get("inversion", {}))


def generated_objects(model: GFLDetector, split: Split, config: dict, seed: int) -> GeneratedObjects:
    """``per_class`` objects per old class inverted from the task-1 detector (cached with it)."""
    settings = inversion_config(config)
    per_class = config["per_class"]
    objects = GeneratedObjects(per_class * split.n_old, settings.resolution)
    key = config_key({**config, "seed": seed, "n_old": split.n_old},
                     (*DATA_FIELDS, *MODEL_FIELDS, "n_old", "base_epochs", "batch_size", "lr", "seed", "inversion",
                      "per_class", "inversion_batch"))

    def generate():
        rng = np.random.default_rng(seed)
        ratios = {}
        for annotation in split.task1.coco["annotations"]:
            x, y, w, h = annotation["bbox"]
            if h > 0:
                ratios.setdefault(split.old_ids.index(annotation["category_id"]), []).append(w / h)
        sampler = AspectRatioSampler({k: np.asarray(v) for k, v in ratios.items()})
        labels = torch.arange(split.n_old).repeat_interleave(per_class)
        boxes = torch.from_numpy(np.stack([sampler.sample(int(label), settings.resolution, rng)
                                           for label in labels]))
        generator = torch.Generator().manual_seed(seed)
        device = _device(model)
        images, losses = [], []
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            for first in range(0, len(labels), config["inversion_batch"]):
                part = slice(first, first + config["inversion_batch"])
                batch, history = invert(model, labels[part].to(device), boxes[part].to(device), settings, generator)
                images.append(batch.cpu())
                losses.append(history[-1])
            seconds = time.perf_counter() - start
        objects.images.copy_(torch.cat(images))
        objects.boxes.copy_(boxes)
        objects.labels.copy_(labels)
        objects.cost.copy_(torch.tensor([seconds, memory.peak_mb, float(np.mean(losses))]))

    return cached_weights(objects, cache_dir("egor") / f"inverted-{key}.pt", generate)


def evaluate(model: GFLDetector, val: DetectionSet, category_ids: list[int], config: dict):
    """pycocotools mAP of ``model`` on ``val`` restricted to ``category_ids`` (class index k -> category_ids[k])."""
    model.eval()
    detections, device = [], _device(model)
    generator = torch.Generator().manual_seed(0)
    eval_config = {**config, "flip": 0}
    with torch.no_grad():
        for images, _targets, _r, records in batches(val, eval_config, generator, model, shuffle=False):
            for record, found in zip(records, predict(model(images.to(device)), model.reg_max), strict=True):
                factor = 1.0
                if config.get("image_scale"):
                    height, width = record["height"], record["width"]
                    scale = tuple(config["image_scale"])
                    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
                for box, score, label in zip(found.boxes.cpu() / factor, found.scores.cpu(), found.labels.cpu(),
                                             strict=True):
                    x1, y1, x2, y2 = box.tolist()
                    detections.append({"image_id": record["id"], "category_id": category_ids[int(label)],
                                       "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return coco_map(evaluation_subset(val.coco, category_ids), detections, category_ids)


def incremental_detector(method: str, base: GFLDetector, split: Split, config: dict, seed: int,
                         objects: GeneratedObjects | None) -> tuple[GFLDetector, list[float]]:
    """Train the expanded detector on task 2 with ``method``; returns it and the loss per iteration.

    The backbone's BatchNorm statistics are frozen during task 2 for every method, as the
    paper's (``norm_eval``; its ResNet-50 keeps ImageNet's); the small CPU backbone learned
    its statistics in task 1.
    """
    torch.manual_seed(seed)
    model = expand_classes(base, len(split.new_ids))
    model.backbone.norm_eval = True  # BatchNorm statistics stay those of task 1, as the paper's frozen BN do
    old = None if method == "finetune" else base.eval()
    generator = torch.Generator().manual_seed(seed + 1)
    crops = objects.crops(generator) if method == "egor" else None
    distill = DistillationConfig(**config.get("distillation", {}))

    def loss(images, targets, replayed):
        return incremental_loss(method, model, old, images, targets, replayed, split.n_old, distill)

    history = train(model, split.task2, config, config["incremental_epochs"], generator,
                    _Objective(split.task2, config, model, loss, crops), f"task-2 training ({method})")
    return model.eval(), history
