"""The one sample record every source (MPII, COCO, unlabeled folder, synthetic) parses into."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PIXEL_STD = 200.0
"""HRNet convention: ``scale`` is the person box size in units of 200 pixels."""


@dataclass(frozen=True, eq=False)
class SampleRecord:
    """One person instance to crop, infer, train on or evaluate.

    Attributes:
        source: source name, e.g. ``"mpii/valid"``, ``"coco/val2017"``, ``"folder/street_2024"``.
        root: the data root that ``image`` is relative to (images never escape it).
        image: image path relative to ``root``, POSIX separators.
        center: person box centre (x, y) in image pixels.
        scale: person box size (w, h) in units of ``PIXEL_STD`` pixels, padding already applied.
        instance_id: unique within ``source`` (annotation id, detection index, ``"<image>#0"``...).
        joints: (K, 2) float32 joint positions in 0-based image pixels, or None when unlabeled.
        visibility: (K,) float32 in {0, 1}, or None when unlabeled.
        rotation: box rotation in degrees (0 for every dataset we read).
        score: person box score (1 for ground-truth boxes, detector score otherwise).
        image_id: dataset image id (COCO), or -1.
        fingerprint: image content fingerprint, filled in by the teacher cache when it plans work.
    """

    source: str
    root: Path
    image: str
    center: tuple[float, float]
    scale: tuple[float, float]
    instance_id: str
    joints: np.ndarray | None = None
    visibility: np.ndarray | None = None
    rotation: float = 0.0
    score: float = 1.0
    image_id: int = -1
    fingerprint: str = field(default="")

    @property
    def labelled(self) -> bool:
        return self.joints is not None

    @property
    def path(self) -> Path:
        """Absolute image path."""
        return self.root / self.image

    @property
    def apply_exif_orientation(self) -> bool:
        """Whether the image is decoded upright by its EXIF orientation tag, as a person sees it: folder photos.

        The one place this rule lives. Unlabeled folder photos have no annotation to agree with, and a phone
        photo is stored sideways with a tag saying so. MPII and COCO annotations index the raw pixel grid (HRNet
        reads with ``cv2.IMREAD_IGNORE_ORIENTATION``), so their images are decoded raw.
        """
        return self.source.startswith("folder/")

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity of the sample in the teacher cache: ``(source, resolved root, image, instance_id)``.

        The resolved root is part of it so that two folders of one base name (``cam1/frames``, ``cam2/frames``),
        or two roots of one split, never share keys; the fingerprint is compared separately.
        """
        return (self.source, resolved_root(self.root), self.image, self.instance_id)


@functools.lru_cache(maxsize=4096)
def resolved_root(root: Path) -> str:
    """``root`` made absolute with symlinks resolved, as the teacher cache stores it (memoised: one per root)."""
    return str(Path(root).resolve())
