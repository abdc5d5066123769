"""The detection stage's settings, torch-free (the CLI reads their defaults without loading torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DetectorSettings:
    """Which detector, and which of its boxes are persons for the teacher; each field but ``amp`` is part of the
    store's identity (``amp`` is, as the precision it gives).

    Attributes:
        model: a ``models.detectors`` name, or ``auto`` (the strong model on CUDA, the light one on CPU).
        weights: a local weights file; None: torchvision's weights API cache (``$TORCH_HOME/hub/checkpoints``).
        score_threshold: lowest person score kept (a box the teacher trusts is a pseudo-label: precision first).
        nms_threshold: IoU above which the detector's NMS merges two boxes of one class (torchvision's 0.5).
        min_box_size: smallest ``sqrt(w * h)`` kept, in pixels (32: COCO's small / medium boundary; the teacher's
            targets on a person smaller than that, upsampled to its input, are noise).
        max_persons: most persons kept per image, best scores first (20: COCO's keypoint ``maxDets``).
        min_size, max_size: the detector's input resize (shorter / longer side); None: the model's own.
        amp: fp16 autocast on CUDA (recorded: the boxes differ slightly).
    """

    model: str = "auto"
    weights: str | None = None
    score_threshold: float = 0.7
    nms_threshold: float = 0.5
    min_box_size: float = 32.0
    max_persons: int = 20
    min_size: int | None = None
    max_size: int | None = None
    amp: bool = True

    def __post_init__(self) -> None:
        for name in ("score_threshold", "nms_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"detector {name} must be in [0, 1], got {getattr(self, name)}")
        if not (math.isfinite(self.min_box_size) and self.min_box_size >= 0):
            raise ValueError(f"detector min_box_size must be >= 0 pixels, got {self.min_box_size}")
        if self.max_persons < 1:
            raise ValueError(f"detector max_persons must be at least 1, got {self.max_persons}")
        for name in ("min_size", "max_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"detector {name} must be a positive number of pixels, got {getattr(self, name)}")
