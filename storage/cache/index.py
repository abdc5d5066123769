"""The live view of a cache: every readable, non-superseded record, with its metadata held in memory.

Shards are immutable, so their columns are read once per process and kept (``ColumnCache``). A shard that is
missing, truncated (size differs from the manifest), fails its checksum (when asked) or cannot be parsed is
skipped with a ``RuntimeWarning`` naming it; the other shards read as usual.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.cache.manifest import Manifest
from storage.cache.shards import NUMERIC_COLUMNS, STRING_COLUMNS, read_columns
from storage.hashing import FileState, sha256_file

Columns = tuple[dict[str, list[str]], dict[str, np.ndarray]]
RecordKey = tuple[str, str, str, str]

KEY_COLUMNS = ("source", "root", "image", "instance_id")
"""The string columns that identify a record (``SampleRecord.key``). ``root`` is stored resolved, so two folders
of one base name, or two roots of one split, never share a key; caches written before the root was part of the
key already stored it resolved and read with the same keys."""


def key_digest(key: RecordKey) -> str:
    """A record key as 16 hexadecimal digits, the same in every process and Python run (the manifest lists one per
    shard row, see ``ShardEntry``; teacher inference assigns slots by it)."""
    return hashlib.blake2b("\x00".join(key).encode(), digest_size=8).hexdigest()


def key_digests(strings: dict[str, list[str]] | dict[str, np.ndarray]) -> str:
    """The digests of every row's key of a shard's string columns, concatenated in row order."""
    return "".join(key_digest(row_key(strings, r)) for r in range(len(strings["source"])))


@dataclass(frozen=True)
class CachedSample:
    """What the cache holds for one key, to tell whether a record is still served by it.

    Attributes:
        state: the image's size, mtime and content fingerprint when the sample was inferred.
        center, scale, rotation: the crop the teacher saw (HRNet convention).
    """

    state: FileState
    center: tuple[float, float]
    scale: tuple[float, float]
    rotation: float

    def change(self, fingerprint: str, center: Sequence[float], scale: Sequence[float], rotation: float) -> str | None:
        """How a record (its image's fingerprint and its crop) differs from this cached sample: ``"edited"`` (other
        image content), ``"moved"`` (another crop, beyond a millionth of a pixel: both sides come from the same
        floats) or None (the cache serves it). Plain float compares: planning calls this once per record."""
        if fingerprint != self.state.fingerprint:
            return "edited"
        close = (abs(self.center[0] - center[0]) <= 1e-6 and abs(self.center[1] - center[1]) <= 1e-6
                 and abs(self.scale[0] - scale[0]) <= 1e-8 and abs(self.scale[1] - scale[1]) <= 1e-8
                 and abs(self.rotation - rotation) <= 1e-6)  # fmt: skip
        return None if close else "moved"


def row_key(strings: dict[str, list[str]] | dict[str, np.ndarray], row: int) -> RecordKey:
    """The key of row ``row`` of a shard's (or the index's) string columns."""
    source, root, image, instance_id = (str(strings[name][row]) for name in KEY_COLUMNS)
    return (source, root, image, instance_id)


class DamagedShardWarning(RuntimeWarning):
    """A shard listed in the manifest cannot be used; its samples are left out of the view."""


class ColumnCache:
    """Per-process memo of shard columns by file name (valid forever: a shard file never changes)."""

    def __init__(self) -> None:
        self._columns: dict[str, Columns] = {}

    def get(self, path: Path) -> Columns:
        """(strings, numeric) columns of the shard at ``path``, read on first use."""
        if path.name not in self._columns:
            self._columns[path.name] = read_columns(path)
        return self._columns[path.name]


@dataclass(frozen=True)
class CacheIndex:
    """Live samples in dataset order (manifest shard order, then row).

    Attributes:
        cache_dir: the cache folder.
        shard_names: committed shards that were readable, in manifest order.
        shard_of: (N,) int index into ``shard_names`` of each live sample.
        row: (N,) int row of each live sample inside its shard.
        strings: column name -> (N,) object array (source, root, image, instance_id, fingerprint).
        numeric: column name -> (N, ...) array (see ``storage.cache.shards``).
        damaged: (shard name, reason) of every shard left out.
        num_superseded: records hidden because a newer record of the same key exists.
    """

    cache_dir: Path
    shard_names: tuple[str, ...]
    shard_of: np.ndarray
    row: np.ndarray
    strings: dict[str, np.ndarray]
    numeric: dict[str, np.ndarray]
    damaged: tuple[tuple[str, str], ...]
    num_superseded: int

    def __len__(self) -> int:
        return int(self.row.shape[0])

    def key(self, i: int) -> RecordKey:
        """(source, root, image, instance_id) of live sample ``i``, as ``SampleRecord.key``."""
        return row_key(self.strings, i)

    def cached_sample(self, i: int) -> CachedSample:
        """Image state and crop of live sample ``i``."""
        num = self.numeric
        state = FileState(int(num["file_size"][i]), int(num["file_mtime_ns"][i]), str(self.strings["fingerprint"][i]))
        center, scale = num["center"][i], num["scale"][i]
        return CachedSample(state, (float(center[0]), float(center[1])), (float(scale[0]), float(scale[1])),
                            float(num["rotation"][i]))  # fmt: skip


def shard_problem(path: Path, expected_size: int, expected_sha256: str, check_checksum: bool) -> tuple[str, str] | None:
    """Why a committed shard cannot be used, as (status, detail); None when it looks intact."""
    if not path.exists():
        return "missing", "the file is gone"
    size = path.stat().st_size
    if size != expected_size:
        return "truncated", f"{size} bytes on disk, {expected_size} in the manifest"
    if check_checksum and sha256_file(path) != expected_sha256:
        return "corrupt", "SHA-256 differs from the manifest"
    return None


def build_index(cache_dir: Path, manifest: Manifest, columns: ColumnCache, *, check_checksums: bool) -> CacheIndex:
    """Gather the live records of all readable shards (newest record per key; superseded rows dropped)."""
    names: list[str] = []
    parts: list[tuple[int, np.ndarray, Columns]] = []
    damaged: list[tuple[str, str]] = []
    num_superseded = 0
    for entry in manifest.shards:
        path = Path(cache_dir) / entry.name
        found = shard_problem(path, entry.size, entry.sha256, check_checksums)
        problem = None if found is None else f"{found[0]}: {found[1]}"
        if problem is None:
            try:
                cols = columns.get(path)
            except (OSError, KeyError, ValueError) as exc:
                problem = f"unreadable: {exc}"
        if problem is not None:
            damaged.append((entry.name, problem))
            message = f"teacher cache {cache_dir}: skipping shard {entry.name} ({problem})"
            warnings.warn(message, DamagedShardWarning, stacklevel=3)
            continue
        live = np.ones(entry.num_samples, dtype=bool)
        dead = manifest.superseded.get(entry.name, [])
        live[dead] = False
        num_superseded += len(dead)
        names.append(entry.name)
        parts.append((len(names) - 1, np.flatnonzero(live), cols))

    # Defence in depth: should two live rows share a key, the later one wins, as supersession would decide.
    newest: dict[RecordKey, int] = {}
    order: list[tuple[int, int]] = []
    for shard_idx, rows, (strings, _) in parts:
        for r in rows:
            key = row_key(strings, r)
            if key in newest:
                order[newest[key]] = (-1, -1)
                num_superseded += 1
            newest[key] = len(order)
            order.append((shard_idx, int(r)))
    # ``order`` is shard-major with rows ascending, so per-shard selections concatenate into dataset order.
    kept_rows: list[list[int]] = [[] for _ in parts]
    for shard_idx, r in order:
        if shard_idx >= 0:
            kept_rows[shard_idx].append(r)
    selections = [(np.asarray(rows, dtype=np.int64), cols) for rows, (_, _, cols) in zip(kept_rows, parts, strict=True)]
    shard_of = np.concatenate([np.full(len(rows), i) for i, (rows, _) in enumerate(selections)] or [np.zeros(0)])
    row = np.concatenate([rows for rows, _ in selections] or [np.zeros(0)])
    strings_out = {name: _gather([np.asarray(c[0][name], dtype=object)[r] for r, c in selections], object)
                   for name in STRING_COLUMNS}  # fmt: skip
    numeric_out = {name: _gather([c[1][name][r] for r, c in selections], np.float32) for name in NUMERIC_COLUMNS}
    return CacheIndex(
        cache_dir=Path(cache_dir), shard_names=tuple(names), shard_of=shard_of.astype(np.int32),
        row=row.astype(np.int32), strings=strings_out, numeric=numeric_out, damaged=tuple(damaged),
        num_superseded=num_superseded,
    )  # fmt: skip


def _gather(parts: list[np.ndarray], empty_dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=empty_dtype)
