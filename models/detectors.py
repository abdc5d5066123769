"""Person detectors: torchvision's COCO Faster R-CNN models, built here without downloading anything.

The detection stage crops the persons of unlabeled photos before teacher inference. torchvision's builders fetch
their COCO weights when given ``weights=``; here the architecture is built from scratch (``weights=None``,
``weights_backbone=None``, 91 COCO classes) and the weights file is loaded by the caller
(``pipeline.detection.weights``), so a machine without internet works from a local file and never blocks on a
download inside a model constructor.

One torchvision subtlety is reproduced on purpose: a builder given weights puts ``FrozenBatchNorm2d`` (eps 1e-5,
and eps 0 for the 2019 ``fasterrcnn_resnet50_fpn`` weights, torchvision's ``overwrite_eps``) in the backbone, but
``nn.BatchNorm2d`` when built from scratch. The COCO files hold the frozen
layers' tensors (no ``num_batches_tracked``), so a from-scratch build would neither load them strictly nor compute
what torchvision's pretrained model computes; ``create_detector`` swaps the layers back.

All registered models are Faster R-CNN: in eval mode each takes a list of (3, H, W) float RGB tensors in [0, 1]
(any sizes; the model resizes and normalises) and returns one dict per image with ``boxes`` (D, 4) x1 y1 x2 y2 in
input pixels, ``labels`` (D,) COCO category indices (``PERSON_LABEL`` for persons) and ``scores`` (D,).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from torch import nn
from torchvision.models import WeightsEnum, detection
from torchvision.ops import FrozenBatchNorm2d

AUTO = "auto"
GPU_DETECTOR = "fasterrcnn_resnet50_fpn_v2"
CPU_DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"
PERSON_LABEL = 1
"""torchvision's COCO category index of "person" (``weights.meta["categories"][1]``; index 0 is the background)."""
NUM_COCO_CLASSES = 91  # torchvision's COCO label space: background + 90 ids, 10 of them unused ("N/A")


@dataclass(frozen=True)
class DetectorModel:
    """A registered detector.

    Attributes:
        name: torchvision's builder name, also the registry key.
        builder: torchvision's builder function.
        weights: torchvision's COCO weights entry (its ``url``, ``meta["categories"]``,
            ``meta["_metrics"]["COCO-val2017"]["box_map"]``).
        description: one line for listings.
        frozen_batch_norm_eps: the ``FrozenBatchNorm2d`` eps of the backbone when torchvision builds the model for
            these weights; None when it keeps ``nn.BatchNorm2d`` (see the module notes).
    """

    name: str
    builder: Callable[..., nn.Module]
    weights: WeightsEnum
    description: str
    frozen_batch_norm_eps: float | None

    @property
    def box_ap(self) -> float:
        """COCO val2017 box AP of the published weights, as torchvision reports it."""
        return float(self.weights.meta["_metrics"]["COCO-val2017"]["box_map"])


def _entry(name: str, weights: WeightsEnum, description: str, frozen_batch_norm_eps: float | None) -> DetectorModel:
    return DetectorModel(name, getattr(detection, name), weights, description, frozen_batch_norm_eps)


# Read-only: the set of detectors is fixed at import time, never patched at run time.
DETECTOR_MODELS: Mapping[str, DetectorModel] = MappingProxyType(
    {
        entry.name: entry
        for entry in (
            _entry(
                "fasterrcnn_resnet50_fpn_v2",
                detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
                "ResNet-50 FPN v2 (2022 recipe): the strong default on GPUs",
                None,
            ),
            _entry(
                "fasterrcnn_resnet50_fpn",
                detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
                "ResNet-50 FPN (2019 weights)",
                0.0,
            ),
            _entry(
                "fasterrcnn_mobilenet_v3_large_fpn",
                detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
                "MobileNetV3-Large FPN, 800 px: the light default on CPUs",
                1e-5,
            ),
            _entry(
                "fasterrcnn_mobilenet_v3_large_320_fpn",
                detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
                "MobileNetV3-Large FPN, 320 px: the fastest, for small or few persons",
                1e-5,
            ),
        )
    }
)


