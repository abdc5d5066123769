"""Checking and summarising a teacher cache without changing it (``fpd cache verify`` / ``fpd cache inspect``)."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from storage.cache.index import ColumnCache, DamagedShardWarning, build_index, shard_problem
from storage.cache.manifest import load_manifest
from storage.cache.shards import check_structure


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
    checks = []
    for entry in manifest.shards:
        path = cache_dir / entry.name
        found = shard_problem(path, entry.size, entry.sha256, check_checksum=True)
        if found is not None:
            checks.append(ShardCheck(entry.name, *found))
            continue
        problems = check_structure(path, manifest.provenance, entry.num_samples)
        checks.append(ShardCheck(entry.name, "invalid" if problems else "ok", "; ".join(problems)))
    listed = manifest.shard_names
    unlisted = tuple(sorted(p.name for p in cache_dir.glob("shard-*.h5") if p.name not in listed))
    temps = tuple(sorted(p.name for p in cache_dir.glob(".tmp-*")))
    return VerifyReport(str(cache_dir), tuple(checks), unlisted, temps)


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
        per_source=dict(sorted(Counter(str(s) for s in index.strings["source"]).items())),
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
