"""Advisory file locks (``fcntl.flock``) that refuse instead of waiting, or wait with a bound.

``flock`` locks belong to an open file description, so two opens of one lock file conflict even inside one
process (what the tests rely on), and the kernel drops the lock when the holder dies, SIGKILL included: a
crashed writer never leaves a stale lock behind. Lock files are never deleted, because deleting a lock file
another process still holds would let a third process lock a fresh inode at the same path.

A forked child (a DataLoader worker) shares its parent's open file descriptions, so it would keep a lock alive
after the parent was killed, until it noticed and exited. Forked children therefore close their copies of every
held lock at once (``os.register_at_fork``); closing a copy never releases the parent's lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
import weakref
from pathlib import Path
from types import TracebackType

_HELD: weakref.WeakSet[FileLock] = weakref.WeakSet()


def _drop_inherited_locks() -> None:
    for lock in list(_HELD):
        if lock._fd is not None:
            os.close(lock._fd)
            lock._fd = None
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


class LockBusyError(RuntimeError):
    """The lock is held by another process (or another open of the same file)."""


class FileLock:
    """An exclusive ``flock`` on ``path``, created if needed.

    Args:
        path: the lock file.
        timeout: seconds to keep retrying before :class:`LockBusyError`; 0 refuses at once.
        description: what the lock protects, used in the error message.
    """

    def __init__(self, path: Path, *, timeout: float = 0.0, description: str = "") -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.description = description or str(self.path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> FileLock:
        """Take the lock, retrying until ``timeout``; raises :class:`LockBusyError` if another holder keeps it."""
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= deadline:
                    os.close(fd)
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise LockBusyError(f"{self.description} is locked by another process ({self.path})") from None
                    raise
                time.sleep(0.02)
        # The holder's pid is informative only (the lock itself is the flock), so a stale value is harmless, and a
        # full disk must not stop a writer from taking its lock: its commits then report the full disk.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        _HELD.add(self)
        return self

    def release(self) -> None:
        """Give the lock back (no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _HELD.discard(self)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def is_locked(path: Path) -> bool:
    """Whether another open of ``path`` holds its lock right now (False when the file does not exist)."""
    try:
        with FileLock(path):
            return False
    except LockBusyError:
        return True
    except FileNotFoundError:
        return False
