"""Detection data of the EGOR artifact: COCO 2017 (full) and real digits composed on canvases (quick, smoke).

Every set is a COCO-format dict (``images``, ``annotations`` with ``[x, y, w, h]`` boxes,
``categories``) plus the pixels, so the split of
:func:`methods.detection.protocol.non_cooccurrence_split` and pycocotools' evaluator run
unchanged on all scales.

- ``coco2017``: the official train2017/val2017 images and instances files
  (:func:`coco_root` finds them extracted in a folder of ``$REPRO_DATA_DIRS`` or the
  cache, or downloads and extracts the official zips with their checksums).
- ``mnist-canvas``: real MNIST test digits (the official IDX files; offline in the shared
  data) drawn in colour on noisy canvases, 1-3 digits each, categories 1-10 for digits
  0-9. Training canvases use the first 8,000 digits, validation canvases the last 2,000,
  so no digit image is in both.
- ``digits-canvas``: the same from scikit-learn's bundled 8x8 digits (smoke scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from reproduce.harness.data.datasets import fetch
from reproduce.harness.data.images import load_mnist, offline_digits
from reproduce.harness.errors import DataError

CANVAS_SOURCES = ("mnist-canvas", "digits-canvas")


@dataclass
class DetectionSet:
    """Images and boxes in COCO format with a way to read each image.

    Attributes
    ----------
    coco : dict
        COCO instances dict of this set.
    category_ids : list of int
        All category ids in class-index order (index ``k`` is ``category_ids[k]``).
    pixels : dict of int to tensor, or None
        In-memory uint8 ``(3, H, W)`` images by image id (canvases), else None.
    folder : Path or None
        Where ``file_name`` of each image record lies (COCO).
    provenance : dict
    """

    coco: dict
    category_ids: list[int]
    pixels: dict[int, torch.Tensor] | None
    folder: Path | None
    provenance: dict

    def subset(self, coco: dict) -> DetectionSet:
        """The same images source with another COCO dict (a task split)."""
        return DetectionSet(coco, self.category_ids, self.pixels, self.folder, self.provenance)

    def image(self, record: dict) -> torch.Tensor:
        """Image ``record``'s pixels as float ``(3, H, W)`` in [0, 1]."""
        if self.pixels is not None:
            return self.pixels[record["id"]].float() / 255
        from PIL import Image

        path = self.folder / record["file_name"]
        try:
            with Image.open(path) as opened:
                array = np.asarray(opened.convert("RGB"))
        except OSError as error:
            raise DataError(f"cannot read image {path} ({error}); replace it with an intact copy.") from None
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255

    def targets(self, record: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Non-crowd boxes ``(K, 4)`` as ``[x1, y1, x2, y2]`` and class indices ``(K,)`` of an image."""
        return self._by_image().get(record["id"], (torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long)))

    def _by_image(self):
        if getattr(self, "_index", None) is None:
            index_of = {c: k for k, c in enumerate(self.category_ids)}
            grouped: dict[int, list] = {}
            for a in self.coco["annotations"]:
                x, y, w, h = a["bbox"]
                if a.get("iscrowd", 0) or w < 1 or h < 1:
                    continue
                grouped.setdefault(a["image_id"], []).append(([x, y, x + w, y + h], index_of[a["category_id"]]))
            self._index = {image: (torch.tensor([b for b, _ in items], dtype=torch.float32),
                                   torch.tensor([c for _, c in items], dtype=torch.long))
                           for image, items in grouped.items()}
        return self._index


def _digit_canvases(digits: np.ndarray, labels: np.ndarray, n: int, size: int, rng: np.random.Generator,
                    id_offset: int, per_canvas: tuple[int, int], side: tuple[int, int]):
    """``n`` canvases of ``size`` px with 1-3 coloured digits each; COCO image and annotation records."""
    images, annotations, pixels = [], [], {}
    for k in range(n):
        image_id = id_offset + k
        canvas = rng.uniform(0, 0.35, (3, 1, 1)) + rng.normal(0, 0.05, (3, size, size))
        boxes = []
        for _ in range(rng.integers(per_canvas[0], per_canvas[1] + 1)):
            index = rng.integers(len(digits))
            extent = int(rng.integers(side[0], side[1] + 1))
            for _attempt in range(20):
                x, y = (int(v) for v in rng.integers(0, size - extent + 1, 2))
                if all(x + extent <= bx or bx + bw <= x or y + extent <= by or by + bh <= y
                       for bx, by, bw, bh in boxes):
                    break
            else:
                continue
            glyph = torch.from_numpy(digits[index].astype(np.float32) / 255)[None, None]
            alpha = F.interpolate(glyph, size=(extent, extent), mode="bilinear", align_corners=False)[0, 0].numpy()
            color = rng.uniform(0.55, 1.0, (3, 1, 1))
            region = canvas[:, y:y + extent, x:x + extent]
            canvas[:, y:y + extent, x:x + extent] = (1 - alpha) * region + alpha * color
            rows, cols = np.nonzero(alpha > 0.2)
            if rows.size == 0:
                continue
            box = [x + int(cols.min()), y + int(rows.min()), int(cols.max() - cols.min() + 1),
                   int(rows.max() - rows.min() + 1)]
            boxes.append([x, y, extent, extent])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(labels[index]) + 1, "bbox": box, "area": box[2] * box[3],
                                "iscrowd": 0})
        images.append({"id": image_id, "file_name": f"canvas_{image_id:06d}.png", "height": size, "width": size})
        pixels[image_id] = torch.from_numpy((np.clip(canvas, 0, 1) * 255).round().astype(np.uint8))
    return images, annotations, pixels


def digit_canvas_sets(source: str, n_train: int, n_val: int, size: int, seed: int, side: tuple[int, int],
                      per_canvas: tuple[int, int] = (1, 3)) -> tuple[DetectionSet, DetectionSet]:
    """Training and validation canvases of real digits (see the module docstring)."""
    if source == "mnist-canvas":
        digits = load_mnist("test", download=False)
        split = 8000
    elif source == "digits-canvas":
        digits = offline_digits()
        split = len(digits) * 4 // 5
    else:
        raise ValueError(f"unknown canvas source {source!r}; choose one of {', '.join(CANVAS_SOURCES)}")
    categories = [{"id": d + 1, "name": str(d)} for d in range(10)]
    rng = np.random.default_rng(seed)
    sets = []
    for (start, stop), n, offset in (((0, split), n_train, 1), ((split, len(digits)), n_val, 10**6)):
        images, annotations, pixels = _digit_canvases(digits.images[start:stop], digits.labels[start:stop], n, size,
                                                      rng, offset, per_canvas, side)
        provenance = {**digits.provenance, "notes": f"{digits.provenance['notes']}; digits {start}-{stop - 1} "
                      f"drawn on {n} canvases of {size} px (seed {seed})"}
        sets.append(DetectionSet({"images": images, "annotations": annotations, "categories": categories},
                                 [c["id"] for c in categories], pixels, None, provenance))
    return sets[0], sets[1]


COCO_FILES = ("annotations_trainval2017.zip", "train2017.zip", "val2017.zip")


def _complete_coco(root: Path) -> bool:
    return all((root / p).exists() for p in ("annotations/instances_train2017.json",
                                            "annotations/instances_val2017.json", "train2017", "val2017"))


def coco_root(download: bool) -> Path:
    """The folder of COCO 2017 in its standard layout (``annotations/``, ``train2017/``, ``val2017/``).

    Looked up as ``<dir>/coco2017`` or ``<dir>/coco`` in ``$REPRO_DATA_DIRS``, then the
    extracted copy in the cache; otherwise the official zips are fetched (checksums
    verified) and extracted there.
    """
    from reproduce.harness.data.archives import extract
    from reproduce.harness.paths import cache_dir, env_dirs

    for folder in env_dirs("REPRO_DATA_DIRS"):
        for name in ("coco2017", "coco"):
            if _complete_coco(folder / name):
                return folder / name
    root = cache_dir("datasets", "coco2017") / "extracted"
    if _complete_coco(root):
        return root
    archives = fetch("coco2017", COCO_FILES, download=download)
    extract(archives["annotations_trainval2017.zip"], root / "annotations", root="annotations",
            members=("instances_train2017.json", "instances_val2017.json"))
    for split in ("val2017", "train2017"):
        extract(archives[f"{split}.zip"], root / split, root=split)
    return root


def coco_sets(download: bool) -> tuple[DetectionSet, DetectionSet]:
    """COCO 2017 train and val as :class:`DetectionSet` s (images read from disk on use)."""
    import json

    from reproduce.harness.data.datasets import file_digest

    root = coco_root(download)
    sets = []
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}2017.json"
        try:
            coco = json.loads(path.read_text(encoding="utf-8"))
            coco = {key: coco[key] for key in ("images", "annotations", "categories")}
        except (OSError, ValueError, KeyError) as error:
            raise DataError(f"{path} is not a COCO instances file ({error}); replace it with an intact copy.") from None
        provenance = {"source": "Microsoft COCO 2017", "files": {path.name: file_digest(path)},
                      "notes": f"images in {root / f'{split}2017'} (not hashed)"}
        sets.append(DetectionSet(coco, sorted(c["id"] for c in coco["categories"]), None, root / f"{split}2017",
                                 provenance))
    return sets[0], sets[1]
