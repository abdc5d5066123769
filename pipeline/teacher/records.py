"""Pose records to teacher-cache columns and back: the one place that knows both ``SampleRecord`` and a shard.

``storage.cache`` stores columns of plain values (strings, arrays) and knows nothing of records; teacher
inference turns each batch of records and outputs into a :class:`~storage.cache.ShardBatch`, and readers
(training, overlays) turn index rows back into records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pipeline.records import SampleRecord, resolved_root
from storage.cache import CacheIndex, ShardBatch
from storage.hashing import FileState, file_state


def shard_batch(
    records: Sequence[SampleRecord],
    states: Mapping[str, FileState],
    heatmaps: np.ndarray,
    teacher_joints: np.ndarray,
    teacher_joints_image: np.ndarray,
    maxvals: np.ndarray,
) -> ShardBatch:
    """The columns a shard stores for N inferred records.

    Args:
        records: the N records.
        states: image path (``str(record.path)``) -> the state it had when planned; an image missing here is
            stat'ed and hashed now.
        heatmaps: (N, K, H, W) teacher heatmaps (flip-test averaged when the provenance says so).
        teacher_joints: (N, K, 2) decoded joints in heatmap pixels.
        teacher_joints_image: (N, K, 2) decoded joints in image pixels.
        maxvals: (N, K) heatmap values at the decoded joints.
    """
    n, k = len(records), int(heatmaps.shape[1])
    joints = np.full((n, k, 2), np.nan, dtype=np.float32)
    visibility = np.zeros((n, k), dtype=np.float32)
    stats = np.zeros((n, 2), dtype=np.int64)
    fingerprints = []
    for i, record in enumerate(records):
        if record.joints is not None:
            joints[i] = record.joints
            visibility[i] = record.visibility if record.visibility is not None else 1.0
        state = states.get(str(record.path)) or file_state(record.path)
        stats[i] = state.size, state.mtime_ns
        fingerprints.append(record.fingerprint or state.fingerprint)
    strings = {
        "source": [r.source for r in records],
        "root": [resolved_root(r.root) for r in records],
        "image": [r.image for r in records],
        "instance_id": [str(r.instance_id) for r in records],
        "fingerprint": fingerprints,
    }
    numeric = {
        "center": np.array([r.center for r in records], dtype=np.float64).reshape(n, 2),
        "scale": np.array([r.scale for r in records], dtype=np.float64).reshape(n, 2),
        "rotation": np.array([r.rotation for r in records], dtype=np.float64),
        "score": np.array([r.score for r in records], dtype=np.float32),
        "image_id": np.array([r.image_id for r in records], dtype=np.int64),
        "labelled": np.array([r.joints is not None for r in records], dtype=bool),
        "joints": joints,
        "visibility": visibility,
        "teacher_joints": np.asarray(teacher_joints, dtype=np.float32).reshape(n, k, 2),
        "teacher_joints_image": np.asarray(teacher_joints_image, dtype=np.float32).reshape(n, k, 2),
        "maxvals": np.asarray(maxvals, dtype=np.float32).reshape(n, k),
        "file_size": stats[:, 0].copy(),
        "file_mtime_ns": stats[:, 1].copy(),
    }
    return ShardBatch(strings=strings, numeric=numeric, heatmaps=np.asarray(heatmaps, dtype=np.float16))


def cached_record(index: CacheIndex, i: int) -> SampleRecord:
    """The ``SampleRecord`` of live sample ``i`` (joints and visibility None when unlabeled)."""
    num, strings = index.numeric, index.strings
    labelled = bool(num["labelled"][i])
    return SampleRecord(
        source=str(strings["source"][i]),
        root=Path(strings["root"][i]),
        image=str(strings["image"][i]),
        center=(float(num["center"][i, 0]), float(num["center"][i, 1])),
        scale=(float(num["scale"][i, 0]), float(num["scale"][i, 1])),
        instance_id=str(strings["instance_id"][i]),
        joints=num["joints"][i].copy() if labelled else None,
        visibility=num["visibility"][i].copy() if labelled else None,
        rotation=float(num["rotation"][i]),
        score=float(num["score"][i]),
        image_id=int(num["image_id"][i]),
        fingerprint=str(strings["fingerprint"][i]),
    )


def cached_records(index: CacheIndex, source: str | None = None) -> list[SampleRecord]:
    """Every live record (of ``source`` when given), in index order."""
    sources = index.strings["source"]
    return [cached_record(index, i) for i in range(len(index)) if source is None or str(sources[i]) == source]
