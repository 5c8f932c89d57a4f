"""COCO instance annotations (boxes and categories) with their image folder."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reproduce.harness.data.images.common import provenance
from reproduce.harness.errors import DataError


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
            provenance=provenance(
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
