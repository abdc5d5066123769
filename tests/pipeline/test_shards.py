"""Teacher-inference shards: GPU and thread shares, the report file, a failing shard process, JPEG decoding."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from pipeline.teacher import shards
from pipeline.teacher.inference import InferenceReport
from pipeline.teacher.shards import (
    ShardJob,
    ShardReport,
    read_shard_report,
    run_shard,
    run_shard_subprocess,
    shard_environment,
)
from storage.jsonfiles import write_json


def _job(tmp_path: Path, **changes: object) -> ShardJob:
    fields = {"teacher_preset": "tiny_teacher_mpii", "teacher_checkpoint": "t.pth", "cache_dir": str(tmp_path / "c"),
              "plan_path": str(tmp_path / "inference" / "plan.json")}  # fmt: skip
    return ShardJob(**(fields | changes))


def test_shard_environment_deals_gpus_round_robin_and_splits_cpu_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "PATH": "/bin"}
    assert shard_environment(env, 0, 2)["CUDA_VISIBLE_DEVICES"] == "0,2"
    assert shard_environment(env, 1, 2)["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert shard_environment(env, 0, 1)["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert shard_environment({"CUDA_VISIBLE_DEVICES": "5"}, 1, 2)["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert shard_environment({}, 0, 4)["OMP_NUM_THREADS"] == "2"
    assert shard_environment({"OMP_NUM_THREADS": "3"}, 0, 4)["OMP_NUM_THREADS"] == "3"
    assert env == {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "PATH": "/bin"}  # the caller's mapping is not touched


def test_a_job_crosses_processes_as_json_and_its_report_lies_beside_the_plan(tmp_path: Path) -> None:
    job = _job(tmp_path).shard(1, 3)
    assert (job.shard_index, job.num_shards) == (1, 3)
    assert ShardJob(**json.loads(json.dumps(asdict(job)))) == job
    assert job.report_path == tmp_path / "inference" / "shard-1-of-3.json"
    report = ShardReport(1, 3, 5, 2, 1, ("/data/bad.jpg",), 0.5)
    write_json(job.report_path, asdict(report))
    assert read_shard_report(job) == report


def test_a_failing_shard_process_raises_with_the_end_of_its_log(tmp_path: Path) -> None:
    job = _job(tmp_path, teacher_checkpoint="missing.pth").shard(1, 2)
    with pytest.raises(RuntimeError, match=r"shard 1/2 exited 1 \(log .*shard-1-of-2.log\):\n(.|\n)*missing.pth"):
        run_shard_subprocess(job)


def test_a_job_decodes_in_full_unless_it_asks_for_drafts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _job(tmp_path).draft_decode is False  # the flow builds jobs without the field
    seen: dict[str, list[bool]] = {"cache": [], "inference": []}

    def open_cache(*args: object, draft_decode: bool = False) -> str:
        seen["cache"].append(draft_decode)
        return "cache"

    def infer(*args: object, draft_decode: bool = False, **kwargs: object) -> InferenceReport:
        seen["inference"].append(draft_decode)
        return InferenceReport(0, 0, 0, ())

    monkeypatch.setattr(shards, "load_model", lambda preset, weights: (preset, None))
    monkeypatch.setattr(shards, "load_plan", lambda path: None)
    monkeypatch.setattr(shards, "open_teacher_cache", open_cache)
    monkeypatch.setattr(shards, "run_teacher_inference", infer)
    run_shard(_job(tmp_path))
    drafted = _job(tmp_path, draft_decode=True)
    assert ShardJob(**json.loads(json.dumps(asdict(drafted)))) == drafted  # the option crosses processes too
    run_shard(drafted)
    assert seen == {"cache": [False, True], "inference": [False, True]}
