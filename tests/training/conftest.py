"""Shared fixtures of the training tests: a small synthetic MPII dataset and recipe builder."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.data.synthetic import SyntheticConfig, generate_dataset
from pipeline.training.config import TrainConfig, config_from_dict


@pytest.fixture(scope="session")
def synthetic_mpii(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MPII layout with 4 training and 4 validation images (a few persons each)."""
    out = tmp_path_factory.mktemp("synthetic") / "mpii"
    return generate_dataset(out, "mpii", SyntheticConfig(num_train=4, num_val=4, seed=1, size_range=(160, 200)))


def tiny_recipe(root: Path, output_dir: Path, **overrides: object) -> TrainConfig:
    """A CPU recipe for ``tiny_student_mpii`` on ground truth alone; ``overrides`` replace top-level sections."""
    raw: dict = {
        "student_preset": "tiny_student_mpii",
        "data": {"labelled": [{"kind": "mpii", "root": str(root), "split": "train"}], "batch_size": 4,
                 "workers": 0},
        "optim": {"lr": 1e-3, "epochs": 3, "milestones": [2]},
        "loss": {"alpha": 0.0},
        "output_dir": str(output_dir),
        "device": "cpu",
        "seed": 5,
        "progress": False,  # no bar in the test output
    }
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return config_from_dict(raw)
