"""What ``demo/run.sh`` polls: the Prefect server's health, and the students' epochs as they train.

Standard library only, so that a poll starts in a fraction of a second (``demo/demo.py`` imports torch and Prefect).
``students`` prints each dataset's newest epoch line from the students' ``log.jsonl``; run.sh shows it every 30 s,
while ``prefect deployment run --watch`` shows only state changes (the flows' own log lines are in the UI).

Usage: ``python demo/status.py students demo_out/runs``; ``python demo/status.py wait-server API [--timeout S]``
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.request
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


def wait_healthy(api: str, timeout_s: float) -> bool:
    """Poll ``<api>/health`` until the server answers (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python demo/status.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("students", help="each dataset's newest student epoch").add_argument("runs", type=Path)
    wait = sub.add_parser("wait-server", help="wait until the Prefect API answers")
    wait.add_argument("api")
    wait.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.command == "students":
        print("\n".join(latest_epochs(args.runs)))
        return 0
    return 0 if wait_healthy(args.api, args.timeout) else 1


if __name__ == "__main__":
    sys.exit(main())
