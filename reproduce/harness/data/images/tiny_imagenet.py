"""Tiny ImageNet (200 classes of 64x64 images) read straight out of its zip archive."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from reproduce.harness.data.archives import open_zip
from reproduce.harness.data.images.common import ImageSet, provenance
from reproduce.harness.errors import DataError


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
                    provenance("Tiny ImageNet (Stanford CS231n)", [archive],
                               f"{split} split, classes in sorted wnid order"))
