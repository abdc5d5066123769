"""Reading the json files users hand us (annotations, results), with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path


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
