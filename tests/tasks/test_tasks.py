"""The Prefect tasks: thin wrappers (house rule: 20 lines or less) whose policy lives in the decorator."""

from __future__ import annotations

import inspect
from dataclasses import asdict
from pathlib import Path

import pytest
from prefect.cache_policies import NO_CACHE
from prefect.tasks import Task

import tasks.detection
import tasks.discovery
import tasks.evaluation
import tasks.inference
import tasks.reporting
import tasks.training
from pipeline.teacher.shards import ShardJob, ShardReport
from storage.jsonfiles import write_json
from tasks.policy import retry_unless_permanent

MODULES = (tasks.detection, tasks.discovery, tasks.inference, tasks.training, tasks.evaluation, tasks.reporting)
ALL_TASKS = [obj for module in MODULES for obj in vars(module).values() if isinstance(obj, Task)]


def _job(tmp_path: Path, shard_index: int = 0, num_shards: int = 2) -> ShardJob:
    return ShardJob("tiny_teacher_mpii", "t.pth", str(tmp_path / "cache"), str(tmp_path / "inference" / "plan.json"),
                    shard_index, num_shards)  # fmt: skip


def test_every_task_module_is_found() -> None:
    names = {t.name for t in ALL_TASKS}
    assert names == {
        "detect-persons", "discover-sources", "teacher-inference-shard", "teacher-inference-remote",
        "teacher-inference-here", "train-student", "evaluate", "publish-metrics", "publish-pictures",
        "publish-cache-report",
    }  # fmt: skip


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.name)
def test_task_is_a_thin_wrapper_with_retries_and_no_result_cache(task: Task) -> None:
    source = inspect.getsource(task.fn)
    assert len(source.splitlines()) <= 20, f"{task.name} is {len(source.splitlines())} lines"
    assert task.retries >= 1, "every stage is retried: the cache and the checkpoints make a retry resume"
    # The cache manifest and the students' own checkpoints decide what is done, never Prefect's result cache:
    # discovery must see a folder dropped in since the last run.
    assert task.cache_policy is NO_CACHE


def test_shard_tasks_share_a_tag_for_concurrency_limits() -> None:
    shard_tasks = [t for t in ALL_TASKS if t.name.startswith("teacher-inference")]
    assert len(shard_tasks) == 3 and all("teacher-inference" in t.tags for t in shard_tasks)


def test_run_names_say_which_shard_student_or_model(tmp_path: Path) -> None:
    job = _job(tmp_path, 1, 4)
    assert tasks.inference.infer_shard.task_run_name.format(job=job) == "teacher shard 1/4"
    assert tasks.training.train_student.task_run_name.format(variant="fpd") == "train student fpd"
    assert tasks.evaluation.score_model.task_run_name.format(label="teacher", dataset="mpii") == "score teacher on mpii"


def test_wrappers_hand_their_arguments_to_the_plain_functions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple] = []

    def spy(name: str, returns: object = None):
        return lambda *args, **kwargs: calls.append((name, args, kwargs)) or (returns or name)

    job = _job(tmp_path)
    monkeypatch.setattr(tasks.inference, "run_shard_subprocess", spy("subprocess"))
    monkeypatch.setattr(tasks.inference, "run_shard", spy("here"))
    monkeypatch.setattr(tasks.training, "train_variant", spy("train"))
    monkeypatch.setattr(tasks.evaluation, "evaluate_weights", spy("evaluate", {"Mean": 91.234567}))
    assert tasks.inference.infer_shard.fn(job) == "subprocess"
    assert tasks.inference.infer_shard_here.fn(job) == "here"
    assert tasks.training.train_student.fn("recipe", "fpd", "gt_only student", 2) == "train"
    row = tasks.evaluation.score_model.fn("student fpd", "tiny_student_mpii", "w.pt", "mpii", "data/mpii", "valid",
                                          init="gt_only student", batch_size=8, device="cpu")  # fmt: skip
    assert row == {"model": "student fpd", "preset": "tiny_student_mpii", "init": "gt_only student", "dataset": "mpii",
                   "Mean": 91.2346}  # fmt: skip
    assert calls[:3] == [
        ("subprocess", (job,), {}), ("here", (job,), {}),
        ("train", ("recipe", "fpd"), {"init": "gt_only student", "torch_threads": 2}),
    ]  # fmt: skip
    name, args, kwargs = calls[3]
    assert name == "evaluate" and args == ("tiny_student_mpii", "w.pt", "mpii", "data/mpii", "valid")
    assert kwargs["batch_size"] == 8 and str(kwargs["device"]) == "cpu" and kwargs["detections"] is None


def test_remote_shard_fails_when_its_flow_run_did_not_complete(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from prefect.client.schemas.objects import FlowRun
    from prefect.states import Completed, Failed

    launched: list[dict] = []

    def fake_run(name: str, parameters: dict) -> FlowRun:
        launched.append(parameters)
        state = Failed() if parameters["shard_index"] == 1 else Completed()
        return FlowRun(name="shard-run", flow_id="00000000-0000-0000-0000-000000000000", state=state)

    monkeypatch.setattr(tasks.inference, "run_deployment", fake_run)
    write_json(_job(tmp_path).report_path, asdict(ShardReport(0, 2, 4, 0, 0, (), 1.0)))
    report = tasks.inference.infer_shard_remote.fn(_job(tmp_path), "teacher-inference/shard")
    assert report.new == 4 and launched[0] == asdict(_job(tmp_path))  # the flow run gets the job's fields
    with pytest.raises(RuntimeError, match="shard 1/2"):
        tasks.inference.infer_shard_remote.fn(_job(tmp_path, 1), "teacher-inference/shard")


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.name)
def test_permanent_errors_are_not_retried(task: Task) -> None:
    assert task.retry_condition_fn is retry_unless_permanent