def list_detectors() -> list[str]:
    """Names accepted by ``create_detector``, sorted."""
    return sorted(DETECTOR_MODELS)


def resolve_detector_name(name: str, device_type: str) -> str:
    """The registered detector ``name`` stands for: ``"auto"`` picks the strong one on CUDA, the light one elsewhere.

    The strong model is about 10x slower than the light one on a CPU, where it would dominate a whole run.

    Args:
        name: ``"auto"`` or one of ``list_detectors()``.
        device_type: ``torch.device.type`` of the device it will run on (``"cuda"``, ``"cpu"``, ``"mps"``).

    Raises:
        ValueError: unknown name (the message lists the accepted ones).
    """
    if name == AUTO:
        return GPU_DETECTOR if device_type == "cuda" else CPU_DETECTOR
    _get(name)
    return name


def _get(name: str) -> DetectorModel:
    if name not in DETECTOR_MODELS:
        raise ValueError(f"unknown detector {name!r}; available: {AUTO}, {', '.join(list_detectors())}")
    return DETECTOR_MODELS[name]


def _freeze_batch_norm(module: nn.Module, eps: float) -> None:
    """Replace every ``nn.BatchNorm2d`` under ``module`` by a ``FrozenBatchNorm2d`` of the same width."""
    for child_name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            # A fresh BatchNorm2d and a fresh FrozenBatchNorm2d hold the same values (weight 1, bias 0, mean 0, var 1).
            setattr(module, child_name, FrozenBatchNorm2d(child.num_features, eps=eps))
        else:
            _freeze_batch_norm(child, eps)


def create_detector(
    name: str,
    *,
    score_threshold: float,
    nms_threshold: float,
    detections_per_image: int,
    min_size: int | None = None,
    max_size: int | None = None,
) -> nn.Module:
    """Build a registered detector with random weights, shaped for its COCO weights file, in eval mode.

    Args:
        name: one of ``list_detectors()`` (resolve ``"auto"`` first with ``resolve_detector_name``).
        score_threshold: boxes scoring below it are dropped inside the model (``box_score_thresh``), per class.
        nms_threshold: IoU above which the lower-scoring box of a class is suppressed (``box_nms_thresh``).
        detections_per_image: boxes kept per image over all classes (``box_detections_per_img``); persons
            compete with the other 79 classes for these slots.
        min_size, max_size: the resize of the shorter side and the cap of the longer one (torchvision's
            ``GeneralizedRCNNTransform``); None keeps the model's own (800 / 1333, 320 / 640 for the 320 model).

    Raises:
        ValueError: unknown name, or a threshold outside [0, 1] / a non-positive count or size.
    """
    entry = _get(name)
    if not (0.0 <= score_threshold <= 1.0 and 0.0 <= nms_threshold <= 1.0):
        raise ValueError(f"score_threshold and nms_threshold must be in [0, 1], got {score_threshold}, {nms_threshold}")
    if detections_per_image < 1 or any(size is not None and size < 1 for size in (min_size, max_size)):
        raise ValueError(f"detections_per_image, min_size and max_size must be >= 1, got {detections_per_image}, "
                         f"{min_size}, {max_size}")  # fmt: skip
    sizes = {key: value for key, value in (("min_size", min_size), ("max_size", max_size)) if value is not None}
    model = entry.builder(weights=None, weights_backbone=None, num_classes=NUM_COCO_CLASSES,
                          box_score_thresh=score_threshold, box_nms_thresh=nms_threshold,
                          box_detections_per_img=detections_per_image, **sizes)  # fmt: skip
    if entry.frozen_batch_norm_eps is not None:
        _freeze_batch_norm(model.backbone.body, entry.frozen_batch_norm_eps)
    return model.eval()
