"""Named data sources (``mpii``, ``coco``, ``folder``) as the CLI and flows spell them: ``ROOT[:split]``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.data.coco import load_coco
from pipeline.data.folders import scan_folder, scan_unlabeled_root
from pipeline.data.mpii import load_mpii
from pipeline.data.paths import PathEscapeError, resolve_inside
from pipeline.records import SampleRecord, resolved_root

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
    "source_name",
]

logger = logging.getLogger(__name__)

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
    spec: SourceSpec,
    input_aspect: float,
    *,
    detections: str | Path | Sequence[dict] | None = None,
    detection_store: str | Path | None = None,
) -> tuple[list[SampleRecord], list[tuple[str, str]]]:
    """Records of a source and the inputs skipped while reading it: ``(file or item, reason)`` of each bad image,
    name, box or annotation, so that one of them never stops a run (each loader's module docstring says what is
    skipped per item and what refuses the whole file). ``detection_store``: where a folder source's person boxes
    come from when it has no ``detections.json`` of its own (None: whole images)."""
    skipped: list[tuple[str, str]] = []
    if spec.kind == "mpii":
        if detections is not None:
            raise ValueError("MPII sources use their annotated boxes; detections apply to coco and folder sources")
        return load_mpii(spec.root, spec.split, input_aspect=input_aspect, skipped=skipped), skipped
    if spec.kind == "coco":
        records = load_coco(spec.root, spec.split, detections=detections, input_aspect=input_aspect, skipped=skipped)
        return records, skipped
    if detections is not None:
        raise ValueError("folder sources read their boxes from the folder's detections.json")
    scan = scan_folder(spec.root, input_aspect=input_aspect, detection_store=detection_store)
    return scan.records, scan.failures


def load_source(
    spec: SourceSpec, input_aspect: float, *, detections: str | Path | Sequence[dict] | None = None
) -> list[SampleRecord]:
    """Records of a source (``load_mpii``, ``load_coco`` or ``scan_folder``, by ``spec.kind``)."""
    return load_source_report(spec, input_aspect, detections=detections)[0]


@dataclass(frozen=True)
class LoadedSource:
    """One source as read.

    Attributes:
        name: the records' source name (``"mpii/train"``, ``"folder/street"``), as the cache stores it.
        records: its person records.
        skipped: ``(file or item, reason)`` of each input left out.
        root: its resolved root; with ``name``, the source's identity (the records' keys hold both).
        label: a display name unique within the run: ``name``, or, where two sources of a run share ``name``
            (``cam1/frames``, ``cam2/frames``), ``name`` with as many of the root's parent folders as it takes.
    """

    name: str
    records: list[SampleRecord]
    skipped: list[tuple[str, str]]
    root: str = ""
    label: str = ""

    @property
    def display(self) -> str:
        return self.label or self.name


def load_sources(
    specs: Sequence[SourceSpec],
    input_aspect: float,
    *,
    unlabeled_roots: Sequence[str | Path] = (),
    detections: str | Path | Sequence[dict] | None = None,
    detection_store: str | Path | None = None,
) -> list[LoadedSource]:
    """Every source of a run, in order: ``specs``, then one folder source per sub-folder of each unlabeled root.

    A source given twice (the same kind, resolved root and split, e.g. one folder under two spellings) is read
    once; the repeat is logged and dropped. ``detections`` applies to the COCO specs; the folder sources read
    their own ``detections.json``, else the boxes of ``detection_store`` (``fpd detect``), else whole images.
    """
    loaded: list[LoadedSource] = []
    seen: set[tuple[str, str]] = set()

    def add(name: str, root: Path, records: list[SampleRecord], skipped: list[tuple[str, str]]) -> None:
        identity = (name, resolved_root(root))
        if identity in seen:
            logger.warning("source %s at %s is given twice; reading it once", name, identity[1])
            return
        seen.add(identity)
        loaded.append(LoadedSource(name, records, skipped, identity[1]))

    for spec in specs:
        spec_detections = detections if spec.kind == "coco" else None
        if (source_name(spec), resolved_root(spec.root)) in seen:
            logger.warning("source %s at %s is given twice; reading it once", source_name(spec), spec.root)
            continue
        records, skipped = load_source_report(spec, input_aspect, detections=spec_detections,
                                              detection_store=detection_store)  # fmt: skip
        add(records[0].source if records else source_name(spec), spec.root, records, skipped)
    for root in unlabeled_roots:
        for name, scan in scan_unlabeled_root(root, input_aspect=input_aspect, detection_store=detection_store).items():
            folder = scan.records[0].root if scan.records else Path(root) / name.removeprefix("folder/")
            add(name, folder, scan.records, scan.failures)
    return _with_unique_labels(loaded)


def source_name(spec: SourceSpec) -> str:
    """The source name the records of ``spec`` carry: ``mpii/<split>``, ``coco/<split>``, ``folder/<name>``."""
    return f"folder/{spec.root.absolute().name}" if spec.kind == "folder" else f"{spec.kind}/{spec.split}"


def _with_unique_labels(loaded: list[LoadedSource]) -> list[LoadedSource]:
    """Give sources that share a name a label with as many of their roots' last folders as tells them apart."""
    roots: dict[str, list[str]] = {}
    for source in loaded:
        roots.setdefault(source.name, []).append(source.root)
    out = []
    for source in loaded:
        others = roots[source.name]
        if len(others) == 1:
            out.append(source)
            continue
        depth = 1
        while len({_tail(r, depth) for r in others}) < len(others) and depth < max(len(Path(r).parts) for r in others):
            depth += 1
        tail = _tail(source.root, depth)
        label = f"folder/{tail}" if source.name.startswith("folder/") else f"{source.name}@{tail}"
        out.append(replace(source, label=label))
    return out


def _tail(root: str, depth: int) -> str:
    return "/".join(Path(root).parts[-depth:])
