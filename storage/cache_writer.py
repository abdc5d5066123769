"""The cache writer: buffers inferred samples and commits full shards from a background thread.

Compressing, hashing and fsyncing a shard of 512 samples takes a noticeable fraction of a second; on a GPU that
is hundreds of images of teacher time. One background thread writes the previous shard while the caller keeps
the model busy; at most one shard is in flight (a second full buffer waits for it), so memory stays bounded by
two shards. h5py is only used by that thread while the writer is open.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from storage.cache_manifest import ShardEntry, utc_now
from storage.cache_provenance import CacheProvenance
from storage.cache_shards import ShardBatch, concat_batches, slice_batch, write_shard
from storage.locking import FileLock

if TYPE_CHECKING:
    from pipeline.data.records import SampleRecord
    from storage.cache import TeacherTargetCache


class CacheWriter:
    """Buffers inferred samples and commits them as shards of ``shard_size`` (made by ``TeacherTargetCache.writer``).

    Leaving the ``with`` block commits what is buffered, also on an exception (every buffered sample is
    complete), waits for the background write and releases the slot lock. An error of the background write is
    raised by the next ``add`` or by ``close``.
    """

    def __init__(
        self,
        cache: TeacherTargetCache,
        provenance: CacheProvenance,
        slot_lock: FileLock,
        slot: tuple[int, int],
        shard_size: int,
        compression: str,
    ) -> None:
        self.cache = cache
        self.provenance = provenance
        self.slot = slot
        self.shard_size = shard_size
        self.compression = compression
        self.committed: list[ShardEntry] = []
        self._lock = slot_lock
        self._buffer: list[ShardBatch] = []
        self._buffered = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-writer")
        self._pending: Future[None] | None = None

    def add(
        self,
        records: Sequence[SampleRecord],
        heatmaps: np.ndarray,
        teacher_joints: np.ndarray,
        teacher_joints_image: np.ndarray,
        maxvals: np.ndarray,
    ) -> None:
        """Buffer N inferred samples; commits a shard each time ``shard_size`` samples are buffered.

        Args:
            records: the N records (fingerprints filled by ``missing``, else computed here).
            heatmaps: (N, K, H, W) teacher heatmaps (flip-test averaged when the provenance says so).
            teacher_joints: (N, K, 2) decoded joints in heatmap pixels.
            teacher_joints_image: (N, K, 2) decoded joints in image pixels.
            maxvals: (N, K) heatmap values at the decoded joints.
        """
        if not self._lock.held:
            raise RuntimeError("this cache writer is closed")
        if self._pending is not None and self._pending.done():
            self._wait()  # raises here if the background write failed
        k = len(self.provenance.joint_names)
        w, h = self.provenance.heatmap_size
        if heatmaps.shape != (len(records), k, h, w):
            raise ValueError(f"heatmaps of shape {heatmaps.shape}, the cache expects (N, {k}, {h}, {w})")
        self._buffer.append(self._batch(records, heatmaps, teacher_joints, teacher_joints_image, maxvals))
        self._buffered += len(records)
        while self._buffered >= self.shard_size:
            self._commit(self.shard_size)

    def close(self) -> None:
        """Commit the remaining samples, wait for the shard writes and release the slot lock."""
        try:
            if self._buffered:
                self._commit(self._buffered)
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
            self._lock.release()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _commit(self, n: int) -> None:
        batch = concat_batches(self._buffer)
        head, rest = slice_batch(batch, 0, n), slice_batch(batch, n, batch.num_samples)
        self._buffer = [rest] if rest.num_samples else []
        self._buffered = rest.num_samples
        self._wait()  # one shard in flight at most
        self._pending = self._pool.submit(self._write, head)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _write(self, batch: ShardBatch) -> None:
        temp = self.cache.path / f".tmp-slot{self.slot[0]}of{self.slot[1]}-{uuid.uuid4().hex}.h5"
        try:
            write_shard(temp, self.provenance, batch, slot=self.slot, compression=self.compression, created=utc_now())
            self.committed.append(self.cache.commit_shard(temp, self.slot, batch.num_samples))
        finally:
            temp.unlink(missing_ok=True)

    def _batch(
        self,
        records: Sequence[SampleRecord],
        heatmaps: np.ndarray,
        teacher_joints: np.ndarray,
        teacher_joints_image: np.ndarray,
        maxvals: np.ndarray,
    ) -> ShardBatch:
        n, k = len(records), len(self.provenance.joint_names)
        joints = np.full((n, k, 2), np.nan, dtype=np.float32)
        visibility = np.zeros((n, k), dtype=np.float32)
        stats = np.zeros((n, 2), dtype=np.int64)
        fingerprints = []
        for i, record in enumerate(records):
            if record.joints is not None:
                joints[i] = record.joints
                visibility[i] = record.visibility if record.visibility is not None else 1.0
            path = Path(record.root) / record.image
            planned = self.cache.image_state(path, record.fingerprint)
            stats[i] = planned[:2]
            fingerprints.append(record.fingerprint or planned[2])
        strings = {
            "source": [r.source for r in records],
            "root": [str(Path(r.root).resolve()) for r in records],
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
