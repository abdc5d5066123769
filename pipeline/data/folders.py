"""Unlabeled image folders: every image becomes one or more person records for teacher inference.

A folder is scanned recursively for files of every extension Pillow can read (``.jpg .png .tif .jpe .gif .ppm
.webp ...``, any case; ``IMAGE_SUFFIXES``), sorted by relative POSIX path. Symlinks whose target lies outside
the folder are skipped and reported, never followed.

Person boxes come from an optional ``detections.json`` at the top of the folder, in the COCO results format
keyed by file name::

    [{"file_name": "sub/a.jpg", "bbox": [x, y, w, h], "score": 0.97}, ...]

(``file_name`` relative to the folder, POSIX separators; ``bbox`` in pixels of the upright picture; ``score``
optional, default 1). A user's file is used as is. Without one, the boxes come from the detection store when the
caller names one (``fpd detect`` fills it, ``storage.detections``: the same format, kept outside the folder),
else the whole image is one person (the explicit choice for folders of single-person crops): centre at the image
centre, box = the whole image widened to the input aspect, no padding. Detector boxes, from either file, are
padded by 1.25 as HRNet pads COCO's detector boxes, and an image without detections gets no record. Image sizes
are read from the file header only, so scanning 100k images is cheap. Photos are taken upright by their EXIF
orientation tag (a phone photo is stored sideways): the size is the turned one, as every decode of a folder record
turns it (``SampleRecord.apply_exif_orientation``).

Bad input never stops a scan; each is a failure ``(name, reason)`` of the scan, by level:

* item: a file or folder whose name is not valid UTF-8 (the cache stores names as UTF-8; named with ``\\xNN``
  escapes), an escaping symlink, an image whose header cannot be read, and a ``detections.json`` entry that is
  not an object with a ``file_name`` of an image in the folder and a ``bbox`` of positive finite width and
  height (and a finite ``score`` when given), and, with a detection store, an image it has no detections of
  (not detected yet, or edited since): each is left out, the rest of the folder is used;
* file: a ``detections.json`` that is not json or not a list, and a folder whose own path is not valid UTF-8,
  raise ``ValueError`` naming it (no box of that folder can be trusted, or none of its names stored).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageFile

from pipeline.data.coco import parse_box
from pipeline.data.images import ImageDecodeError, read_image_size
from pipeline.data.paths import PathEscapeError, check_relative, resolve_inside
from pipeline.geometry import box_to_center_scale
from pipeline.records import SampleRecord
from storage.annotations import finite_numbers, is_file_name
from storage.detections import DetectedImage, DetectionStore, matching_entry
from storage.jsonfiles import read_json

logger = logging.getLogger(__name__)

UNREADABLE_FORMATS = frozenset({"MPEG"})
"""Formats Pillow identifies but cannot decode: a video is no photo."""


def _readable(image_format: str) -> bool:
    opener = Image.OPEN.get(image_format, (None,))[0]
    # Stub plugins (HDF5, GRIB, BUFR, WMF) only read a header; MPO files are opened by the JPEG plugin.
    stub = isinstance(opener, type) and issubclass(opener, ImageFile.StubImageFile)
    return image_format == "MPO" or (opener is not None and not stub and image_format not in UNREADABLE_FORMATS)


IMAGE_SUFFIXES = frozenset(ext for ext, fmt in Image.registered_extensions().items() if _readable(fmt))
"""Lower-case extensions of the image formats this Pillow can read (the set depends on its plugins)."""
DETECTIONS_FILE = "detections.json"
WHOLE_IMAGE = "#0"
"""The instance id suffix of a folder record that is a whole image (any other folder record is a detector box)."""


@dataclass(frozen=True)
class FolderScan:
    """Records of one folder and the files that could not be used.

    Iterating, ``len`` and indexing go to ``records``, so a scan can be used where a record list is expected.

    Attributes:
        source: ``"folder/<folder name>"``.
        records: one record per person, sorted by image path.
        failures: ``(relative path or detections entry, reason)`` of each file or entry left out.
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


