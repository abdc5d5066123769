"""Person boxes a detector found in an unlabeled image folder: an incremental, crash-safe store beside the cache.

The store never writes into the image folders (they may be read-only, and a user's own ``detections.json`` there
is used as is). A store root holds one folder per image folder, and in it one folder per detector identity::

    <store>/<folder name>-<hash of its resolved path>/
        folder.json                      {"format", "folder", "current": <identity digest>}
        <identity digest>/
            detector.json                {"format", "folder", "detector": {model, weights_sha256, thresholds...}}
            part-s<I>of<N>-<uuid>.json   committed parts: {"format", "images": [...], "detections": [...]}
            locks/slot-<I>-of-<N>.lock

A part's ``detections`` are the folder loader's ``detections.json`` format (COCO results keyed by file name:
``{"file_name", "category_id": 1, "bbox": [x, y, w, h], "score"}``, pixels of the upright picture); its
``images`` list every image the part covers, with its file state (size, mtime, content fingerprint) and size, so
that an image where no person was found is not detected again, and an edited one is. Parts are written whole
with an atomic rename: a process killed at any moment loses at most the part it had not committed (its
temporary file is removed by the next writer of its slot). Another detector (model, weights, thresholds) is
another identity folder, so changing it re-detects and changing it back costs nothing; ``folder.json`` names the
identity last run, which is the one readers use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from storage.atomic import atomic_write
from storage.hashing import FileState, file_fingerprint
from storage.jsonfiles import read_json, write_json
from storage.locking import FileLock, LockBusyError

logger = logging.getLogger(__name__)

STORE_FORMAT = "fpd-detections-1"
PERSON_CATEGORY = 1
"""COCO's category id of a person (the ``category_id`` of every stored detection)."""

Box = tuple[float, float, float, float]
"""``(x, y, w, h)`` in pixels of the upright picture, COCO's bbox convention."""


class DetectionStoreError(ValueError):
    """A store folder that cannot be used (another folder's, an unknown format, locked by another writer)."""


@dataclass(frozen=True)
class DetectedImage:
    """One image as the detector saw it.

    Attributes:
        file_name: relative to the image folder, POSIX separators.
        state: the file when it was detected (its fingerprint tells an edited image).
        size: (width, height) of the upright picture.
        persons: ``(box, score)`` of each person kept, best first; empty when none was found.
    """

    file_name: str
    state: FileState
    size: tuple[int, int]
    persons: tuple[tuple[Box, float], ...] = ()


def folder_digest(text: str, length: int = 12) -> str:
    """A stable short hash (blake2b) of ``text``: a resolved folder path or an identity's JSON."""
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()[:length]


def identity_digest(detector: Mapping[str, object]) -> str:
    """The digest naming a detector identity's folder (its fields as sorted JSON)."""
    return folder_digest(json.dumps(dict(detector), sort_keys=True), 16)


def folder_store_path(store_root: str | Path, folder: str | Path) -> Path:
    """Where the store keeps the detections of ``folder`` (by its resolved path: two ``frames`` folders differ)."""
    resolved = Path(folder).resolve()
    return Path(store_root) / f"{resolved.name}-{folder_digest(str(resolved))}"


def slot_of_image(file_name: str, num_shards: int) -> int:
    """The slot (0..num_shards-1) that detects ``file_name``: the same in every process and Python run."""
    return int(folder_digest(file_name, 16), 16) % num_shards


