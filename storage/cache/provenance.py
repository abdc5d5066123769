"""What made a teacher target cache: the identity every shard carries and every reader checks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from typing import Any

IDENTITY_EXEMPT = ("package_version", "created")
"""Fields recorded for the record but not part of the identity: a new package release or a later run of the
same teacher produces the same targets, so they never make a cache "different"."""


EXIF_ORIENTATIONS = ("folders", "none")
_HINTS = {
    "exif_orientation": "a cache made before folder photos were turned upright by their EXIF orientation: its "
    "targets of rotated phone photos are of the sideways picture; write this run into a new cache folder",
}
"""What to do about a difference, for the fields whose name alone does not say it."""


class CacheMismatchError(ValueError):
    """A cache was opened with a provenance that differs from the one it was made with."""

    def __init__(self, path: str, differences: list[str]) -> None:
        self.differences = differences
        super().__init__(
            f"teacher cache {path} was made differently; refusing to mix targets: " + "; ".join(differences)
        )


@dataclass(frozen=True)
class CacheProvenance:
    """Everything that determines the teacher targets in a cache.

    Attributes:
        teacher_preset: model preset name of the teacher (``models.get_preset``).
        checkpoint_sha256: SHA-256 of the teacher checkpoint file.
        input_size: (w, h) of the crops fed to the teacher.
        heatmap_size: (w, h) of the stored heatmaps.
        joint_set: ``"mpii"`` or ``"coco"``.
        joint_names: heatmap channel names in order.
        flip_pairs: (left, right) channel pairs used by the flip test.
        flip_test: whether the stored heatmaps average the image and its mirror.
        flip_shift: whether the mirrored pass was shifted by one heatmap pixel (HRNet's ``SHIFT_HEATMAP``).
        decode: rule that produced the stored teacher joints (``"hrnet"`` or ``"dark"``).
        color_order: channel order the teacher was fed (``"RGB"`` or ``"BGR"``).
        draft_decode: whether JPEG inputs were decoded at reduced size (libjpeg's scaled DCT, "draft mode")
            instead of in full; the two give inputs some grey levels apart, so their targets differ.
        exif_orientation: which images were turned upright by their EXIF orientation tag before cropping:
            ``"folders"`` (unlabeled folder photos; annotated datasets raw) or ``"none"`` (raw pixels everywhere,
            the caches written before the field existed). A rotated phone photo gives other crops either way.
        package_version: version of this package that wrote the cache (not part of the identity).
        created: ISO time the cache was created (not part of the identity).
    """

    teacher_preset: str
    checkpoint_sha256: str
    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    joint_set: str
    joint_names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    flip_test: bool = True
    flip_shift: bool = True
    decode: str = "hrnet"
    color_order: str = "RGB"
    draft_decode: bool = False
    exif_orientation: str = "folders"
    package_version: str = ""
    created: str = ""

    def __post_init__(self) -> None:
        # Normalise sequences so that a provenance read back from JSON compares equal to the original.
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "heatmap_size", tuple(int(v) for v in self.heatmap_size))
        object.__setattr__(self, "joint_names", tuple(str(v) for v in self.joint_names))
        object.__setattr__(self, "flip_pairs", tuple((int(a), int(b)) for a, b in self.flip_pairs))
        if self.exif_orientation not in EXIF_ORIENTATIONS:
            raise ValueError(f"exif_orientation must be one of {EXIF_ORIENTATIONS}, got {self.exif_orientation!r}")

    def diff(self, other: CacheProvenance) -> list[str]:
        """Human-readable differences in the identity fields, e.g. ``"input_size: (128, 128) != (256, 256)"``."""
        out = []
        for f in fields(self):
            if f.name in IDENTITY_EXEMPT:
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine != theirs:
                hint = f" ({_HINTS[f.name]})" if f.name in _HINTS else ""
                out.append(f"{f.name}: {_short(mine)} != {_short(theirs)}{hint}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheProvenance:
        known = {f.name for f in fields(cls)}
        # Caches written before a field existed read with the value they were made with, so that adding targets
        # of today's rule to one is refused instead of silently mixed in: they were all inferred from draft
        # decodes, and from raw pixels (EXIF orientation ignored) in every source.
        data = {"draft_decode": True, "exif_orientation": "none", **data}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> CacheProvenance:
        return cls.from_dict(json.loads(text))


def package_version() -> str:
    """Installed version of this package, or ``"unknown"`` when running from a bare checkout."""
    try:
        return metadata.version("fast-pose-distillation")
    except metadata.PackageNotFoundError:
        return "unknown"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
