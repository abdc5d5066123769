"""The teacher target cache: flip-test teacher heatmaps in immutable HDF5 shards plus an atomic manifest.

Modules, bottom up: ``provenance`` (what made the cache), ``manifest`` (committed shards), ``shards`` (one HDF5
file), ``index`` (the live records), ``dataset`` (torch reads), ``writer`` (buffered, background commits),
``report`` (verify / inspect / what repair may drop), ``teacher_cache`` (the folder: opening, locking, committing,
repairing). The cache stores columns of plain values; turning pose records into those columns and back is
``pipeline.teacher.records``'s job.
"""

from storage.cache.dataset import TeacherTargetDataset
from storage.cache.index import CacheIndex, DamagedShardWarning
from storage.cache.manifest import ManifestError
from storage.cache.provenance import CacheMismatchError, CacheProvenance
from storage.cache.report import RebuildReport, RepairReport
from storage.cache.shards import COMPRESSIONS, DEFAULT_COMPRESSION, ShardBatch
from storage.cache.teacher_cache import CacheLockedError, TeacherTargetCache
from storage.cache.writer import CacheWriteError, CacheWriter

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_COMPRESSION",
    "CacheIndex",
    "CacheLockedError",
    "CacheMismatchError",
    "CacheProvenance",
    "CacheWriteError",
    "CacheWriter",
    "DamagedShardWarning",
    "ManifestError",
    "RebuildReport",
    "RepairReport",
    "ShardBatch",
    "TeacherTargetCache",
    "TeacherTargetDataset",
]
