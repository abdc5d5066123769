"""distill-flow with the detection stage: a folder of photos is detected, its persons inferred, a student trained;
a folder dropped in later costs only its images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_photos
from tests.flows.conftest import tiny_parameters


@pytest.mark.slow
def test_distill_flow_detects_persons_then_infers_and_trains(
    prefect_harness: None, flow_data: dict[str, Path], person_detector: dict[str, object], tmp_path: Path
) -> None:
    from flows.distill import distill_flow
    from pipeline.data.folders import scan_folder
    from storage.cache import TeacherTargetCache

    write_photos(tmp_path / "unlabeled" / "street", 3)
    params = tiny_parameters(flow_data, tmp_path, baselines=[], detector={"person_boxes": "detector",
                             **person_detector}, schedule={"epochs": 1, "lr": 1e-3, "milestones": [1],
                             "batch_size": 8})  # fmt: skip
    state = distill_flow(**params, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()

    store = tmp_path / "cache" / "detections"  # the default store, beside the cache
    persons = scan_folder(tmp_path / "unlabeled" / "street", input_aspect=1.0, detection_store=store).records
    assert len(persons) > 3  # several persons per photo, not one whole image each
    assert TeacherTargetCache(params["cache_dir"]).inspect().per_source["folder/street"] == len(persons)
    assert Path(result["students"]["fpd"]).is_file()
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    (street,) = run["detection"]["folders"]
    assert (street["images"], street["detected"], street["persons"]) == (3, 3, len(persons))
    assert run["detection"]["detector"]["model"] == person_detector["model"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Person detection" in report and f"| 3 | 3 | {len(persons)} |" in report

    write_photos(tmp_path / "unlabeled" / "park", 2, seed=1)
    second = distill_flow(**params, return_state=True)
    assert second.is_completed(), second.message
    folders = {Path(f["folder"]).name: f for f in json.loads((tmp_path / "out" / "run.json").read_text())
               ["detection"]["folders"]}  # fmt: skip
    assert (folders["street"]["detected"], folders["street"]["reused"]) == (0, 3)
    assert folders["park"]["detected"] == 2