def printable(name: str) -> str:
    """A file name as valid UTF-8 for messages: bytes that are not UTF-8 (``os`` keeps them as surrogates) as
    ``\\xNN`` escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def list_images(folder: Path, *, recursive: bool = True) -> tuple[list[str], list[tuple[str, str]]]:
    """Image files under ``folder`` as sorted relative POSIX paths, and the entries skipped: symlinks leaving it,
    names that are not UTF-8 (their name made printable)."""
    base = folder.resolve()
    found: list[str] = []
    skipped: list[tuple[str, str]] = []
    seen_dirs = {base}
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        here = Path(dirpath)
        keep = []
        if not recursive:
            dirnames.clear()
        for name in sorted(dirnames):
            target = (here / name).resolve()
            relative = (here / name).relative_to(base).as_posix()
            if not target.is_relative_to(base):
                skipped.append((printable(relative), f"symlink to {printable(str(target))}, outside {base}"))
            elif not is_file_name(name):
                skipped.append((printable(relative), "folder name is not valid UTF-8 (names are stored as UTF-8); "
                                                     "rename it to use its images"))  # fmt: skip
            elif target not in seen_dirs:  # also stops symlink loops
                seen_dirs.add(target)
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            path = here / name
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            relative = path.relative_to(base).as_posix()
            if not is_file_name(name):
                skipped.append((printable(relative), "file name is not valid UTF-8 (names are stored as UTF-8); "
                                                     "rename it to use it"))  # fmt: skip
                continue
            # Directories were checked on the way down: only a file that is itself a link can leave the folder.
            if path.is_symlink():
                try:
                    resolve_inside(base, relative)
                except PathEscapeError as exc:
                    skipped.append((relative, str(exc)))
                    continue
            found.append(relative)
    for name, reason in skipped:
        logger.warning("%s: skipped %s (%s)", printable(str(folder)), name, reason)
    return sorted(found), skipped


def _detection(det: object, folder: Path) -> tuple[str, tuple[float, float, float, float], float]:
    """``(file name, box, score)`` of one ``detections.json`` entry.

    Raises:
        ValueError: naming the field that is wrong.
    """
    if not isinstance(det, dict):
        raise ValueError(f"expected an object {{file_name, bbox, score}}, got {type(det).__name__}")
    missing = [key for key in ("file_name", "bbox") if key not in det]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    if not isinstance(det["file_name"], str):
        raise ValueError(f"field 'file_name': expected a file name, got {det['file_name']!r}")
    name = check_relative(det["file_name"], folder)
    (score,) = finite_numbers([det.get("score", 1.0)], 1, "field 'score'")
    return name, parse_box(det["bbox"]), score


def _read_detections(
    folder: Path,
) -> tuple[dict[str, list[tuple[int, tuple[float, float, float, float], float]]] | None, list[tuple[str, str]]]:
    """The boxes of ``detections.json`` by image name (None without the file), and its entries left out."""
    path = folder / DETECTIONS_FILE
    if not path.is_file():
        return None, []
    entries = read_json(path, "detections file")
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of {{file_name, bbox, score}}, got {type(entries).__name__}")
    by_file: dict[str, list[tuple[int, tuple[float, float, float, float], float]]] = {}
    bad: list[tuple[str, str]] = []
    for i, det in enumerate(entries):
        try:
            name, box, score = _detection(det, folder)
        except ValueError as exc:
            bad.append((f"{DETECTIONS_FILE} entry {i}", str(exc)))
            continue
        by_file.setdefault(name, []).append((i, box, score))
    return by_file, bad


def scan_folder(
    folder: str | Path,
    *,
    input_aspect: float,
    recursive: bool = True,
    detection_store: str | Path | None = None,
) -> FolderScan:
    """Person records of every image in ``folder`` (see the module docstring for the rules).

    Args:
        folder: the folder; its name gives the source name ``folder/<name>``.
        input_aspect: model input width / height.
        recursive: also scan sub-folders.
        detection_store: the store ``fpd detect`` filled; its boxes are used unless the folder has its own
            ``detections.json``. None: whole images (unless the folder has its own file).

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
        ValueError: a ``detections.json`` that is not a json list, or a folder path that is not UTF-8.
        storage.detections.DetectionStoreError: the store's records of this folder are damaged.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {printable(str(folder))}")
    if not is_file_name(str(folder.resolve())):
        raise ValueError(f"image folder {printable(str(folder.resolve()))}: its path is not valid UTF-8 (the cache "
                         "stores paths as UTF-8); rename it")  # fmt: skip
    scan = FolderScan(source=f"folder/{folder.absolute().name}")
    names, skipped = list_images(folder, recursive=recursive)
    scan.failures.extend(skipped)
    detections, bad_detections = _read_detections(folder)
    scan.failures.extend(bad_detections)
    if detections is None and detection_store is not None:
        _add_detected(scan, folder, names, DetectionStore.current(detection_store, folder), input_aspect)
        return _logged(scan)
    for name in names:
        try:
            width, height = read_image_size(folder / name, exif_orientation=True)  # = apply_exif_orientation
        except ImageDecodeError as exc:
            scan.failures.append((name, str(exc)))
            continue
        if detections is None:
            _, scale = box_to_center_scale(0.0, 0.0, width, height, aspect_ratio=input_aspect, padding=1.0)
            center = ((width - 1) * 0.5, (height - 1) * 0.5)  # pixel centres on integers
            scan.records.append(SampleRecord(scan.source, folder, name, center, scale, f"{name}{WHOLE_IMAGE}"))
            continue
        for i, box, score in detections.get(name, []):
            center, scale = box_to_center_scale(*box, aspect_ratio=input_aspect)
            scan.records.append(SampleRecord(scan.source, folder, name, center, scale, f"det{i}", score=score))
    listed = set(names)
    for name, dets in (detections or {}).items():
        if name not in listed:
            scan.failures.extend((f"{DETECTIONS_FILE} entry {i}", f"no image {name!r} in the folder")
                                 for i, _, _ in dets)  # fmt: skip
    return _logged(scan)


