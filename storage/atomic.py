"""Atomic file replacement: a reader sees the old file or the complete new one, never a torn write.

The data goes to a temporary file in the destination's directory (same filesystem, so the rename is atomic),
is flushed and fsynced, then ``os.replace``-d over the destination; the directory is fsynced too so that the
rename survives a power cut. On any exception the temporary file is removed and the destination is untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry change (a rename) to disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        # Some filesystems (and Windows) refuse fsync on a directory; the file data itself is already synced.
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file to write ``path`` and atomically move it into place when the block succeeds.

    Args:
        path: destination; its parent directory is created if missing.
        mode: "wb" (default, bytes: ``torch.save``, HDF5 payloads) or "w" (text).
        encoding: text encoding for mode "w" (default utf-8).

    Yields:
        The open temporary file.

    Example:
        >>> with atomic_write("out/metrics.json", "w") as f:
        ...     f.write("{}")
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', got {mode!r}")
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    try:
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if mode == "w" else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files: keep the replaced file's permissions, else the usual 0644 (reading the
        # umask would need os.umask(), which changes process state under other threads).
        permissions = destination.stat().st_mode & 0o777 if destination.exists() else 0o644
        os.chmod(tmp_name, permissions)
        os.replace(tmp_name, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_directory(destination.parent)
