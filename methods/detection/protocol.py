"""The class-incremental detection protocol of EGOR (docs/papers/egor.md), over COCO-format dicts.

Classes are ordered by category id; the first ``n_old`` form task 1, the rest task 2.
Task 1 keeps every image that holds an old-class box, with only its old-class boxes.
Task 2 ("non co-occurrence") keeps the images that hold a new-class box and are not in
task 1, so no old-class object appears in the incremental data. Evaluation uses all
classes seen so far.
"""

from __future__ import annotations


def class_split(categories: list[dict], n_old: int) -> tuple[list[int], list[int]]:
    """Old and new category ids: the first ``n_old`` by ascending id, then the rest."""
    ids = sorted(c["id"] for c in categories)
    if not 0 < n_old < len(ids):
        raise ValueError(f"n_old must be between 1 and {len(ids) - 1}, got {n_old}")
    return ids[:n_old], ids[n_old:]


def _subset(coco: dict, image_ids: set[int], category_ids: set[int]) -> dict:
    return {
        "images": [image for image in coco["images"] if image["id"] in image_ids],
        "annotations": [a for a in coco["annotations"]
                        if a["image_id"] in image_ids and a["category_id"] in category_ids],
        "categories": coco["categories"],
    }


def non_cooccurrence_split(coco: dict, old_ids: list[int], new_ids: list[int]) -> tuple[dict, dict]:
    """Task-1 and task-2 training dicts of ``coco`` (images, annotations, categories)."""
    old, new = set(old_ids), set(new_ids)
    task1_images = {a["image_id"] for a in coco["annotations"] if a["category_id"] in old}
    task2_images = {a["image_id"] for a in coco["annotations"] if a["category_id"] in new} - task1_images
    return _subset(coco, task1_images, old), _subset(coco, task2_images, new)


def evaluation_subset(coco: dict, category_ids: list[int]) -> dict:
    """``coco`` with only the annotations of ``category_ids`` (every image kept)."""
    return _subset(coco, {image["id"] for image in coco["images"]}, set(category_ids))
