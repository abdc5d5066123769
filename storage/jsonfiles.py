"""JSON files: reading those users hand us (annotations, results) with errors that name the file, checking their
values, and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

from storage.atomic import atomic_write


def read_json(path: str | Path, what: str) -> object:
    """Parse ``path``; a missing file or invalid json raises an error naming ``what`` and the file.

    Raises:
        FileNotFoundError: ``"<what> not found: <path>"``.
        ValueError: ``"<path>: not valid json (...)"``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid json ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid json (nested too deeply to parse)") from None


def is_json_int(value: object) -> bool:
    """An integer as JSON gives one (json's ``true`` is a bool, not a count or an id)."""
    return isinstance(value, int) and not isinstance(value, bool)


def write_json(path: str | Path, payload: object) -> Path:
    """Write ``payload`` as indented JSON, atomically (a reader never sees half a file)."""
    with atomic_write(path, "w") as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=True))
    return Path(path)
