"""File identities: SHA-256 of checkpoints and shards, content fingerprints of images, and the stat shortcut.

Planning a run over a large cache must not re-read every image: a file whose size and mtime match what was
recorded keeps its recorded fingerprint (as ``make`` and ``git`` do); only new or touched files are hashed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """Content hash of a file: blake2b of its bytes, 32 hex characters (changes when the content changes)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileState:
    """A file as it was fingerprinted: its size and mtime then, and its content fingerprint."""

    size: int
    mtime_ns: int
    fingerprint: str


def file_state(path: str | os.PathLike[str], known: FileState | None = None) -> FileState:
    """The file's state now; ``known`` is reused without hashing when the size and mtime still match it.

    Raises:
        OSError: the file cannot be stat'ed or read.
    """
    st = Path(path).stat()
    if known is not None and (known.size, known.mtime_ns) == (st.st_size, st.st_mtime_ns):
        return known
    return FileState(st.st_size, st.st_mtime_ns, file_fingerprint(path))
