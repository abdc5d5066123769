"""Student training from flow parameters: a retry after a crash resumes at the next epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.flows.conftest import tiny_parameters


def test_interrupted_student_training_resumes_at_the_next_epoch(
    flow_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.training.loop as loop
    from flows.params import DistillParams
    from pipeline.data.sources import LoadedSource
    from pipeline.students import StudentInit, train_variant, variant_config
    from pipeline.teacher.discovery import summarise
    from pipeline.teacher.plan import InferencePlan

    schedule = {"epochs": 2, "lr": 1e-3, "milestones": [2], "batch_size": 8}
    params = DistillParams.model_validate(tiny_parameters(flow_data, tmp_path, unlabeled_roots=[], schedule=schedule))
    config = variant_config(
        params.base_train_config(), "gt_only", init=StudentInit(), alpha=params.alpha, use_ground_truth=True,
        discovery=summarise([LoadedSource("mpii/train", [], [])], InferencePlan(())), cache_dir=params.cache_dir,
        teacher=params.teacher.model_dump(), students_dir=params.output_path / "students",
    )  # fmt: skip
    real_epoch = loop.train_one_epoch
    epochs_run: list[int] = []

    def crash_on_second_epoch(*args: object, **kwargs: object) -> object:
        epochs_run.append(1)
        if len(epochs_run) == 2:
            raise RuntimeError("worker lost")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", crash_on_second_epoch)
    with pytest.raises(RuntimeError, match="worker lost"):
        train_variant(config, "gt_only", init="scratch", torch_threads=1)

    epochs_run.clear()
    monkeypatch.setattr(loop, "train_one_epoch", lambda *a, **k: epochs_run.append(1) or real_epoch(*a, **k))
    result = train_variant(config, "gt_only", init="scratch", torch_threads=1)  # what the task's retry does
    assert len(epochs_run) == 1, "the retry trained only the epoch that had not finished"
    log = [json.loads(line) for line in Path(result.weights).with_name("log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [0, 1]
    assert Path(result.weights).is_file() and (result.variant, result.init) == ("gt_only", "scratch")
