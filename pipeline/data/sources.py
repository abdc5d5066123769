"""Named data sources (``mpii``, ``coco``, ``folder``) as the CLI and flows spell them: ``ROOT[:split]``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.coco import load_coco
from pipeline.data.folders import scan_folder, scan_unlabeled_root
from pipeline.data.mpii import load_mpii
from pipeline.data.paths import PathEscapeError, resolve_inside
from pipeline.records import SampleRecord

__all__ = [
    "DEFAULT_ASPECT",
    "DEFAULT_SPLIT",
    "LoadedSource",
    "PathEscapeError",
    "SourceSpec",
    "load_source",
    "load_source_report",
    "load_sources",
    "parse_source_spec",
    "resolve_inside",
]

SOURCE_KINDS = ("mpii", "coco", "folder")
DEFAULT_SPLIT = {"mpii": "valid", "coco": "val2017", "folder": ""}
DEFAULT_ASPECT = {"mpii": 1.0, "coco": 0.75, "folder": 0.75}
"""Input width / height of the usual models of each kind (MPII 256x256, COCO 192x256)."""


@dataclass(frozen=True)
class SourceSpec:
    """Where a source lives.

    Attributes:
        kind: ``"mpii"``, ``"coco"`` or ``"folder"``.
        root: dataset root, or the image folder.
        split: annotation split (``valid``, ``val2017``...); empty for folders.
    """

    kind: str
    root: Path
    split: str = ""

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {self.kind!r}; expected one of {', '.join(SOURCE_KINDS)}")


def parse_source_spec(kind: str, text: str) -> SourceSpec:
    """Parse ``ROOT[:split]`` (``data/mpii:train``, ``/data/coco``); a folder takes no split.

    The split is the part after the last ``:`` when that part holds no path separator, so ``C:/data`` or a root
    containing ``:`` elsewhere stay whole.
    """
    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    root, sep, split = text.rpartition(":")
    if not sep or not root or "/" in split or "\\" in split:
        root, split = text, ""
    if kind == "folder" and split:
        raise ValueError(f"a folder source takes no split: {text!r}")
    return SourceSpec(kind=kind, root=Path(root), split=split or DEFAULT_SPLIT[kind])


def load_source_report(
    spec: SourceSpec, input_aspect: float, *, detections: str | Path | Sequence[dict] | None = None
) -> tuple[list[SampleRecord], list[tuple[str, str]]]:
    """Records of a source and the files skipped while reading it (``(name, reason)``, folders only)."""
    if spec.kind == "mpii":
        if detections is not None:
            raise ValueError("MPII sources use their annotated boxes; detections apply to coco and folder sources")
        return load_mpii(spec.root, spec.split, input_aspect=input_aspect), []
    if spec.kind == "coco":
        return load_coco(spec.root, spec.split, detections=detections, input_aspect=input_aspect), []
    if detections is not None:
        raise ValueError("folder sources read their boxes from the folder's detections.json")
    scan = scan_folder(spec.root, input_aspect=input_aspect)
    return scan.records, scan.failures


def load_source(
    spec: SourceSpec, input_aspect: float, *, detections: str | Path | Sequence[dict] | None = None
) -> list[SampleRecord]:
    """Records of a source (``load_mpii``, ``load_coco`` or ``scan_folder``, by ``spec.kind``)."""
    return load_source_report(spec, input_aspect, detections=detections)[0]


@dataclass(frozen=True)
class LoadedSource:
    """One source as read: its name (``"mpii/train"``, ``"folder/street"``), records and skipped files."""

    name: str
    records: list[SampleRecord]
    skipped: list[tuple[str, str]]


def load_sources(
    specs: Sequence[SourceSpec],
    input_aspect: float,
    *,
    unlabeled_roots: Sequence[str | Path] = (),
    detections: str | Path | Sequence[dict] | None = None,
) -> list[LoadedSource]:
    """Every source of a run, in order: ``specs``, then one folder source per sub-folder of each unlabeled root.

    ``detections`` applies to the COCO specs (the folder sources read their own ``detections.json``).
    """
    loaded = []
    for spec in specs:
        spec_detections = detections if spec.kind == "coco" else None
        records, skipped = load_source_report(spec, input_aspect, detections=spec_detections)
        name = records[0].source if records else f"{spec.kind}/{spec.split or spec.root.name}"
        loaded.append(LoadedSource(name, records, skipped))
    for root in unlabeled_roots:
        for name, scan in scan_unlabeled_root(root, input_aspect=input_aspect).items():
            loaded.append(LoadedSource(name, scan.records, scan.failures))
    return loaded
