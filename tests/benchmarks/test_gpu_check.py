"""``benchmarks/gpu_check.py --dry``: every GPU check's code path on the CPU, so that the script a GPU session runs
has not rotted."""

from __future__ import annotations

import json
import math

from benchmarks.gpu_check import _guarded, format_table, main

CHECKS = ["train none", "train online", "ddp torchrun", "teacher inference", "student vs teacher"]


def test_dry_run_passes_every_check_and_writes_its_table(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert main(["--dry", "--work-dir", str(tmp_path / "work"), "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {row["check"]: row for row in result["rows"]}
    assert list(rows) == CHECKS and all(row["status"] == "ok" for row in rows.values())
    assert all(math.isfinite(rows[c]["final_loss"]) and rows[c]["samples_per_s"] > 0 for c in CHECKS[:2])
    cached, online = rows["train none"], rows["train online"]
    assert online["cache_over_online"] == cached["samples_per_s"] / online["samples_per_s"]
    assert rows["ddp torchrun"]["backend"] == "gloo" and rows["ddp torchrun"]["returncode"] == 0
    assert (tmp_path / "work" / "runs" / "ddp" / "log.jsonl").is_file()  # written by the torchrun process
    inference = rows["teacher inference"]
    assert inference["fraction"] == inference["pipeline_images_per_s"] / inference["model_images_per_s"]
    assert rows["student vs teacher"]["speedup"] > 1  # the tiny student is 5x cheaper
    assert capsys.readouterr().out.strip() == format_table(result)


def test_a_failing_check_becomes_a_fail_row():
    def broken() -> dict:
        raise RuntimeError("NCCL error: unhandled system error")

    row = _guarded("ddp torchrun", broken)
    assert row == {"check": "ddp torchrun", "status": "FAIL (RuntimeError: NCCL error: unhandled system error)"}