class DetectionStore:
    """The detections of one image folder by one detector identity.

    Args:
        store_root: the store's root folder.
        folder: the image folder.
        detector: the detector's identity (JSON-able fields: model, weights hash, thresholds...).
    """

    def __init__(self, store_root: str | Path, folder: str | Path, detector: Mapping[str, object]) -> None:
        self.folder = Path(folder).resolve()
        self.detector = dict(detector)
        self.path = folder_store_path(store_root, folder) / identity_digest(detector)

    @classmethod
    def current(cls, store_root: str | Path, folder: str | Path) -> DetectionStore | None:
        """The identity last detected for ``folder`` (None when it was never detected).

        Raises:
            DetectionStoreError: the store's records are damaged or belong to another folder.
        """
        base = folder_store_path(store_root, folder)
        if not (base / "folder.json").is_file():
            return None
        head = _read_header(base / "folder.json", Path(folder).resolve())
        detector = _read_header(base / str(head.get("current", "")) / "detector.json", Path(folder).resolve())
        return cls(store_root, folder, detector["detector"])

    def activate(self) -> None:
        """Create this identity's folder (once) and make it the folder's current one (atomically).

        Raises:
            DetectionStoreError: the identity folder holds another detector (a hash collision or a hand edit).
        """
        header = self.path / "detector.json"
        if header.is_file():
            if _read_header(header, self.folder)["detector"] != self.detector:
                raise DetectionStoreError(f"{header}: holds another detector than {self.detector}")
        else:
            write_json(header, {"format": STORE_FORMAT, "folder": str(self.folder), "detector": self.detector})
        write_json(self.path.parent / "folder.json",
                   {"format": STORE_FORMAT, "folder": str(self.folder), "current": self.path.name})  # fmt: skip

    def images(self) -> dict[str, list[DetectedImage]]:
        """Every committed entry by file name (several when the image was edited and detected again)."""
        out: dict[str, list[DetectedImage]] = {}
        for _, entries in self._readable_parts():
            for entry in entries:
                out.setdefault(entry.file_name, []).append(entry)
        return out

    def parts(self) -> list[Path]:
        """The committed part files, sorted by name."""
        return sorted(self.path.glob("part-*.json")) if self.path.is_dir() else []

    def _readable_parts(self) -> list[tuple[Path, list[DetectedImage]]]:
        """Each readable part with its entries; a damaged one is left out with a warning (and left in place)."""
        for _ in range(3):
            try:
                return [(part, entries) for part in self.parts() if (entries := self._read_part(part)) is not None]
            except FileNotFoundError:  # a part merged away between listing and reading (``compact``): list again
                continue
        raise DetectionStoreError(f"{self.path}: parts keep disappearing while read (another process compacting?)")

    @staticmethod
    def _read_part(part: Path) -> list[DetectedImage] | None:
        if not part.is_file():
            raise FileNotFoundError(part)
        try:
            return parse_part(read_json(part, "detections part"))
        except ValueError as exc:
            # Parts are renamed into place whole, so this is a damaged disk or a hand edit: its images are
            # detected again, nothing else is lost.
            warnings.warn(f"{part}: damaged detections part left out, its images will be detected again ({exc})",
                          RuntimeWarning, stacklevel=4)  # fmt: skip
            return None

    def writer(self, *, shard_index: int = 0, num_shards: int = 1, part_size: int = 256) -> DetectionWriter:
        """Open the writer of slot ``shard_index`` of ``num_shards`` (a context manager; activates the identity).

        Raises:
            DetectionStoreError: another process writes the same slot.
        """
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard index {shard_index} is not in 0..{num_shards - 1}")
        self.activate()
        lock = FileLock(self.path / "locks" / f"slot-{shard_index}-of-{num_shards}.lock",
                        description=f"slot {shard_index}/{num_shards} of detections {self.path}")  # fmt: skip
        try:
            lock.acquire()
        except LockBusyError as exc:
            raise DetectionStoreError(f"{exc}; refusing to detect the same images twice") from None
        prefix = f"part-s{shard_index}of{num_shards}-"
        for temp in self.path.glob(f".{prefix}*.tmp"):  # a killed writer of this slot (we hold its lock)
            temp.unlink(missing_ok=True)
        return DetectionWriter(self.path, prefix, lock, part_size)

    def compact(self, min_parts: int = 64) -> int:
        """Merge the parts into one when there are at least ``min_parts``; the number of parts merged.

        Safe beside readers and writers: the merged part is committed before the parts it holds are removed, a
        reader that finds a part gone lists again, and a duplicate entry (same image, same fingerprint) is
        harmless. Entries are kept as they are (stale ones of edited images included); damaged parts are not merged.
        """
        if len(self.parts()) < min_parts:
            return 0
        readable = self._readable_parts()  # a damaged part stays where it is, for a person to look at
        entries = {(e.file_name, e.state.fingerprint): e for _, part_entries in readable for e in part_entries}
        with atomic_write(self.path / f"part-merged-{uuid.uuid4().hex}.json", "w") as handle:
            json.dump(part_payload(list(entries.values())), handle, separators=(",", ":"))
        for part, _ in readable:
            part.unlink(missing_ok=True)
        return len(readable)