def _add_detected(
    scan: FolderScan, folder: Path, names: list[str], store: DetectionStore | None, input_aspect: float
) -> None:
    """Records of the persons the store holds for the images as they are now; the others are failures."""
    entries: dict[str, list[DetectedImage]] = store.images() if store is not None else {}
    for name in names:
        entry = matching_entry(entries.get(name, ()), folder / name)
        if entry is None:
            why = "edited since it was detected" if name in entries else "not detected yet"
            scan.failures.append((name, f"{why}: run `fpd detect` on {printable(str(folder))}"))
            continue
        for j, (box, score) in enumerate(entry.persons):
            center, scale = box_to_center_scale(*box, aspect_ratio=input_aspect)
            scan.records.append(SampleRecord(scan.source, folder, name, center, scale, f"{name}#det{j}", score=score))


def _logged(scan: FolderScan) -> FolderScan:
    if scan.failures:
        logger.warning("%s: %d file(s) or entries skipped", scan.source, len(scan.failures))
    return scan


def unlabeled_folders(root: str | Path) -> list[tuple[Path, bool]]:
    """The image folders of an unlabeled root and whether each is scanned recursively, sorted by name.

    Every direct sub-folder of ``root`` is a folder (a folder dropped in later is a new one), scanned with its
    sub-folders; images lying directly in ``root`` form one more folder, ``root`` itself, not recursive (the
    sub-folders are their own). Sub-folders that are symlinks pointing outside ``root``, or whose name is not
    UTF-8, are skipped and logged.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"unlabeled root not found: {printable(str(root))}")
    folders: list[tuple[Path, bool]] = []
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        if not is_file_name(child.name):
            logger.warning("skipping source folder %s: its name is not valid UTF-8", printable(str(child)))
            continue
        try:
            resolve_inside(root, child.name)
        except PathEscapeError as exc:
            logger.warning("skipping source folder %s: %s", child, exc)
            continue
        folders.append((child, True))
    return [*folders, (root, False)]


def scan_unlabeled_root(
    root: str | Path, *, input_aspect: float, detection_store: str | Path | None = None
) -> dict[str, FolderScan]:
    """One source per folder of ``unlabeled_folders(root)``; the loose images of ``root`` only when it has some.

    Returns:
        Source name -> scan, sorted by source name.
    """
    scans: dict[str, FolderScan] = {}
    for folder, recursive in unlabeled_folders(root):
        scan = scan_folder(folder, input_aspect=input_aspect, recursive=recursive, detection_store=detection_store)
        if recursive or scan.records or scan.failures:
            scans[scan.source] = scan
    return dict(sorted(scans.items()))
