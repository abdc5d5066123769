"""What a benchmark does with its result: print its table, and keep it as JSON to compare a run with the last one."""

from __future__ import annotations

import json
from pathlib import Path


def publish(result: object, table: str | None, json_out: Path | None) -> None:
    """Print ``table`` (when there is one) and write ``result`` to ``json_out`` (when given), indented."""
    if table is not None:
        print(table)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")
