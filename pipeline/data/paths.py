"""Guards that keep every image path inside the data root a user named."""

from __future__ import annotations

from pathlib import Path, PurePosixPath


class PathEscapeError(ValueError):
    """A path that would leave its data root (``..``, an absolute path, or a symlink pointing outside)."""


def check_relative(name: str, root: Path) -> str:
    """Validate an image name read from an annotation file without touching the disk.

    Args:
        name: the name as written in the file (POSIX separators).
        root: the data root it must stay in (for the error message).

    Returns:
        The name, normalised to POSIX form.

    Raises:
        PathEscapeError: absolute, or with a ``..`` component.
    """
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise PathEscapeError(f"image path {name!r} is not a plain relative path inside {root}")
    return path.as_posix()


def resolve_inside(root: str | Path, relative: str | Path) -> Path:
    """``root / relative`` with symlinks resolved, refusing anything that ends up outside ``root``.

    Raises:
        PathEscapeError: the resolved path is not inside the resolved ``root``.
    """
    base = Path(root).resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise PathEscapeError(f"{relative} resolves to {target}, outside the data root {base}; not following it")
    return target
