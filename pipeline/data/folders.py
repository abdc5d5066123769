"""Unlabeled image folders: every image becomes one or more person records for teacher inference.

A folder is scanned recursively for ``.jpg .jpeg .png .bmp .webp`` files (any case), sorted by relative POSIX
path. Symlinks whose target lies outside the folder are skipped and reported, never followed.

Person boxes come from an optional ``detections.json`` at the top of the folder, in the COCO results format
keyed by file name::

    [{"file_name": "sub/a.jpg", "bbox": [x, y, w, h], "score": 0.97}, ...]

(``file_name`` relative to the folder, POSIX separators; ``bbox`` in pixels; ``score`` optional, default 1).
Boxes are padded by 1.25 like detector boxes on COCO. With such a file, an image without detections gets no
record. Without it, the whole image is one person: centre at the image centre, box = the whole image widened
to the input aspect, no padding. Image sizes are read from the file header only, so scanning 100k images is
cheap; a file whose header cannot be read is reported as a failure, not raised.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.images import ImageDecodeError, read_image_size
from pipeline.data.paths import PathEscapeError, check_relative, resolve_inside
from pipeline.geometry import box_to_center_scale
from pipeline.records import SampleRecord

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
DETECTIONS_FILE = "detections.json"


@dataclass(frozen=True)
class FolderScan:
    """Records of one folder and the files that could not be used.

    Iterating, ``len`` and indexing go to ``records``, so a scan can be used where a record list is expected.

    Attributes:
        source: ``"folder/<folder name>"``.
        records: one record per person, sorted by image path.
        failures: ``(relative path, reason)`` of each skipped file.
    """

    source: str
    records: list[SampleRecord] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator[SampleRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> SampleRecord:
        return self.records[index]


def list_images(folder: Path, *, recursive: bool = True) -> tuple[list[str], list[tuple[str, str]]]:
    """Image files under ``folder`` as sorted relative POSIX paths, and the symlinks skipped for escaping it."""
    base = folder.resolve()
    found: list[str] = []
    escaped: list[tuple[str, str]] = []
    seen_dirs = {base}
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        here = Path(dirpath)
        keep = []
        if not recursive:
            dirnames.clear()
        for name in sorted(dirnames):
            target = (here / name).resolve()
            if not target.is_relative_to(base):
                escaped.append(((here / name).relative_to(base).as_posix(), f"symlink to {target}, outside {base}"))
            elif target not in seen_dirs:  # also stops symlink loops
                seen_dirs.add(target)
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            path = here / name
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            relative = path.relative_to(base).as_posix()
            # Directories were checked on the way down: only a file that is itself a link can leave the folder.
            if path.is_symlink():
                try:
                    resolve_inside(base, relative)
                except PathEscapeError as exc:
                    escaped.append((relative, str(exc)))
                    continue
            found.append(relative)
    for name, reason in escaped:
        logger.warning("%s: skipped %s (%s)", folder, name, reason)
    return sorted(found), escaped


def _read_detections(folder: Path) -> dict[str, list[tuple[int, dict]]] | None:
    path = folder / DETECTIONS_FILE
    if not path.is_file():
        return None
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid json ({exc})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of {{file_name, bbox, score}}")
    by_file: dict[str, list[tuple[int, dict]]] = {}
    for i, det in enumerate(entries):
        if not isinstance(det, dict) or "file_name" not in det or "bbox" not in det:
            raise ValueError(f"{path} entry {i}: expected {{file_name, bbox, score}}, got {det!r}")
        by_file.setdefault(check_relative(str(det["file_name"]), folder), []).append((i, det))
    return by_file


def scan_folder(folder: str | Path, *, input_aspect: float, recursive: bool = True) -> FolderScan:
    """Person records of every image in ``folder`` (see the module docstring for the rules).

    Args:
        folder: the folder; its name gives the source name ``folder/<name>``.
        input_aspect: model input width / height.
        recursive: also scan sub-folders.

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
        ValueError: a malformed ``detections.json``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    scan = FolderScan(source=f"folder/{folder.absolute().name}")
    names, escaped = list_images(folder, recursive=recursive)
    scan.failures.extend(escaped)
    detections = _read_detections(folder)
    for name in names:
        try:
            width, height = read_image_size(folder / name)
        except ImageDecodeError as exc:
            scan.failures.append((name, str(exc)))
            continue
        if detections is None:
            _, scale = box_to_center_scale(0.0, 0.0, width, height, aspect_ratio=input_aspect, padding=1.0)
            center = ((width - 1) * 0.5, (height - 1) * 0.5)  # pixel centres on integers
            scan.records.append(SampleRecord(scan.source, folder, name, center, scale, instance_id=f"{name}#0"))
            continue
        for i, det in detections.get(name, []):
            center, scale = box_to_center_scale(*(float(v) for v in det["bbox"]), aspect_ratio=input_aspect)
            record = SampleRecord(
                scan.source, folder, name, center, scale, instance_id=f"det{i}", score=float(det.get("score", 1.0))
            )
            scan.records.append(record)
    if scan.failures:
        logger.warning("%s: %d file(s) skipped", scan.source, len(scan.failures))
    return scan


def scan_unlabeled_root(root: str | Path, *, input_aspect: float) -> dict[str, FolderScan]:
    """One source per direct sub-folder of ``root`` (a folder dropped in later becomes a new source).

    Images lying directly in ``root`` form the source ``folder/<root name>`` (not recursive: the sub-folders are
    their own sources). Sub-folders that are symlinks pointing outside ``root`` are skipped and logged.

    Returns:
        Source name -> scan, sorted by source name.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"unlabeled root not found: {root}")
    scans: dict[str, FolderScan] = {}
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        try:
            resolve_inside(root, child.name)
        except PathEscapeError as exc:
            logger.warning("skipping source folder %s: %s", child, exc)
            continue
        scan = scan_folder(child, input_aspect=input_aspect)
        scans[scan.source] = scan
    loose = scan_folder(root, input_aspect=input_aspect, recursive=False)
    if loose.records or loose.failures:
        scans[loose.source] = loose
    return dict(sorted(scans.items()))
