"""Storage: the teacher target cache, checkpoints, annotation and result files, atomic writes, locks."""

from storage.cache import CacheLockedError, CacheWriter, TeacherTargetCache
from storage.cache_provenance import CacheMismatchError, CacheProvenance

__all__ = ["CacheLockedError", "CacheMismatchError", "CacheProvenance", "CacheWriter", "TeacherTargetCache"]
