"""CIFAR-10 and CIFAR-100: the official binary archives, or the python ones (pickled batches, unpickled
only after the archive's checksum matched), read member by member without extraction."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reproduce.harness.data.archives import read_members
from reproduce.harness.data.datasets import fetch, locate, verify
from reproduce.harness.data.images.common import ImageSet, pick, provenance
from reproduce.harness.data.pickles import restricted_loads
from reproduce.harness.errors import DataError

CIFAR_SIDE = 32
CIFAR_PIXEL_BYTES = 3 * CIFAR_SIDE * CIFAR_SIDE


@dataclass(frozen=True)
class CifarPickles:
    """Layout of an official CIFAR python archive: pickled dicts of batches and class names."""

    archive: str
    folder: str
    splits: dict[str, tuple[str, ...]]
    meta: str
    label_keys: dict[str, tuple[str, str]]  # "fine"/"coarse" -> (labels key of a batch, names key of meta)


@dataclass(frozen=True)
class CifarArchive:
    """Layout of an official CIFAR binary archive (member names, record format) and its python twin."""

    dataset: str
    archive: str
    folder: str
    splits: dict[str, tuple[str, ...]]
    label_bytes: int
    label_sets: dict[str, tuple[str, int]]  # "fine"/"coarse" -> (class-names member, class count)
    pickled: CifarPickles


CIFAR_ARCHIVES = {
    "cifar10": CifarArchive(
        "cifar10",
        "cifar-10-binary.tar.gz",
        "cifar-10-batches-bin",
        {"train": tuple(f"data_batch_{index}.bin" for index in range(1, 6)), "test": ("test_batch.bin",)},
        label_bytes=1,
        label_sets={"fine": ("batches.meta.txt", 10)},
        pickled=CifarPickles(
            "cifar-10-python.tar.gz",
            "cifar-10-batches-py",
            {"train": tuple(f"data_batch_{index}" for index in range(1, 6)), "test": ("test_batch",)},
            "batches.meta",
            {"fine": ("labels", "label_names")},
        ),
    ),
    "cifar100": CifarArchive(
        "cifar100",
        "cifar-100-binary.tar.gz",
        "cifar-100-binary",
        {"train": ("train.bin",), "test": ("test.bin",)},
        label_bytes=2,
        label_sets={"fine": ("fine_label_names.txt", 100), "coarse": ("coarse_label_names.txt", 20)},
        pickled=CifarPickles(
            "cifar-100-python.tar.gz",
            "cifar-100-python",
            {"train": ("train",), "test": ("test",)},
            "meta",
            {"fine": ("fine_labels", "fine_label_names"), "coarse": ("coarse_labels", "coarse_label_names")},
        ),
    ),
}


def _cifar_records(data: bytes, label_bytes: int, coarse: bool, origin: str) -> tuple[np.ndarray, np.ndarray]:
    if coarse and label_bytes != 2:
        raise ValueError("coarse labels exist only in CIFAR-100 records (label_bytes=2)")
    record_bytes = label_bytes + CIFAR_PIXEL_BYTES
    if not data or len(data) % record_bytes:
        raise DataError(
            f"{origin} has {len(data)} bytes, not a whole number of {record_bytes}-byte CIFAR records; "
            "replace it with an intact copy."
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, record_bytes)
    label_column = 0 if coarse or label_bytes == 1 else 1
    planes = records[:, label_bytes:].reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)), records[:, label_column].astype(np.int64)


def read_cifar_binary(path: str | Path, *, label_bytes: int = 1, coarse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR binary batch file.

    Parameters
    ----------
    path : str or Path
        A batch such as ``data_batch_1.bin`` (CIFAR-10) or ``train.bin`` (CIFAR-100).
    label_bytes : {1, 2}
        1 for CIFAR-10 records (label, 3072 pixels), 2 for CIFAR-100 (coarse, fine, 3072).
    coarse : bool
        CIFAR-100 only: return the 20 coarse labels instead of the 100 fine ones.

    Returns
    -------
    images : np.ndarray
        uint8 ``(N, 32, 32, 3)`` RGB (the file stores R, G, B planes).
    labels : np.ndarray
        int64 ``(N,)``.
    """
    path = Path(path)
    return _cifar_records(path.read_bytes(), label_bytes, coarse, str(path))


def _class_names(text: bytes, expected: int, origin: str) -> list[str]:
    names = [line.strip() for line in text.decode("ascii", errors="replace").splitlines() if line.strip()]
    if len(names) != expected:
        raise DataError(f"{origin} lists {len(names)} class names, not {expected}; replace the archive.")
    return names


def read_cifar_archive(
    path: str | Path, name: str = "cifar10", split: str = "train", *, coarse: bool = False
) -> ImageSet:
    """Read a split straight out of an official CIFAR binary ``.tar.gz``.

    Only the expected members are read (every member checked, no extraction, no pickle).

    Parameters
    ----------
    path : str or Path
        ``cifar-10-binary.tar.gz`` or ``cifar-100-binary.tar.gz``.
    name : {"cifar10", "cifar100"}
    split : {"train", "test"}
        Training batches are concatenated in their official order.
    coarse : bool
        CIFAR-100 only: the 20 superclasses as labels and classes.

    Returns
    -------
    ImageSet
        images uint8 ``(N, 32, 32, 3)``; classes in official label order.
    """
    path = Path(path)
    layout = pick(CIFAR_ARCHIVES, name, "CIFAR dataset")
    batches = [f"{layout.folder}/{batch}" for batch in pick(layout.splits, split, "CIFAR split")]
    names_file, class_count = pick(layout.label_sets, "coarse" if coarse else "fine", f"{name} label set")
    names_member = f"{layout.folder}/{names_file}"
    members = read_members(path, {*batches, names_member})
    parts = [_cifar_records(members[batch], layout.label_bytes, coarse, f"{path}:{batch}") for batch in batches]
    classes = _class_names(members[names_member], class_count, names_member)
    return _cifar_set(path, parts, classes, f"{name.upper()} binary version", split, batches, coarse)


