"""The cache writer: buffers inferred samples and commits full shards from a background thread.

Compressing, hashing and fsyncing a shard of 512 samples takes a noticeable fraction of a second; on a GPU that
is hundreds of images of teacher time. One background thread writes the previous shard while the caller keeps
the model busy; at most one shard is in flight (a second full buffer waits for it), so memory stays bounded by
two shards. h5py is only used by that thread while the writer is open.

A failed write (full disk, read-only or vanished folder) is turned, in that thread, into one
:class:`CacheWriteError` that says where, what stayed committed and how to resume; the writer then commits
nothing more (the next write would fail the same way) and raises it from the next ``add`` or from ``close``.
"""

from __future__ import annotations

import contextlib
import errno
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from storage.cache.manifest import ShardEntry, load_manifest, utc_now
from storage.cache.provenance import CacheProvenance
from storage.cache.shards import ShardBatch, concat_batches, slice_batch, write_shard
from storage.locking import FileLock

CommitShard = Callable[[Path, tuple[int, int], int], ShardEntry]
"""Renames a complete temporary shard into place and lists it: ``(temp path, slot, num_samples) -> entry``."""

_HINTS = {
    errno.ENOSPC: "free space on that disk",
    errno.EDQUOT: "free space within your disk quota",
    errno.EROFS: "use a folder on a writable file system (reading this cache needs no write access)",
    errno.EACCES: "use a folder you may write to (reading this cache needs no write access)",
    errno.EPERM: "use a folder you may write to (reading this cache needs no write access)",
}


class CacheWriteError(OSError):
    """Writing a cache folder failed (disk full, read-only, no permission); the message names the path, what
    was kept and what to do. ``errno`` is that of the underlying error, ``path`` the file it was about."""

    def __init__(self, message: str, *, path: Path | None = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno


def write_failure(cache_dir: Path, action: str, exc: OSError) -> CacheWriteError:
    """One :class:`CacheWriteError` for an ``OSError`` met while ``action`` (e.g. "create the cache folder")."""
    where = Path(exc.filename) if exc.filename else Path(cache_dir)
    return CacheWriteError(
        f"teacher cache {cache_dir}: cannot {action}: {exc.strerror or exc} ({where}); "
        f"{_HINTS.get(exc.errno, 'fix the cause')} and run the command again",
        path=where, errno=exc.errno,
    )  # fmt: skip


class CacheWriter:
    """Buffers inferred samples and commits them as shards of ``shard_size`` (made by ``TeacherTargetCache.writer``).

    Leaving the ``with`` block commits what is buffered, also on an exception (every buffered sample is
    complete), waits for the background write and releases the slot lock. An error of the background write is
    raised by the next ``add`` or by ``close`` as a :class:`CacheWriteError`; nothing is committed after it.
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
        self._failed: CacheWriteError | None = None

    def add(self, batch: ShardBatch) -> None:
        """Buffer a batch of inferred samples; commits a shard each time ``shard_size`` samples are buffered.

        Raises:
            ValueError: the batch's heatmaps are not (N, K, H, W) of this cache's joints and heatmap size.
        """
        if not self._lock.held:
            raise RuntimeError("this cache writer is closed")
        if self._failed is not None:
            raise self._failed
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
        """Commit the remaining samples (unless a write failed), wait for the shard writes, release the slot lock."""
        try:
            if self._buffered and self._failed is None:
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
            try:
                pending.result()
            except CacheWriteError as exc:
                self._failed = exc
                raise

    def _write(self, batch: ShardBatch) -> None:
        temp = self.cache_dir / f".tmp-slot{self.slot[0]}of{self.slot[1]}-{uuid.uuid4().hex}.h5"
        try:
            write_shard(temp, self.provenance, batch, slot=self.slot, compression=self.compression, created=utc_now())
            self.committed.append(self._commit_shard(temp, self.slot, batch.num_samples))
        except OSError as exc:
            raise self._failure(temp, exc) from exc
        finally:
            # A temporary file that cannot be removed now is removed by the next writer of this slot.
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)

    def _failure(self, temp: Path, exc: OSError) -> CacheWriteError:
        """The error of a failed shard write: where, what this writer and the cache kept, how to resume."""
        mine = sum(e.num_samples for e in self.committed)
        hint = _HINTS.get(exc.errno, "fix the cause")
        try:
            listed = load_manifest(self.cache_dir).shards
            total = f"; the cache lists {len(listed)} shard(s) ({sum(e.num_samples for e in listed)} samples) in all"
        except (OSError, ValueError):
            total = ""
        return CacheWriteError(
            f"teacher cache {self.cache_dir}: writing shard {temp.name} failed: {exc.strerror or exc}"
            f"{f' ({exc.filename})' if exc.filename else ''}. Kept: the {len(self.committed)} shard(s) "
            f"({mine} samples) this run committed before{total}; the samples of the failed shard were not written "
            f"and no partial file is left. {hint[:1].upper()}{hint[1:]} and run the same command again: "
            "committed shards are kept and only the missing samples are inferred",
            path=temp, errno=exc.errno,
        )  # fmt: skip
