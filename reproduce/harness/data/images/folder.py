"""Images in class folders (``<root>/<split>/<class>/*.png``), such as the shared CIFAR-10 subset."""

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from reproduce.harness.data.datasets import file_digest
from reproduce.harness.data.images.common import ImageSet
from reproduce.harness.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


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
            "verified": False,  # a folder of images has no published checksum to compare with
            "notes": f"{len(files)} files; the digest is sha256 over '<relative path> <sha256>' lines in load order",
        },
    )
