"""Teacher target cache: flip-test teacher heatmaps in immutable HDF5 shards plus an atomic manifest.

A cache folder holds ``manifest.json`` (see ``storage.cache.manifest``), committed shards ``shard-<uuid>.h5``
(see ``storage.cache.shards``) and ``locks/``. Writing is crash-safe: a shard is written under a temporary
name ``.tmp-slot<I>of<N>-<uuid>.h5``, fsynced, then renamed and listed in the manifest under the short
manifest lock. A process killed at any moment leaves at worst a temporary file (cleaned by the next writer of
that slot) or a renamed shard the manifest does not list yet (adopted by the next writer). Locking (docs/cache.md):

* ``locks/slot-<I>-of-<N>.lock`` is held by the one writer filling slot ``I`` of ``N`` for its whole run; a
  second writer of the same slot is refused, writers of other slots of the same ``N`` run side by side;
* ``locks/manifest.lock`` is held briefly to open a writer, to commit a shard, to create and to repair the cache.
  Opening a writer with ``N`` while a writer with another ``N'`` is alive is refused (their slots overlap).

A folder that cannot be written (read-only, no permission, disk full) raises one ``CacheWriteError`` naming the
path; reading needs no write access. ``repair`` takes damaged shards out of the manifest once their samples were
inferred again, and rebuilds an unreadable manifest from the shards (``storage.cache.report`` decides what).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from storage.atomic import fsync_directory
from storage.cache.dataset import TeacherTargetDataset
from storage.cache.index import (
    CachedSample,
    CacheIndex,
    ColumnCache,
    DamagedShardWarning,
    RecordKey,
    build_index,
    key_digests,
    row_key,
)
from storage.cache.manifest import (
    MANIFEST_NAME,
    SHARD_NAME_RE,
    Manifest,
    ManifestError,
    ShardEntry,
    load_manifest,
    save_manifest,
    utc_now,
)
from storage.cache.provenance import CacheMismatchError, CacheProvenance, package_version
from storage.cache.report import (
    DAMAGED_DIR,
    CacheSummary,
    RebuildReport,
    RepairReport,
    VerifyReport,
    judge_damaged,
    rebuilt_manifest,
    summarize_cache,
    verify_cache,
)
from storage.cache.shards import COMPRESSIONS, DEFAULT_COMPRESSION, check_structure, read_header
from storage.cache.writer import CacheWriteError, CacheWriter, write_failure
from storage.hashing import sha256_file
from storage.locking import FileLock, LockBusyError, is_locked

logger = logging.getLogger(__name__)

MANIFEST_LOCK_TIMEOUT_S = 60.0
_TEMP_RE = re.compile(r"^\.tmp-slot(\d+)of(\d+)-[0-9a-f]+\.h5$")


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
            CacheWriteError: the folder (or its parent) cannot be written.
        """
        with self._writing("create or open the cache for writing"):
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

    def cached_samples(self) -> dict[RecordKey, CachedSample]:
        """Key -> image state and crop of every live sample (what planning and training compare records with).

        Shards are checked against their manifest checksums first (as the training reader does), so the samples
        of a damaged shard are absent here and get planned again rather than silently lost to training.
        """
        index = self.index(check_checksums=True)
        return {index.key(i): index.cached_sample(i) for i in range(len(index))}

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
            CacheWriteError: the folder cannot be written (read-only, no permission).
        """
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard index {shard_index} is not in 0..{num_shards - 1}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1 sample, got {shard_size}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r}; known: {', '.join(COMPRESSIONS)}")
        slot_lock = FileLock(
            self.path / "locks" / f"slot-{shard_index}-of-{num_shards}.lock",
            description=f"slot {shard_index}/{num_shards} of teacher cache {self.path}",
        )
        with self._writing("open a writer"), self._manifest_lock():
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
        entry = replace(entry, key_digests=key_digests(strings))
        for r in range(len(strings["source"])):
            key = row_key(strings, r)
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
            if not SHARD_NAME_RE.match(path.name) or path.name in listed:
                continue
            problems = check_structure(path, manifest.provenance)
            if problems:
                logger.warning("not adopting unlisted shard %s: %s", path.name, "; ".join(problems))
                continue
            strings, _ = self._columns.get(path)
            st = path.stat()
            created = datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(timespec="seconds")
            slot = read_header(path).slot
            entry = ShardEntry(path.name, len(strings["source"]), st.st_size, sha256_file(path), slot, created)
            logger.info("adopting complete shard %s left unlisted by an interrupted writer", path.name)
            self._append(manifest, entry)

    def _manifest_lock(self) -> FileLock:
        return FileLock(
            self.path / "locks" / "manifest.lock",
            timeout=MANIFEST_LOCK_TIMEOUT_S,
            description=f"the manifest of teacher cache {self.path}",
        )

    @contextlib.contextmanager
    def _writing(self, action: str) -> Iterator[None]:
        """Turn an OSError of writing this folder (read-only, no permission, full) into one that names the path.

        FileNotFoundError is not a write problem here: it says the folder is not a cache, and stays as it is.
        """
        try:
            yield
        except (CacheWriteError, FileNotFoundError):
            raise
        except OSError as exc:
            raise write_failure(self.path, action, exc) from exc

    # -- repairing ---------------------------------------------------------------------------------------------

    def repair(self, *, force: bool = False) -> RepairReport:
        """Take damaged shards out of the manifest once their samples were inferred again (see docs/cache.md).

        Under the manifest lock, each damaged listed shard (missing, truncated, checksum differs, unparsable)
        whose every record key has a live record in a sound shard is dropped: its file moves to ``damaged/``
        (first, so that a crash before the manifest update leaves it listed, never adoptable) and its
        ``superseded`` entry goes. Other damaged shards are kept and reported with how many samples still lack a
        record, or as unknown when their rows cannot be read; ``force`` drops them too (the next ``fpd infer``
        then infers their samples, as for any missing sample).

        Raises:
            ManifestError: the manifest itself is damaged (see :meth:`rebuild_manifest`).
            CacheWriteError: the folder cannot be written.
        """
        with self._writing("repair the cache"), self._manifest_lock():
            manifest = load_manifest(self.path)
            judged = [replace(d, dropped=force or d.not_reinferred == 0) for d in judge_damaged(self.path, manifest)]
            dropped = {d.name for d in judged if d.dropped}
            if dropped:
                self._set_aside(sorted(dropped))
                manifest.shards = [e for e in manifest.shards if e.name not in dropped]
                manifest.superseded = {k: v for k, v in manifest.superseded.items() if k not in dropped}
                save_manifest(self.path, manifest)
                logger.info("repair of %s dropped %d damaged shards: %s", self.path, len(dropped), sorted(dropped))
        return RepairReport(str(self.path), tuple(judged))

    def rebuild_manifest(self) -> RebuildReport:
        """List the folder's sound shards in a new manifest when the old one cannot be read (or is gone).

        The unreadable manifest is copied to ``damaged/`` first and shards that cannot be read are moved there;
        see ``storage.cache.report.rebuilt_manifest`` for the order, supersession and checksum caveat.

        Raises:
            ValueError: the manifest is readable (nothing to rebuild: use :meth:`repair`), no sound shard is left,
                or the shards come from different teachers.
            CacheWriteError: the folder cannot be written.
        """
        with self._writing("rebuild the manifest"), self._manifest_lock():
            try:
                load_manifest(self.path)
            except (ManifestError, FileNotFoundError):
                pass
            else:
                raise ValueError(f"teacher cache {self.path}: the manifest is readable, nothing to rebuild "
                                 "(fpd cache repair without --rebuild-manifest fixes damaged shards)")  # fmt: skip
            manifest, aside = rebuilt_manifest(self.path)
            backup = None
            if self.exists():
                backup = self.path / DAMAGED_DIR / f"manifest-{uuid.uuid4().hex[:8]}.json"
                backup.parent.mkdir(exist_ok=True)
                shutil.copyfile(self.path / MANIFEST_NAME, backup)
            self._set_aside([name for name, _ in aside])  # before the save: a crash in between leaves no orphan
            save_manifest(self.path, manifest)
        superseded = sum(len(rows) for rows in manifest.superseded.values())
        return RebuildReport(str(self.path), str(backup) if backup else None, tuple(e.name for e in manifest.shards),
                             sum(e.num_samples for e in manifest.shards), superseded, tuple(aside))  # fmt: skip

    def _set_aside(self, names: list[str]) -> None:
        """Move shard files into ``damaged/`` (kept, never deleted; gone files are skipped)."""
        (self.path / DAMAGED_DIR).mkdir(exist_ok=True)
        for name in names:
            if (self.path / name).exists():
                os.replace(self.path / name, self.path / DAMAGED_DIR / name)
        fsync_directory(self.path)

    # -- checking ----------------------------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Check every shard (presence, size, checksum, attributes, shapes); changes nothing."""
        return verify_cache(self.path)

    def inspect(self, *, lowest: int = 10) -> CacheSummary:
        """Provenance, counts, disk use and teacher confidence statistics (see ``storage.cache.report``)."""
        return summarize_cache(self.path, lowest=lowest)

