"""What the image-dataset loaders share: the :class:`ImageSet` they return, its provenance, the
choice of a split or variant by name, and the folder of a shared small image set."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reproduce.harness.data.datasets import DATA_DIRS_VARIABLE, file_digest, matches_published
from reproduce.harness.errors import DataError
from reproduce.harness.paths import env_dirs

# The class names of a digits set (MNIST, scikit-learn's digits), in label order.
DIGIT_CLASSES = [str(digit) for digit in range(10)]
SHARED_IMAGE_SETS = ("mnist", "cifar10", "coco2017_tiny")


@dataclass
class ImageSet:
    """Images with integer labels.

    Attributes
    ----------
    images : np.ndarray
        uint8, ``(N, H, W)`` grayscale or ``(N, H, W, 3)`` RGB.
    labels : np.ndarray
        int64, ``(N,)``, indices into ``classes``.
    classes : list of str
        Class names in label order.
    provenance : dict
        ``{"source": str, "files": {file name: sha256 hex}, "notes": str}``.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    provenance: dict

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim not in (3, 4):
            raise ValueError(f"images must be uint8 (N, H, W[, 3]), got {self.images.dtype} {self.images.shape}")
        if self.labels.dtype != np.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 ({len(self.images)},), got {self.labels.dtype} {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.labels)


def provenance(source: str, paths, notes: str) -> dict:
    """An :class:`ImageSet`'s ``provenance``: ``source``, each file of ``paths`` by name with its sha256,
    ``verified`` (every file has the published checksum of the registered file of its name:
    :func:`~reproduce.harness.data.datasets.matches_published`; False for bundled copies, which have
    none), and ``notes``."""
    paths = [Path(path) for path in paths]
    return {"source": source, "files": {path.name: file_digest(path) for path in paths},
            "verified": bool(paths) and all(matches_published(path) for path in paths), "notes": notes}


def pick(options: dict, key: str, what: str):
    """``options[key]``, or a DataError naming the ``what`` asked for and the choices."""
    try:
        return options[key]
    except KeyError:
        raise DataError(f"Unknown {what} {key!r}; choose one of {', '.join(options)}.") from None


def shared_image_set(name: str) -> Path:
    """The folder of a shared small image set (``mnist``, ``cifar10``, ``coco2017_tiny``).

    Searched as ``<dir>/<name>`` for each folder of ``$REPRO_DATA_DIRS``.
    """
    if name not in SHARED_IMAGE_SETS:
        raise DataError(f"Unknown shared image set {name!r}; choose one of {', '.join(SHARED_IMAGE_SETS)}.")
    for folder in env_dirs(DATA_DIRS_VARIABLE):
        if (folder / name).is_dir():
            return folder / name
    raise DataError(
        f"No folder of {DATA_DIRS_VARIABLE} contains {name}/; set {DATA_DIRS_VARIABLE} to the folder holding "
        "the shared image sets (../shared/data/images)."
    )
