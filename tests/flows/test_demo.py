"""The demo's own pieces: the teachers shipped with it (demo/teachers) still fit its generated data; the progress
lines it prints while the students train.

The teachers were trained by ``demo/demo.py teacher`` on images that ``pipeline.data.synthetic`` generates from the
demo's seed; a change to the generator or to the presets would leave the demo distilling from a teacher that no longer
knows its data (or no longer loads), and its table would no longer show the teacher on top.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from demo.demo import OUT, DemoSizes, dataset_parameters, install_shipped_teachers
from demo.status import latest_epochs
from pipeline.data.synthetic import generate_dataset
from pipeline.evaluation import evaluate_weights

# The demo's teachers scored MPII PCKh@0.5 90.2 and COCO AP 0.602 on these validation images (docs/demo.md).
FLOORS = {"mpii": ("Mean", 85.0), "coco": ("AP", 0.5)}


@pytest.mark.parametrize("dataset", ["mpii", "coco"])
def test_shipped_teacher_loads_strictly_and_knows_the_demo_data(
    dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the deployment's paths are relative to the checkout; install into a scratch copy
    installed = {path.parent.name: path for path in install_shipped_teachers()}
    teacher = dataset_parameters(dataset)["teacher"]
    weights = installed[teacher["preset"]]
    assert weights == Path(teacher["checkpoint"]) and weights.is_file() and Path(f"{weights}.json").is_file()

    # Image i of a split depends only on (seed, split, i): one training image suffices to get the demo's validation.
    scenes = replace(DemoSizes().scenes(), num_train=1)
    root = generate_dataset(OUT / "data" / dataset, dataset, scenes)
    split = "valid" if dataset == "mpii" else "val2017"
    metrics = evaluate_weights(teacher["preset"], weights, dataset, root, split)  # strict load, flip test
    metric, floor = FLOORS[dataset]
    assert metrics[metric] >= floor, metrics


def test_progress_names_each_datasets_newest_student_and_its_epoch(tmp_path: Path) -> None:
    assert latest_epochs(tmp_path / "runs") == []  # before the flows start
    for dataset, variant, epochs in (("coco", "gt_only", 8), ("coco", "fpd_labelled", 8), ("mpii", "fpd", 6)):
        folder = tmp_path / "runs" / dataset / "students" / f"{variant}-0123456789"
        folder.mkdir(parents=True)
        (folder / "recipe.yaml").write_text(f"optim:\n  lr: 0.005\n  epochs: {epochs}\n")
        record = {"epoch": 2, "loss": 0.00123, "samples_per_s": 140.4}
        (folder / "log.jsonl").write_text(json.dumps(dict(record, epoch=0)) + "\n" + json.dumps(record) + "\n")
    (tmp_path / "runs" / "mpii" / "students" / "gt_only-0000000000").mkdir()  # started, no epoch yet: not newest log
    assert latest_epochs(tmp_path / "runs") == [
        "   coco student fpd_labelled: epoch 3/8, loss 0.00123, 140 samples/s",
        "   mpii student fpd: epoch 3/6, loss 0.00123, 140 samples/s",
    ]
