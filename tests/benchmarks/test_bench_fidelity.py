"""``benchmarks/bench_fidelity.py``: its smallest setting end to end, the paired gaps, and recipes that differ only
in the teacher term."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.bench_fidelity import ARMS, DEFAULT_ARMS, main, parse_args, student_recipe, summarize

SMALLEST = ["--images", "8", "--val-images", "4", "--epochs", "1", "--milestones", "--teacher-epochs", "1",
            "--teacher-milestones", "--teacher-pretrain-epochs", "1", "--pretrain-epochs", "1",
            "--seeds", "1"]  # fmt: skip


def test_smallest_setting_runs_and_reports_every_arm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.json"
    result = main([*SMALLEST, "--work-dir", str(tmp_path / "work"), "--json-out", str(out)])

    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert 0.0 <= result["teacher"]["pckh"] <= 100.0 and result["teacher"]["preset"] == "tiny_teacher_mpii"
    arms = result["summary"]["arms"]
    assert list(arms) == list(DEFAULT_ARMS)
    for row in arms.values():
        assert row["seeds"] == [0] and len(row["pckh"]) == 1
        assert math.isfinite(row["pckh"][0]) and 0.0 <= row["pckh"][0] <= 100.0
        assert row["mean"] == row["pckh"][0] and row["std"] is None  # one seed: no spread to claim
    (init,) = result["init"]  # every arm of the seed started from this ground-truth student
    assert init["seed"] == 0 and 0.0 <= init["pckh"] <= 100.0
    for arm in DEFAULT_ARMS:
        record = json.loads((tmp_path / "work" / "runs" / arm / "0" / "weights.pt.json").read_text())
        assert record["init"] == f"checkpoint {tmp_path / 'work' / 'runs' / 'init' / '0' / 'weights.pt'}"
    by_arm = {r["arm"]: r["pckh"] for r in result["runs"]}
    gap = result["summary"]["gaps"]["cache - online"]
    assert gap["per_seed"] == [by_arm["cache"] - by_arm["online"]] and gap["mean"] == gap["per_seed"][0]
    assert len(result["load"]) == 2 + len(DEFAULT_ARMS) and result["wall_seconds"] > 0

    table = capsys.readouterr().out
    for arm in DEFAULT_ARMS:
        assert ARMS[arm] in table
    assert "start: ground-truth student, 1 epochs" in table
    assert "gap cache - online" in table and "flip-test PCKh@0.5" in table and "load (1-min average" in table


def test_gaps_are_paired_by_seed_whatever_the_run_order() -> None:
    runs = [
        {"arm": "online", "seed": 2, "pckh": 30.0, "seconds": 1.0},
        {"arm": "cache", "seed": 0, "pckh": 12.0, "seconds": 1.0},
        {"arm": "online", "seed": 0, "pckh": 10.0, "seconds": 1.0},
        {"arm": "cache", "seed": 1, "pckh": 19.0, "seconds": 1.0},
        {"arm": "online", "seed": 1, "pckh": 20.0, "seconds": 1.0},
        {"arm": "cache", "seed": 2, "pckh": 33.0, "seconds": 1.0},
    ]
    summary = summarize(runs, ["online", "cache"])
    assert summary["arms"]["online"]["pckh"] == [10.0, 20.0, 30.0]
    assert summary["arms"]["online"]["std"] == pytest.approx(10.0)
    gap = summary["gaps"]["cache - online"]
    assert gap["per_seed"] == [2.0, -1.0, 3.0]
    assert gap["mean"] == pytest.approx(4.0 / 3.0) and gap["std"] == pytest.approx(math.sqrt(13.0 / 3.0))
    assert (gap["min"], gap["max"]) == (-1.0, 3.0)
    assert summarize(runs[1:2], ["cache"])["gaps"] == {}  # no online arm, no gap


def test_arms_differ_only_in_the_teacher_term(tmp_path: Path) -> None:
    args = parse_args(["--arms", ",".join(ARMS)])
    caches = {"cache": tmp_path / "cache", "cache_single": tmp_path / "cache_single"}
    recipes = {arm: student_recipe(args, tmp_path, tmp_path / arm, arm, 3, tmp_path / "t.pt", caches) for arm in ARMS}
    assert recipes["gt"]["loss"]["alpha"] == 0.0 and recipes["cache"]["loss"]["alpha"] == args.alpha > 0
    assert recipes["online"]["teacher_online"] and "teacher_cache" not in recipes["online"]["data"]
    assert recipes["cache_single"]["data"]["teacher_cache"] == str(caches["cache_single"])
    assert recipes["cache_seen"]["data"]["teacher_cache"] == str(caches["cache"])  # the flip-tested cache
    assert recipes["cache_seen"]["loss"]["teacher_seen_only"] and "teacher_seen_only" not in recipes["cache"]["loss"]

    def shared(raw: dict) -> dict:
        rest = {k: v for k, v in raw.items() if k not in ("teacher_online", "loss", "output_dir")}
        return {**rest, "data": {k: v for k, v in raw["data"].items() if k != "teacher_cache"}}

    assert all(shared(r) == shared(recipes["gt"]) for r in recipes.values())
    assert recipes["gt"]["seed"] == 3 and recipes["gt"]["data"]["augment"] is True
    assert recipes["gt"]["eval"]["flip"] is True


def test_default_is_three_seeds_of_the_three_arms_and_unknown_arms_are_refused() -> None:
    args = parse_args([])
    assert args.seeds == 3 and args.arms == list(DEFAULT_ARMS) == ["gt", "online", "cache"]
    assert parse_args(["--arms", "cache,gt,cache"]).arms == ["gt", "cache"]  # table order, each once
    with pytest.raises(SystemExit):
        parse_args(["--arms", "gt,offline"])