class DetectionWriter:
    """Collects detected images and commits them as parts of ``part_size`` images (and the rest on close).

    Closing commits what was added, on an exception too (Ctrl-C keeps the finished images); only a process
    killed outright loses the part it was filling.
    """

    def __init__(self, path: Path, prefix: str, lock: FileLock, part_size: int) -> None:
        self.path, self.prefix, self.lock, self.part_size = path, prefix, lock, part_size
        self.pending: list[DetectedImage] = []
        self.committed: list[Path] = []

    def add(self, images: Sequence[DetectedImage]) -> None:
        self.pending.extend(images)
        while len(self.pending) >= self.part_size:
            self._commit(self.pending[: self.part_size])
            del self.pending[: self.part_size]

    def _commit(self, images: Sequence[DetectedImage]) -> None:
        path = self.path / f"{self.prefix}{uuid.uuid4().hex}.json"
        with atomic_write(path, "w") as handle:
            json.dump(part_payload(images), handle, separators=(",", ":"))
        self.committed.append(path)

    def close(self) -> None:
        try:
            if self.pending:
                self._commit(self.pending)
                self.pending.clear()
        finally:
            self.lock.release()

    def __enter__(self) -> DetectionWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def part_payload(images: Sequence[DetectedImage]) -> dict[str, object]:
    """A part as JSON: the images covered, and their persons in the ``detections.json`` format."""
    return {
        "format": STORE_FORMAT,
        "images": [_image_json(i) for i in images],
        "detections": [_detection_json(i.file_name, box, score) for i in images for box, score in i.persons],
    }


def _image_json(image: DetectedImage) -> dict[str, object]:
    state = image.state
    return {"file_name": image.file_name, "size": state.size, "mtime_ns": state.mtime_ns,
            "fingerprint": state.fingerprint, "width": image.size[0], "height": image.size[1]}  # fmt: skip


def _detection_json(file_name: str, box: Box, score: float) -> dict[str, object]:
    return {"file_name": file_name, "category_id": PERSON_CATEGORY, "bbox": [round(v, 2) for v in box],
            "score": round(score, 5)}  # fmt: skip


def parse_part(data: object) -> list[DetectedImage]:
    """The images of a part's JSON (``part_payload``'s inverse, boxes rounded to 0.01 px).

    Raises:
        ValueError: not a part of this format, or a field of the wrong type.
    """
    if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
        raise ValueError(f"not a detections part (format {STORE_FORMAT})")
    try:
        persons: dict[str, list[tuple[Box, float]]] = {}
        for det in data["detections"]:
            x, y, w, h = (float(v) for v in det["bbox"])
            persons.setdefault(str(det["file_name"]), []).append(((x, y, w, h), float(det["score"])))
        return [
            DetectedImage(str(i["file_name"]), FileState(int(i["size"]), int(i["mtime_ns"]), str(i["fingerprint"])),
                          (int(i["width"]), int(i["height"])), tuple(persons.get(str(i["file_name"]), ())))
            for i in data["images"]
        ]  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"damaged entry ({type(exc).__name__}: {exc})") from None


def matching_entry(entries: Sequence[DetectedImage], path: Path) -> DetectedImage | None:
    """The entry of ``entries`` made from the file at ``path`` as it is now, or None (changed since, or gone).

    A file whose size and mtime match an entry is that entry without being read (the stat shortcut of
    ``storage.hashing.file_state``); otherwise its content fingerprint decides.
    """
    try:
        st = path.stat()
    except OSError:
        return None
    for entry in entries:
        if (entry.state.size, entry.state.mtime_ns) == (st.st_size, st.st_mtime_ns):
            return entry
    with contextlib.suppress(OSError):
        fingerprint = file_fingerprint(path)
        return next((e for e in entries if e.state.fingerprint == fingerprint), None)
    return None


def _read_header(path: Path, folder: Path) -> dict:
    """A ``folder.json`` / ``detector.json`` of ``folder``'s store, checked."""
    try:
        data = read_json(path, "detections store header")
    except FileNotFoundError:
        raise DetectionStoreError(f"{path}: missing (folder.json names a detector the store does not hold)") from None
    if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
        raise DetectionStoreError(f"{path}: not a detections store header (format {STORE_FORMAT})")
    if data.get("folder") != str(folder):
        raise DetectionStoreError(f"{path}: holds the detections of {data.get('folder')}, not of {folder}")
    return data
