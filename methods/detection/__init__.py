"""Incremental object detection (EGOR / IOR, arXiv 2406.04829): a GFL detector in torch,
detector inversion, augmented replay and the incremental distillation losses."""

from methods.detection.detector import (
    Detections,
    DetectorOutput,
    GFLDetector,
    Targets,
    expand_classes,
    gfl_detector,
    gfl_loss,
    predict,
)
from methods.detection.egor import METHODS, DistillationConfig, incremental_loss, is_finite
from methods.detection.evaluation import MapResult, coco_map
from methods.detection.inversion import AspectRatioSampler, InversionConfig, crop_objects, invert
from methods.detection.protocol import class_split, evaluation_subset, non_cooccurrence_split
from methods.detection.replay import CropCycle, ReplayConfig, paste_objects
from methods.detection.training import Schedule, optimizer_for, pad_batch, resize_keep_ratio

__all__ = [
    "METHODS", "AspectRatioSampler", "CropCycle", "Detections", "DetectorOutput", "DistillationConfig", "GFLDetector",
    "InversionConfig", "MapResult", "ReplayConfig", "Schedule", "Targets", "class_split", "coco_map", "crop_objects",
    "evaluation_subset", "expand_classes", "gfl_detector", "gfl_loss", "incremental_loss", "invert", "is_finite",
    "non_cooccurrence_split", "optimizer_for", "pad_batch", "paste_objects", "predict", "resize_keep_ratio",
]
