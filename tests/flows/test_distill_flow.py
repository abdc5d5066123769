"""distill-flow end to end on a Prefect test server: cache, students and their starts, scores, artifacts,
incremental re-runs."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import pytest
import torch
import yaml

from tests.flows.conftest import add_folder, tiny_parameters


def _artifacts(flow_run_id: UUID) -> dict[str, object]:
    """The flow run's artifacts by key (the latest of each)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in sorted(found, key=lambda a: a.created)}


def _log_messages(flow_run_id: UUID) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs are shipped in batches by a background worker
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def _run(params: dict[str, object]) -> tuple[dict[str, object], UUID]:
    from flows.distill import distill_flow

    state = distill_flow(**params, return_state=True)
    assert state.is_completed(), state.message
    return state.result(), state.state_details.flow_run_id


def _epochs_trained(weights: str) -> int:
    return len(Path(weights).with_name("log.jsonl").read_text().splitlines())


def _record_starts(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, torch.Tensor]]:
    """The weights each epoch starts from, in training order (one epoch per student: where each student started)."""
    import pipeline.training.loop as loop

    starts: list[dict[str, torch.Tensor]] = []
    real_epoch = loop.train_one_epoch

    def first_step_sees(model: torch.nn.Module, *args: object, **kwargs: object) -> object:
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_epoch(model, *args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", first_step_sees)
    return starts


def _same(state: dict[str, torch.Tensor], weights: str | Path) -> bool:
    saved = torch.load(weights, weights_only=True)
    return state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)


@pytest.mark.slow
def test_distill_flow_fills_cache_trains_scores_and_reruns_incrementally(
    prefect_harness: None, flow_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.params import DistillParams
    from models import get_preset
    from pipeline.data.sources import load_sources
    from pipeline.teacher.plan import plan_inference
    from storage.cache import TeacherTargetCache

    add_folder(tmp_path / "unlabeled", "folder_a", 4)
    # No baseline asked for: gt_only trains anyway (first), for the FPD student to fine-tune (FPD's recipe).
    params = tiny_parameters(flow_data, tmp_path, num_shards=2, baselines=[])
    starts = _record_starts(monkeypatch)
    result, run_id = _run(params)

    # The cache holds every labelled and unlabeled sample, written by both shard processes.
    cache = TeacherTargetCache(params["cache_dir"])
    typed = DistillParams.model_validate(params)
    loaded = load_sources([s.train_spec for s in typed.labelled], get_preset(typed.teacher.preset).input_aspect,
                          unlabeled_roots=typed.unlabeled_roots)  # fmt: skip
    records = [r for source in loaded for r in source.records]
    assert plan_inference(records, cache).records == ()
    summary = cache.inspect()
    labelled = sum(1 for r in records if r.source == "mpii/train")
    assert summary.per_source == {"mpii/train": labelled, "folder/folder_a": 4}
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [s["shard_index"] for s in run["shards"]] == [0, 1]
    assert sum(s["new"] for s in run["shards"]) == result["inferred"] == labelled + 4

    # Both students trained; teacher and students scored with PCKh on the validation split.
    assert set(result["students"]) == {"gt_only", "fpd"}
    assert all(Path(w).is_file() for w in result["students"].values())
    rows = result["metrics"]
    assert [r["model"] for r in rows] == ["teacher", "student gt_only", "student fpd"]
    assert all(r["dataset"] == "mpii" and 0.0 <= r["Mean"] <= 100.0 and "Mean@0.1" in r for r in rows)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == rows

    # Each student's start is in the table, the result and run.json; the FPD student fine-tuned gt_only's weights.
    gt_weights = result["students"]["gt_only"]
    assert [r["init"] for r in rows] == ["given checkpoint", "scratch", "gt_only student"]
    assert result["inits"] == {"gt_only": "scratch", "fpd": "gt_only student"}
    recorded = json.loads((tmp_path / "out" / "run.json").read_text())["students"]
    assert [(s["variant"], s["init"], s["weights"]) for s in recorded] == [
        ("gt_only", "scratch", gt_weights), ("fpd", "gt_only student", result["students"]["fpd"]),
    ]  # fmt: skip
    recipe = yaml.safe_load(Path(result["students"]["fpd"]).with_name("recipe.yaml").read_text())
    assert (recipe["student_init"], recipe["student_backbone"]) == (gt_weights, None)
    # What the first training step saw: the FPD student started from gt_only's trained weights. Ignoring the init
    # would fail here: from scratch it starts where gt_only did (same seed), and one epoch moved gt_only from there.
    assert len(starts) == 2 and _same(starts[1], gt_weights) and not _same(starts[0], gt_weights)

    artifacts = _artifacts(run_id)
    assert artifacts["distill-metrics"].type == "table"
    assert "student fpd" in str(artifacts["distill-metrics"].data)
    assert artifacts["teacher-cache-report"].type == "markdown"
    assert "folder/folder_a (new folder)" in str(artifacts["teacher-cache-report"].data)
    assert "index.html" in str(artifacts["teacher-cache-report"].data)
    # Pictures: the comparison and each student's curves, as PNGs in the run and inline in one artifact.
    pictures = [tmp_path / "out" / "comparison.png"] + [Path(w).with_name("curves.png")
                                                        for w in result["students"].values()]  # fmt: skip
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures)
    markdown = str(artifacts["distill-pictures"].data)
    assert artifacts["distill-pictures"].type == "markdown"
    assert markdown.count("](data:image/png;base64,") == 3 and all(str(p) in markdown for p in pictures)
    assert artifacts["distill-progress"].type == "progress"
    assert float(artifacts["distill-progress"].data) == pytest.approx(100.0)
    messages = _log_messages(run_id)
    assert any("folder/folder_a (new folder): 4 images" in m for m in messages)
    # The stages' own lines reach the run's logs: each epoch's loss and lr, each model's scores.
    assert any(m.startswith("epoch 1/1 loss ") and " lr " in m and "samples/s" in m for m in messages)
    assert any(m.startswith(f"{result['students']['fpd']} (tiny_student_mpii) on mpii/") and "Mean " in m
               for m in messages)  # fmt: skip

    # A folder dropped in: only its images are inferred; the student without unlabeled data is not retrained.
    add_folder(tmp_path / "unlabeled", "folder_b", 3)
    starts.clear()
    second, second_id = _run(params)
    assert second["inferred"] == 3
    by_source = {s["source"]: s for s in json.loads((tmp_path / "out" / "run.json").read_text())["sources"]}
    assert by_source["folder/folder_b"]["new_folder"] and by_source["folder/folder_b"]["new_images"] == 3
    assert by_source["mpii/train"]["new_samples"] == by_source["folder/folder_a"]["new_samples"] == 0
    messages = _log_messages(second_id)
    assert any("folder/folder_b (new folder): 3 images" in m for m in messages)
    assert any("all 1 epochs already trained, its weights are reused" in m for m in messages)  # gt_only
    assert second["students"]["gt_only"] == result["students"]["gt_only"]
    assert _epochs_trained(second["students"]["gt_only"]) == 1
    assert second["students"]["fpd"] != result["students"]["fpd"]
    assert len(starts) == 1 and _same(starts[0], gt_weights)  # the fresh FPD student fine-tunes the same gt_only
    assert TeacherTargetCache(params["cache_dir"]).inspect().per_source["folder/folder_b"] == 3

    # Nothing new: inference is skipped altogether.
    third, third_id = _run(params)
    assert third["inferred"] == 0
    assert any("inference skipped" in m for m in _log_messages(third_id))
