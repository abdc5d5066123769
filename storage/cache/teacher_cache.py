"""Teacher target cache: flip-test teacher heatmaps in immutable HDF5 shards plus an atomic manifest.

A cache folder holds ``manifest.json`` (see ``storage.cache.manifest``), committed shards ``shard-<uuid>.h5``
(see ``storage.cache.shards``) and ``locks/``. Writing is crash-safe: a shard is written under a temporary
name ``.tmp-slot<I>of<N>-<uuid>.h5``, fsynced, then renamed and listed in the manifest under the short
manifest lock. A process killed at any moment leaves at worst a temporary file (cleaned by the next writer of
that slot) or a renamed shard the manifest does not list yet (adopted by the next writer). Locking (docs/cache.md):

* ``locks/slot-<I>-of-<N>.lock`` is held by the one writer filling slot ``I`` of ``N`` for its whole run; a
  second writer of the same slot is refused, writers of other slots of the same ``N`` run side by side;
* ``locks/manifest.lock`` is held briefly to open a writer, to commit a shard and to create the cache.
  Opening a writer with ``N`` while a writer with another ``N'`` is alive is refused (their slots overlap).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
import warnings
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import h5py

from storage.atomic import fsync_directory
from storage.cache.dataset import TeacherTargetDataset
from storage.cache.index import CacheIndex, ColumnCache, DamagedShardWarning, build_index
from storage.cache.manifest import MANIFEST_NAME, Manifest, ShardEntry, load_manifest, save_manifest, utc_now
from storage.cache.provenance import CacheMismatchError, CacheProvenance, package_version
from storage.cache.report import CacheSummary, VerifyReport, summarize_cache, verify_cache
from storage.cache.shards import COMPRESSIONS, DEFAULT_COMPRESSION, check_structure
from storage.cache.writer import CacheWriter
from storage.hashing import FileState, sha256_file
from storage.locking import FileLock, LockBusyError, is_locked

logger = logging.getLogger(__name__)

MANIFEST_LOCK_TIMEOUT_S = 60.0
_TEMP_RE = re.compile(r"^\.tmp-slot(\d+)of(\d+)-[0-9a-f]+\.h5$")
_SHARD_RE = re.compile(r"^shard-[0-9a-f]{32}\.h5$")


class CacheLockedError(RuntimeError):
    """Another live process writes the same slot of this cache (or uses an overlapping ``--shard`` layout)."""


class TeacherTargetCache:
    """A teacher target cache folder.

    Args:
        path: the cache folder (created by :meth:`open_or_create`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._columns = ColumnCache()

    def __repr__(self) -> str:
        return f"TeacherTargetCache({str(self.path)!r})"

    # -- opening -----------------------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the folder holds a cache (a manifest)."""
        return (self.path / MANIFEST_NAME).exists()

    def open_or_create(self, provenance: CacheProvenance) -> TeacherTargetCache:
        """Create the cache with ``provenance``, or check that an existing one was made the same way.

        Raises:
            CacheMismatchError: the cache exists with a different identity; the message names each difference.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        with self._manifest_lock():
            if self.exists():
                differences = self.provenance.diff(provenance)
                if differences:
                    raise CacheMismatchError(str(self.path), differences)
            else:
                stamped = replace(provenance, package_version=package_version(), created=utc_now())
                save_manifest(self.path, Manifest(provenance=stamped))
        return self

    @property
    def provenance(self) -> CacheProvenance:
        """The identity the cache was created with (read from the manifest)."""
        return load_manifest(self.path).provenance

    def manifest(self) -> Manifest:
        """The current manifest: committed shards and superseded rows."""
        return load_manifest(self.path)

    # -- reading -----------------------------------------------------------------------------------------------

    def index(self, *, check_checksums: bool = False) -> CacheIndex:
        """The live records (damaged shards skipped with a warning); see ``storage.cache.index``."""
        return build_index(self.path, load_manifest(self.path), self._columns, check_checksums=check_checksums)

    def dataset(self, *, check_checksums: bool = True) -> TeacherTargetDataset:
        """Torch dataset over the live records (see ``storage.cache.dataset.TeacherTargetDataset``)."""
        return TeacherTargetDataset(self.path, check_checksums=check_checksums)

    def file_states(self) -> dict[tuple[str, str, str], FileState]:
        """``(source, image, instance_id)`` -> the image's state when its sample was cached, for every live sample.

        Shards are checked against their manifest checksums first (as the training reader does), so the samples
        of a damaged shard are absent here and get planned again rather than silently lost to training.
        """
        index = self.index(check_checksums=True)
        size, mtime = index.numeric["file_size"], index.numeric["file_mtime_ns"]
        fingerprint = index.strings["fingerprint"]
        return {index.key(i): FileState(int(size[i]), int(mtime[i]), str(fingerprint[i])) for i in range(len(index))}

    # -- writing -----------------------------------------------------------------------------------------------

    def writer(
        self,
        *,
        shard_index: int = 0,
        num_shards: int = 1,
        shard_size: int = 512,
        compression: str = DEFAULT_COMPRESSION,
    ) -> CacheWriter:
        """Open a writer for slot ``shard_index`` of ``num_shards`` (use as a context manager).

        Raises:
            CacheLockedError: another live writer holds the same slot, or one with a different ``num_shards``.
        """
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard index {shard_index} is not in 0..{num_shards - 1}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r}; known: {', '.join(COMPRESSIONS)}")
        slot_lock = FileLock(
            self.path / "locks" / f"slot-{shard_index}-of-{num_shards}.lock",
            description=f"slot {shard_index}/{num_shards} of teacher cache {self.path}",
        )
        with self._manifest_lock():
            manifest = load_manifest(self.path)
            for other in sorted((self.path / "locks").glob("slot-*-of-*.lock")):
                other_n = int(other.stem.rsplit("-", 1)[1])
                if other_n != num_shards and is_locked(other):
                    raise CacheLockedError(
                        f"teacher cache {self.path}: a writer with --shard {other.stem[5:].replace('-of-', '/')} "
                        f"is running; slots of {other_n} and {num_shards} shards overlap, refusing"
                    )
            try:
                slot_lock.acquire()
            except LockBusyError:
                raise CacheLockedError(
                    f"teacher cache {self.path}: another process is already writing slot {shard_index}/{num_shards} "
                    f"(lock {slot_lock.path}); refusing to interleave"
                ) from None
            try:
                self._clean_temp_files(shard_index, num_shards)
                self._adopt_orphans(manifest)
            except BaseException:
                slot_lock.release()
                raise
        return CacheWriter(
            self.path, manifest.provenance, slot_lock, (shard_index, num_shards), shard_size, compression,
            commit=self.commit_shard,
        )  # fmt: skip

    def commit_shard(self, temp: Path, slot: tuple[int, int], num_samples: int) -> ShardEntry:
        """Rename a complete, fsynced temporary shard into place and list it (superseding older records)."""
        name = f"shard-{uuid.uuid4().hex}.h5"
        entry = ShardEntry(name, num_samples, temp.stat().st_size, sha256_file(temp), slot, utc_now())
        with self._manifest_lock():
            os.replace(temp, self.path / name)
            fsync_directory(self.path)
            self._append(load_manifest(self.path), entry)
        return entry

    def _append(self, manifest: Manifest, entry: ShardEntry) -> None:
        """Add ``entry`` to the manifest and mark every older live record of its keys as superseded."""
        with warnings.catch_warnings():
            # A damaged shard cannot be superseded row by row; readers skip it anyway, and warn about it there.
            warnings.simplefilter("ignore", DamagedShardWarning)
            index = build_index(self.path, manifest, self._columns, check_checksums=False)
        live = {index.key(i): (index.shard_names[index.shard_of[i]], int(index.row[i])) for i in range(len(index))}
        strings, _ = self._columns.get(self.path / entry.name)
        for r, key in enumerate(zip(strings["source"], strings["image"], strings["instance_id"], strict=True)):
            if key in live:
                shard, row = live[key]
                manifest.superseded.setdefault(shard, []).append(row)
            live[key] = (entry.name, r)
        manifest.shards.append(entry)
        save_manifest(self.path, manifest)
        logger.info("committed %s (%d samples) to %s", entry.name, entry.num_samples, self.path)

    def _clean_temp_files(self, shard_index: int, num_shards: int) -> None:
        """Delete temporary shards of dead writers: ours, and those of slots nobody holds (under manifest lock)."""
        for temp in self.path.glob(".tmp-slot*.h5"):
            match = _TEMP_RE.match(temp.name)
            if match is None:
                continue
            slot = (int(match[1]), int(match[2]))
            mine = slot == (shard_index, num_shards)
            if mine or not is_locked(self.path / "locks" / f"slot-{slot[0]}-of-{slot[1]}.lock"):
                logger.info("removing leftover temporary shard %s", temp.name)
                temp.unlink(missing_ok=True)

    def _adopt_orphans(self, manifest: Manifest) -> None:
        """List complete shards renamed into place by a writer killed before its manifest update.

        Renames and manifest updates both happen under the manifest lock, which the caller holds, so an
        unlisted shard seen here belongs to a dead process. It was fsynced before the rename, so it is complete.
        """
        listed = manifest.shard_names
        for path in sorted(self.path.glob("shard-*.h5")):
            if not _SHARD_RE.match(path.name) or path.name in listed:
                continue
            problems = check_structure(path, manifest.provenance)
            if problems:
                logger.warning("not adopting unlisted shard %s: %s", path.name, "; ".join(problems))
                continue
            strings, _ = self._columns.get(path)
            st = path.stat()
            created = datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(timespec="seconds")
            slot = _read_slot(path)
            entry = ShardEntry(path.name, len(strings["source"]), st.st_size, sha256_file(path), slot, created)
            logger.info("adopting complete shard %s left unlisted by an interrupted writer", path.name)
            self._append(manifest, entry)

    def _manifest_lock(self) -> FileLock:
        return FileLock(
            self.path / "locks" / "manifest.lock",
            timeout=MANIFEST_LOCK_TIMEOUT_S,
            description=f"the manifest of teacher cache {self.path}",
        )

    # -- checking ----------------------------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Check every shard (presence, size, checksum, attributes, shapes); changes nothing."""
        return verify_cache(self.path)

    def inspect(self, *, lowest: int = 10) -> CacheSummary:
        """Provenance, counts, disk use and teacher confidence statistics (see ``storage.cache.report``)."""
        return summarize_cache(self.path, lowest=lowest)


def _read_slot(path: Path) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        slot = f.attrs["slot"]
        return int(slot[0]), int(slot[1])
