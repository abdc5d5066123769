"""Checking and summarising a teacher cache without changing it (``fpd cache verify`` / ``fpd cache inspect``),
and judging what ``fpd cache repair`` may change (``TeacherTargetCache.repair`` acts on that, under the lock).

Repair's rule: a damaged listed shard is dropped when every record key it holds has a live record in a sound
shard, i.e. its samples were inferred again since the damage (``fpd infer`` plans a damaged shard's samples
again). Its rows must be readable to tell: a missing or unparsable shard is kept unless forced, since dropping it
would hide from the warnings that its samples are absent. Nothing is deleted: dropped files go to ``damaged/``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from storage.cache.index import (
    ColumnCache,
    DamagedShardWarning,
    RecordKey,
    build_index,
    key_digest,
    key_digests,
    row_key,
    shard_problem,
)
from storage.cache.manifest import SHARD_NAME_RE, Manifest, ShardEntry, load_manifest
from storage.cache.shards import check_structure, read_columns, read_header
from storage.hashing import sha256_file

DAMAGED_DIR = "damaged"
"""Sub-folder where repair moves the files it takes out of the cache (never deleted)."""


@dataclass(frozen=True)
class ShardCheck:
    """Verdict on one shard: ``status`` is ``"ok"``, ``"missing"``, ``"truncated"``, ``"corrupt"`` or ``"invalid"``."""

    name: str
    status: str
    detail: str = ""


@dataclass(frozen=True)
class VerifyReport:
    """Result of ``TeacherTargetCache.verify``; ``ok`` is False when any listed shard is damaged."""

    path: str
    shards: tuple[ShardCheck, ...]
    unlisted: tuple[str, ...] = ()
    temp_files: tuple[str, ...] = ()

    @property
    def damaged(self) -> tuple[ShardCheck, ...]:
        """The checks that are not ``"ok"``."""
        return tuple(s for s in self.shards if s.status != "ok")

    @property
    def ok(self) -> bool:
        """True when every listed shard is sound."""
        return not self.damaged

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def verify_cache(cache_dir: Path) -> VerifyReport:
    """Check presence, size, SHA-256, attributes and dataset shapes of every listed shard; read-only."""
    cache_dir = Path(cache_dir)
    manifest = load_manifest(cache_dir)
    listed = manifest.shard_names
    unlisted = tuple(sorted(p.name for p in cache_dir.glob("shard-*.h5") if p.name not in listed))
    temps = tuple(sorted(p.name for p in cache_dir.glob(".tmp-*")))
    return VerifyReport(str(cache_dir), check_shards(cache_dir, manifest), unlisted, temps)


def check_shards(cache_dir: Path, manifest: Manifest) -> tuple[ShardCheck, ...]:
    """The verdict on every shard ``manifest`` lists, in manifest order (hashes each one)."""
    checks = []
    for entry in manifest.shards:
        path = cache_dir / entry.name
        found = shard_problem(path, entry.size, entry.sha256, check_checksum=True)
        if found is not None:
            checks.append(ShardCheck(entry.name, *found))
            continue
        problems = check_structure(path, manifest.provenance, entry.num_samples)
        checks.append(ShardCheck(entry.name, "invalid" if problems else "ok", "; ".join(problems)))
    return tuple(checks)


@dataclass(frozen=True)
class DamagedShard:
    """A damaged listed shard as repair judges it.

    Attributes:
        name, status, detail: as ``fpd cache verify`` reports them.
        num_samples: the samples the manifest says it holds.
        not_reinferred: how many of its record keys have no live record in a sound shard; None when its rows
            cannot be read (file missing or unparsable), so that it cannot be told.
        dropped: whether repair took it out of the manifest (its file, if any, is then in ``damaged/``).
    """

    name: str
    status: str
    detail: str
    num_samples: int
    not_reinferred: int | None
    dropped: bool = False


@dataclass(frozen=True)
class RepairReport:
    """Result of ``TeacherTargetCache.repair``: every damaged shard, dropped or kept; ``ok`` when none is kept."""

    path: str
    shards: tuple[DamagedShard, ...]

    @property
    def dropped(self) -> tuple[DamagedShard, ...]:
        return tuple(s for s in self.shards if s.dropped)

    @property
    def kept(self) -> tuple[DamagedShard, ...]:
        return tuple(s for s in self.shards if not s.dropped)

    @property
    def ok(self) -> bool:
        """True when no damaged shard is left in the manifest (``fpd cache verify`` then passes)."""
        return not self.kept

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True)
class RebuildReport:
    """Result of ``TeacherTargetCache.rebuild_manifest``.

    Attributes:
        path: the cache folder.
        backup: where the unreadable manifest was copied (None when there was none).
        shards: the shards the new manifest lists, in commit order.
        num_samples: the samples they hold (superseded records included).
        num_superseded: records hidden by a newer record of their key.
        set_aside: (shard, why) of the shard files that could not be read, moved to ``damaged/``.
    """

    path: str
    backup: str | None
    shards: tuple[str, ...]
    num_samples: int
    num_superseded: int
    set_aside: tuple[tuple[str, str], ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_damaged(cache_dir: Path, manifest: Manifest) -> list[DamagedShard]:
    """The damaged shards of ``manifest`` with how many of their samples no sound shard holds (read-only)."""
    damaged = [c for c in check_shards(cache_dir, manifest) if c.status != "ok"]
    names = {c.name for c in damaged}
    sound = Manifest(manifest.provenance, [e for e in manifest.shards if e.name not in names], manifest.superseded)
    # The sound shards were just hashed and parsed: the index need not hash them again.
    index = build_index(cache_dir, sound, ColumnCache(), check_checksums=False)
    live = {key_digest(index.key(i)) for i in range(len(index))}
    entries = {e.name: e for e in manifest.shards}
    judged = []
    for check in damaged:
        entry = entries[check.name]
        digests = _shard_key_digests(cache_dir, entry)
        missing = None if digests is None else len(digests - live)
        judged.append(DamagedShard(check.name, check.status, check.detail, entry.num_samples, missing))
    return judged


def _shard_key_digests(cache_dir: Path, entry: ShardEntry) -> set[str] | None:
    """The key digests of a damaged shard's rows: read from the file, else from its manifest entry; None when
    neither has them all (a shard committed before the manifest listed digests, and now unreadable).

    A repair interrupted between moving the file and saving the manifest left it in ``damaged/``: read it there.
    """
    path = cache_dir / entry.name
    if not path.exists():
        path = cache_dir / DAMAGED_DIR / entry.name
    try:
        strings, _ = read_columns(path)
        if len(strings["source"]) == entry.num_samples:
            return {key_digest(row_key(strings, r)) for r in range(entry.num_samples)}
    except (OSError, KeyError, ValueError, RuntimeError):  # what h5py raises for a damaged file
        pass
    digests = entry.key_digests
    if len(digests) != 16 * entry.num_samples:
        return None
    return {digests[i : i + 16] for i in range(0, len(digests), 16)}


def rebuilt_manifest(cache_dir: Path) -> tuple[Manifest, list[tuple[str, str]]]:
    """A manifest listing every sound ``shard-*.h5`` of the folder, and the (shard, why) of those left out.

    Shards are listed in the order they were written (their ``created`` attribute, then file mtime) and a key's
    newest record supersedes the older ones, as commits would have decided. Each shard's checksum is taken from
    the file as it is now: damage inside heatmap data that the lost manifest's checksums would have revealed
    cannot be seen any more (the structure and attributes are checked).

    Raises:
        ValueError: no sound shard to rebuild from, or shards written by different teachers.
    """
    found, aside = [], []
    for path in sorted(p for p in Path(cache_dir).glob("shard-*.h5") if SHARD_NAME_RE.match(p.name)):
        try:
            header = read_header(path)
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            aside.append((path.name, f"cannot be read: {exc}"))
            continue
        problems = check_structure(path, header.provenance, header.num_samples)
        try:
            strings = read_columns(path)[0] if not problems else {}
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            problems = [f"cannot be read: {exc}"]
        if problems:
            aside.append((path.name, "; ".join(problems)))
        else:
            found.append((header.created, path.stat().st_mtime_ns, path, header, strings))
    if not found:
        raise ValueError(f"teacher cache {cache_dir}: no readable shard to rebuild a manifest from; move the folder "
                         "aside and run fpd infer into a new one")  # fmt: skip
    found.sort(key=lambda f: f[:3])
    provenance = found[0][3].provenance
    for _, _, path, header, _ in found:
        differences = provenance.diff(header.provenance)
        if differences:
            raise ValueError(f"teacher cache {cache_dir}: cannot rebuild the manifest, {path.name} was written by "
                             f"another teacher than {found[0][2].name} ({'; '.join(differences)}); move one of "
                             "them out of the folder first")  # fmt: skip
    manifest = Manifest(provenance)
    newest: dict[RecordKey, tuple[str, int]] = {}
    for created, _, path, header, strings in found:
        for r in range(header.num_samples):
            key = row_key(strings, r)
            if key in newest:
                older, row = newest[key]
                manifest.superseded.setdefault(older, []).append(row)
            newest[key] = (path.name, r)
        entry = ShardEntry(path.name, header.num_samples, path.stat().st_size, sha256_file(path), header.slot, created,
                           key_digests(strings))  # fmt: skip
        manifest.shards.append(entry)
    return manifest, aside


@dataclass(frozen=True)
class JointConfidence:
    """Teacher confidence (heatmap maximum) of one joint over the live samples."""

    joint: str
    mean: float
    p10: float
    p50: float


@dataclass(frozen=True)
class CacheSummary:
    """What ``fpd cache inspect`` shows; ``to_dict`` is its ``--json`` form."""

    path: str
    provenance: dict[str, Any]
    num_samples: int
    num_superseded: int
    per_source: dict[str, int]
    labelled: int
    unlabeled: int
    num_shards: int
    disk_bytes: int
    bytes_per_sample: float
    joint_confidence: tuple[JointConfidence, ...]
    lowest_confidence: tuple[dict[str, Any], ...]
    damaged_shards: tuple[tuple[str, str], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_cache(cache_dir: Path, *, lowest: int = 10) -> CacheSummary:
    """Counts, disk use and per-joint confidence statistics of the live samples (reads no heatmaps)."""
    manifest = load_manifest(cache_dir)
    with warnings.catch_warnings():
        # Damaged shards are listed in the summary itself; a warning per shard would repeat them.
        warnings.simplefilter("ignore", DamagedShardWarning)
        index = build_index(cache_dir, manifest, ColumnCache(), check_checksums=False)
    stored = sum(e.num_samples for e in manifest.shards)
    disk = sum((cache_dir / e.name).stat().st_size for e in manifest.shards if (cache_dir / e.name).exists())
    maxvals = index.numeric["maxvals"].reshape(len(index), len(manifest.provenance.joint_names))
    labelled = int(index.numeric["labelled"].sum()) if len(index) else 0
    confidence = tuple(
        JointConfidence(name, *(float(v) for v in _stats(maxvals[:, j])))
        for j, name in enumerate(manifest.provenance.joint_names)
    )
    order = np.argsort(maxvals.mean(axis=1), kind="stable")[:lowest] if len(index) else []
    lows = tuple(
        {
            "source": str(index.strings["source"][i]),
            "image": str(index.strings["image"][i]),
            "instance_id": str(index.strings["instance_id"][i]),
            "mean_maxval": float(maxvals[i].mean()),
        }
        for i in order
    )
    return CacheSummary(
        path=str(cache_dir),
        provenance=manifest.provenance.to_dict(),
        num_samples=len(index),
        num_superseded=index.num_superseded,
        per_source=_per_source(index.strings["source"], index.strings["root"]),
        labelled=labelled,
        unlabeled=len(index) - labelled,
        num_shards=len(manifest.shards),
        disk_bytes=disk,
        bytes_per_sample=disk / stored if stored else 0.0,
        joint_confidence=confidence,
        lowest_confidence=lows,
        damaged_shards=index.damaged,
    )


def _stats(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, p10, p50), NaN for an empty cache."""
    if values.size == 0:
        return (float("nan"),) * 3
    return float(values.mean()), float(np.percentile(values, 10)), float(np.percentile(values, 50))


def _per_source(sources: np.ndarray, roots: np.ndarray) -> dict[str, int]:
    """Samples per source name; a name that folders at several roots share is shown once per root."""
    counts = Counter((str(s), str(r)) for s, r in zip(sources, roots, strict=True))
    shared = Counter(name for name, _ in counts)
    return dict(sorted((f"{name} ({root})" if shared[name] > 1 else name, n) for (name, root), n in counts.items()))
