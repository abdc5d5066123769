"""The teachers shipped with the demo (demo/teachers) still fit the demo's generated data.

They were trained by ``demo/demo.py teacher`` on images that ``pipeline.data.synthetic`` generates from the demo's
seed; a change to the generator or to the presets would leave the demo distilling from a teacher that no longer
knows its data (or no longer loads), and its table would no longer show the teacher on top.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from demo.demo import OUT, DemoSizes, dataset_parameters, install_shipped_teachers
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
