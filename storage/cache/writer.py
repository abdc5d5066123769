"""The cache writer: buffers inferred samples and commits full shards from a background thread.

Compressing, hashing and fsyncing a shard of 512 samples takes a noticeable fraction of a second; on a GPU that
is hundreds of images of teacher time. One background thread writes the previous shard while the caller keeps
the model busy; at most one shard is in flight (a second full buffer waits for it), so memory stays bounded by
two shards. h5py is only used by that thread while the writer is open.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from storage.cache.manifest import ShardEntry, utc_now
from storage.cache.provenance import CacheProvenance
from storage.cache.shards import ShardBatch, concat_batches, slice_batch, write_shard
from storage.locking import FileLock

CommitShard = Callable[[Path, tuple[int, int], int], ShardEntry]
"""Renames a complete temporary shard into place and lists it: ``(temp path, slot, num_samples) -> entry``."""


class CacheWriter:
    """Buffers inferred samples and commits them as shards of ``shard_size`` (made by ``TeacherTargetCache.writer``).

    Leaving the ``with`` block commits what is buffered, also on an exception (every buffered sample is
    complete), waits for the background write and releases the slot lock. An error of the background write is
    raised by the next ``add`` or by ``close``.
    """

    def __init__(
        self,
        cache_dir: Path,
        provenance: CacheProvenance,
        slot_lock: FileLock,
        slot: tuple[int, int],
        shard_size: int,
        compression: str,
        *,
        commit: CommitShard,
    ) -> None:
        self.cache_dir = cache_dir
        self._commit_shard = commit
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

    def add(self, batch: ShardBatch) -> None:
        """Buffer a batch of inferred samples; commits a shard each time ``shard_size`` samples are buffered.

        Raises:
            ValueError: the batch's heatmaps are not (N, K, H, W) of this cache's joints and heatmap size.
        """
        if not self._lock.held:
            raise RuntimeError("this cache writer is closed")
        if self._pending is not None and self._pending.done():
            self._wait()  # raises here if the background write failed
        k = len(self.provenance.joint_names)
        w, h = self.provenance.heatmap_size
        if batch.heatmaps.shape != (batch.num_samples, k, h, w):
            raise ValueError(f"heatmaps of shape {batch.heatmaps.shape}, the cache expects (N, {k}, {h}, {w})")
        self._buffer.append(batch)
        self._buffered += batch.num_samples
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
        temp = self.cache_dir / f".tmp-slot{self.slot[0]}of{self.slot[1]}-{uuid.uuid4().hex}.h5"
        try:
            write_shard(temp, self.provenance, batch, slot=self.slot, compression=self.compression, created=utc_now())
            self.committed.append(self._commit_shard(temp, self.slot, batch.num_samples))
        finally:
            temp.unlink(missing_ok=True)
