"""The demo's students as they train: each dataset's newest epoch line, read from the students' ``log.jsonl``.

``demo/run.sh`` prints these every 30 s while ``prefect deployment run --watch`` shows only state changes (the
flows' own log lines are in the UI). Standard library only, so that the poll costs a fraction of a second.

Usage: ``python demo/progress.py demo_out/runs``
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

EPOCHS = re.compile(r"^\s+epochs:\s*(\d+)\s*$", re.MULTILINE)
"""``optim.epochs`` in a student's ``recipe.yaml`` (its only ``epochs`` key)."""


def latest_epochs(runs: Path) -> list[str]:
    """One line per dataset folder under ``runs``: the last finished epoch of its most recently written student."""
    lines: list[str] = []
    if not runs.is_dir():  # the flows have not started yet
        return lines
    for dataset in sorted(p for p in runs.iterdir() if p.is_dir()):
        logs = sorted((dataset / "students").glob("*/log.jsonl"), key=lambda p: p.stat().st_mtime)
        if not logs:
            continue
        records = [line for line in logs[-1].read_text().splitlines() if line.strip()]
        if not records:  # a student that has not finished its first epoch
            continue
        record = json.loads(records[-1])
        recipe = logs[-1].with_name("recipe.yaml")
        total = EPOCHS.search(recipe.read_text()) if recipe.is_file() else None
        variant = logs[-1].parent.name.rsplit("-", 1)[0]
        lines.append(
            f"   {dataset.name} student {variant}: epoch {record['epoch'] + 1}/{total.group(1) if total else '?'}, "
            f"loss {record['loss']:.3g}, {record['samples_per_s']:.0f} samples/s"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(latest_epochs(Path(sys.argv[1]))))
