"""Student training from flow parameters: a retry after a crash resumes at the next epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.flows.conftest import tiny_parameters


def test_interrupted_student_training_resumes_at_the_next_epoch(
    flow_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.students import train_variant

    import pipeline.training.loop as loop
    from flows import stages
    from flows.params import DistillParams

    schedule = {"epochs": 2, "lr": 1e-3, "milestones": [2], "batch_size": 8}
    params = DistillParams.model_validate(tiny_parameters(flow_data, tmp_path, unlabeled_roots=[], schedule=schedule))
    discovery = stages.summarise(stages.teacher_records(params), [])
    real_epoch = loop.train_one_epoch
    epochs_run: list[int] = []

    def crash_on_second_epoch(*args: object, **kwargs: object) -> object:
        epochs_run.append(1)
        if len(epochs_run) == 2:
            raise RuntimeError("worker lost")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", crash_on_second_epoch)
    with pytest.raises(RuntimeError, match="worker lost"):
        train_variant(params, "gt_only", discovery)

    epochs_run.clear()
    monkeypatch.setattr(loop, "train_one_epoch", lambda *a, **k: epochs_run.append(1) or real_epoch(*a, **k))
    result = train_variant(params, "gt_only", discovery)  # what the task's retry does
    assert len(epochs_run) == 1, "the retry trained only the epoch that had not finished"
    log = [json.loads(line) for line in Path(result.weights).with_name("log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [0, 1]
    assert Path(result.weights).is_file() and result.variant == "gt_only"


def test_multi_gpu_students_run_under_torchrun_from_a_recipe_file(tmp_path: Path) -> None:
    from flows.students import student_config, torchrun_command, write_recipe

    from flows import stages
    from flows.params import DistillParams
    from pipeline.training.config import load_config

    params = DistillParams.model_validate({
        "teacher": {"preset": "tiny_teacher_mpii", "checkpoint": "t.pth"},
        "student": {"preset": "tiny_student_mpii"},
        "labelled": [{"dataset": "mpii", "root": "data/mpii"}],
        "cache_dir": "cache",
        "output_dir": str(tmp_path),
    })  # fmt: skip
    config = student_config(params, "fpd", stages.summarise([], []))
    recipe = write_recipe(config)
    assert load_config(recipe) == config  # torchrun's processes train exactly the flow's recipe
    command = torchrun_command(recipe, 4)
    assert "--nproc_per_node=4" in command and command[-4:] == ["-m", "pipeline.training.loop", "--config", str(recipe)]
