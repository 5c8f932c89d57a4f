"""COCO-style mAP through pycocotools' ``COCOeval`` (the standard evaluator, not rewritten here).

Ground truth and detections stay in memory: a COCO dataset dict is indexed with
``COCO.createIndex`` and detections loaded with ``COCO.loadRes``. Beside the overall
AP / AP50 / AP75 over the evaluated categories, :func:`coco_map` reads the per-category
precision array so the mAP of any subset (old classes, new classes) is the mean of that
subset's per-category APs, as class-incremental detection papers report it.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

NAN = float("nan")


@dataclass
class MapResult:
    """COCO metrics in percent: overall ``ap`` (mAP@[.5:.95]), ``ap50``, ``ap75``, and
    ``per_class`` ``{category_id: (AP, AP50)}``. Each is NaN where the categories it covers have no
    ground truth (COCOeval's -1), as :meth:`subset` gives for such a subset."""

    ap: float
    ap50: float
    ap75: float
    per_class: dict[int, tuple[float, float]]

    def subset(self, category_ids) -> tuple[float, float]:
        """Mean AP and AP50 over ``category_ids`` that have ground truth (NaN if none)."""
        values = np.array([self.per_class[c] for c in category_ids if c in self.per_class], dtype=float)
        values = values[~np.isnan(values[:, 0])] if values.size else values
        return (float("nan"), float("nan")) if values.size == 0 else tuple(map(float, values.mean(axis=0)))


def coco_map(ground_truth: dict, detections: list[dict], category_ids=None) -> MapResult:
    """mAP of ``detections`` against ``ground_truth``.

    Parameters
    ----------
    ground_truth : dict
        A COCO instances dict (``images``, ``annotations`` with ``bbox`` ``[x, y, w, h]``,
        ``area``, ``iscrowd``, and ``categories``).
    detections : list of dict
        ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` per detection.
    category_ids : iterable of int, optional
        Categories to evaluate (default: all of ``ground_truth``).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    category_ids = sorted(c["id"] for c in ground_truth["categories"]) if category_ids is None else sorted(category_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": ground_truth["images"], "annotations": ground_truth["annotations"],
                      "categories": ground_truth["categories"]}
        gt.createIndex()
        if not detections:
            per_class = {c: ((0.0, 0.0) if gt.getAnnIds(catIds=[c]) else (NAN, NAN)) for c in category_ids}
            overall = 0.0 if gt.getAnnIds(catIds=category_ids) else NAN
            return MapResult(overall, overall, overall, per_class)
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.catIds = category_ids
        evaluator.params.imgIds = sorted(gt.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # (T IoUs, R recalls, K categories, A areas, M max-dets)
    per_class = {}
    for k, category in enumerate(category_ids):
        curve = precision[:, :, k, 0, -1]
        valid = curve[curve > -1]
        ap = float(valid.mean() * 100) if valid.size else float("nan")
        at50 = precision[0, :, k, 0, -1]
        ap50 = float(at50[at50 > -1].mean() * 100) if (at50 > -1).any() else float("nan")
        per_class[category] = (ap, ap50)
    ap, ap50, ap75 = (NAN if stat < 0 else float(stat * 100) for stat in evaluator.stats[:3])
    return MapResult(ap, ap50, ap75, per_class)