def _cifar_set(path: Path, parts: list[tuple[np.ndarray, np.ndarray]], classes: list[str], version: str, split: str,
               batches: list[str], coarse: bool) -> ImageSet:
    """The batches' ``(images, labels)`` concatenated in order, labels checked against ``classes``."""
    labels = np.concatenate([part[1] for part in parts])
    if labels.min() < 0 or labels.max() >= len(classes):
        raise DataError(f"{path} has labels beyond its {len(classes)} classes; replace it with the official archive.")
    return ImageSet(
        np.concatenate([part[0] for part in parts]),
        labels,
        classes,
        provenance(
            f"{version} (Krizhevsky, 2009)",
            [path],
            f"{split} split from members {', '.join(batches)}" + (", coarse labels" if coarse else ""),
        ),
    )


def _pickled_batch(batch: object, labels_key: str, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 32, 32, 3)`` and labels ``(N,)`` of one unpickled CIFAR python batch."""
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = np.asarray(batch.get(labels_key, ()) if isinstance(batch, dict) else ())
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == CIFAR_PIXEL_BYTES and labels.shape == data.shape[:1]
            and np.issubdtype(labels.dtype, np.integer)):
        raise DataError(
            f"{origin} is not a CIFAR batch (a dict with uint8 'data' of shape (N, {CIFAR_PIXEL_BYTES}) and N "
            f"integer {labels_key!r}); replace the archive with the official one."
        )
    planes = data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)), labels.astype(np.int64)


def read_cifar_python_archive(
    path: str | Path, name: str = "cifar10", split: str = "train", *, coarse: bool = False
) -> ImageSet:
    """Read a split out of an official CIFAR python ``.tar.gz`` (pickled batches, torchvision's copy).

    The archive's md5 is checked against the registry first (DataError if it differs, and
    nothing is unpickled); then only the expected members are read, every member of the
    archive checked, nothing extracted, each unpickled by
    :func:`~reproduce.harness.data.pickles.restricted_loads` (NumPy arrays and plain
    containers only).

    Parameters
    ----------
    path : str or Path
        ``cifar-10-python.tar.gz`` or ``cifar-100-python.tar.gz``.
    name : {"cifar10", "cifar100"}
    split : {"train", "test"}
        Training batches are concatenated in their official order.
    coarse : bool
        CIFAR-100 only: the 20 superclasses as labels and classes.

    Returns
    -------
    ImageSet
        As :func:`read_cifar_archive` returns it for the binary version of the same data.
    """
    path = Path(path)
    layout = pick(CIFAR_ARCHIVES, name, "CIFAR dataset").pickled
    verify(path, name, layout.archive)
    batches = [f"{layout.folder}/{batch}" for batch in pick(layout.splits, split, "CIFAR split")]
    labels_key, names_key = pick(layout.label_keys, "coarse" if coarse else "fine", f"{name} label set")
    meta_member = f"{layout.folder}/{layout.meta}"
    members = read_members(path, {*batches, meta_member})
    parts = [_pickled_batch(restricted_loads(members[b], f"{path}:{b}"), labels_key, f"{path}:{b}") for b in batches]
    meta = restricted_loads(members[meta_member], f"{path}:{meta_member}")
    names = meta.get(names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(class_name, str) for class_name in names):
        raise DataError(f"{path}:{meta_member} lacks the class names {names_key!r}; replace the archive.")
    return _cifar_set(path, parts, names, f"{name.upper()} python version", split, batches, coarse)


def load_cifar(name: str = "cifar10", split: str = "train", *, coarse: bool = False, download: bool = True) -> ImageSet:
    """The official CIFAR-10 or CIFAR-100 split (50,000 train / 10,000 test images).

    A verified local or cached copy of the binary version is read first, else one of the
    python version (torchvision's), else the binary version is fetched.

    Parameters
    ----------
    name : {"cifar10", "cifar100"}
    split : {"train", "test"}
    coarse : bool
        CIFAR-100 only: label by the 20 superclasses.
    download : bool
        Passed to :func:`~reproduce.harness.data.datasets.fetch`.

    Returns
    -------
    ImageSet
        images uint8 ``(N, 32, 32, 3)``, see :func:`read_cifar_archive`.
    """
    layout = pick(CIFAR_ARCHIVES, name, "CIFAR dataset")
    if locate(name, layout.archive) is None and (pickled := locate(name, layout.pickled.archive)) is not None:
        return read_cifar_python_archive(pickled, name, split, coarse=coarse)
    archive = fetch(name, [layout.archive], download=download)[layout.archive]
    return read_cifar_archive(archive, name, split, coarse=coarse)
