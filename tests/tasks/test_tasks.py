"""The Prefect tasks: thin wrappers (house rule: 20 lines or less) whose policy lives in the decorator."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import tasks.sources
from prefect.cache_policies import NO_CACHE
from prefect.tasks import Task

import tasks.evaluation
import tasks.inference
import tasks.reporting
import tasks.training
from flows.params import DistillParams

MODULES = (tasks.sources, tasks.inference, tasks.training, tasks.evaluation, tasks.reporting)
ALL_TASKS = [obj for module in MODULES for obj in vars(module).values() if isinstance(obj, Task)]
PARAMS = DistillParams.model_validate({
    "teacher": {"preset": "tiny_teacher_mpii", "checkpoint": "t.pth"},
    "labelled": [{"dataset": "mpii", "root": "data/mpii"}],
    "cache_dir": "cache",
    "output_dir": "out",
})  # fmt: skip


def test_every_task_module_is_found() -> None:
    names = {t.name for t in ALL_TASKS}
    assert names == {
        "discover-sources", "teacher-inference-shard", "teacher-inference-remote", "teacher-inference-here",
        "train-student", "evaluate", "publish-metrics", "publish-cache-report",
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


def test_wrappers_hand_their_arguments_to_the_plain_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []

    def spy(name: str):
        return lambda *args: calls.append((name, *args)) or name

    monkeypatch.setattr("flows.sharding.run_shard_subprocess", spy("subprocess"))
    monkeypatch.setattr("flows.sharding.infer_shard_here", spy("here"))
    monkeypatch.setattr("flows.students.train_variant", spy("train"))
    monkeypatch.setattr("flows.scoring.evaluate", spy("evaluate"))
    assert tasks.inference.infer_shard.fn(PARAMS, 1, 2) == "subprocess"
    assert tasks.inference.infer_shard_here.fn(PARAMS, 0, 2) == "here"
    assert tasks.training.train_student.fn(PARAMS, "fpd", None) == "train"
    assert tasks.evaluation.evaluate_model.fn(PARAMS, "mpii", "tiny_student_mpii", "w.pt") == "evaluate"
    assert calls == [
        ("subprocess", PARAMS, 1, 2),
        ("here", PARAMS, 0, 2),
        ("train", PARAMS, "fpd", None),
        ("evaluate", PARAMS, "mpii", "tiny_student_mpii", "w.pt"),
    ]


def test_remote_shard_fails_when_its_flow_run_did_not_complete(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from prefect.client.schemas.objects import FlowRun
    from prefect.states import Completed, Failed

    params = PARAMS.model_copy(update={"output_dir": str(tmp_path)})
    launched: list[dict] = []

    def fake_run(name: str, parameters: dict) -> FlowRun:
        launched.append(parameters)
        state = Failed() if parameters["shard_index"] == 1 else Completed()
        return FlowRun(name="shard-run", flow_id="00000000-0000-0000-0000-000000000000", state=state)

    monkeypatch.setattr(tasks.inference, "run_deployment", fake_run)
    from flows import sharding, stages

    stages.write_json(sharding.report_path(params, 0, 2), sharding.ShardReport(0, 2, 4, 0, 0, (), 1.0).__dict__)
    report = tasks.inference.infer_shard_remote.fn(params, 0, 2, "teacher-inference/default")
    assert report.new == 4 and launched[0]["shard_index"] == 0 and launched[0]["num_shards"] == 2
    with pytest.raises(RuntimeError, match="shard 1/2"):
        tasks.inference.infer_shard_remote.fn(params, 1, 2, "teacher-inference/default")
