"""torchvision's COCO person detectors, built without downloading anything (weights are loaded by the caller).

One name per detector, the torchvision builder's own. ``auto`` picks the strong model on a GPU and the light one
on a CPU. Every model here is a Faster R-CNN: the same output (``boxes`` x1y1x2y2 in input-image pixels,
``labels`` in torchvision's 91-entry COCO category list, ``scores``), the same post-processing knobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from torch import nn
from torchvision.models import detection
from torchvision.models._api import WeightsEnum


@dataclass(frozen=True)
class DetectorModel:
    """A torchvision detector and its COCO weights entry (URL, file name, box AP)."""

    name: str
    builder: Callable[..., nn.Module]
    weights: WeightsEnum
    description: str

    @property
    def box_ap(self) -> float:
        """COCO val2017 box AP of the published weights (torchvision's metadata)."""
        return float(self.weights.meta["_metrics"]["COCO-val2017"]["box_map"])


def _entry(name: str, weights: WeightsEnum, description: str) -> tuple[str, DetectorModel]:
    return name, DetectorModel(name, getattr(detection, name), weights, description)


DETECTOR_MODELS: MappingProxyType[str, DetectorModel] = MappingProxyType(dict([
    _entry("fasterrcnn_resnet50_fpn_v2", detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
           "Faster R-CNN ResNet-50 FPN v2 (Li et al. 2021): the strong default on GPUs"),
    _entry("fasterrcnn_resnet50_fpn", detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
           "Faster R-CNN ResNet-50 FPN (the original torchvision model)"),
    _entry("fasterrcnn_mobilenet_v3_large_fpn", detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
           "Faster R-CNN MobileNet-v3 Large FPN at 800 px: the light default on CPUs"),
    _entry("fasterrcnn_mobilenet_v3_large_320_fpn", detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
           "Faster R-CNN MobileNet-v3 Large FPN at 320 px: fastest, for large persons only"),
]))  # fmt: skip
GPU_DETECTOR = "fasterrcnn_resnet50_fpn_v2"
CPU_DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"
PERSON_LABEL = 1
"""The index of ``person`` in torchvision's COCO categories (``weights.meta["categories"][1]``)."""


def list_detectors() -> list[str]:
    """Names accepted by ``create_detector``, sorted."""
    return sorted(DETECTOR_MODELS)


def resolve_detector_name(name: str, device_type: str) -> str:
    """``auto`` -> the GPU default on ``cuda``, else the CPU default; other names are checked.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name == "auto":
        return GPU_DETECTOR if device_type == "cuda" else CPU_DETECTOR
    if name not in DETECTOR_MODELS:
        raise ValueError(f"unknown detector {name!r}; expected auto or one of {', '.join(list_detectors())}")
    return name


def create_detector(
    name: str,
    *,
    score_threshold: float,
    nms_threshold: float,
    detections_per_image: int,
    min_size: int | None = None,
    max_size: int | None = None,
) -> nn.Module:
    """A freshly initialised detector ``name`` with 91 COCO classes, in eval mode (no weights are downloaded).

    Args:
        name: one of ``list_detectors()``.
        score_threshold: boxes scoring below it are dropped before NMS (torchvision's ``box_score_thresh``).
        nms_threshold: per-class NMS IoU (``box_nms_thresh``).
        detections_per_image: boxes kept per image over all classes (``box_detections_per_img``).
        min_size, max_size: the input resize (shorter / longer side); None: the model's own.
    """
    options: dict[str, object] = {"box_score_thresh": score_threshold, "box_nms_thresh": nms_threshold,
                                  "box_detections_per_img": detections_per_image}  # fmt: skip
    if min_size is not None:
        options["min_size"] = min_size
    if max_size is not None:
        options["max_size"] = max_size
    model = DETECTOR_MODELS[resolve_detector_name(name, "cpu")].builder(
        weights=None, weights_backbone=None, num_classes=91, **options
    )
    return model.eval()
