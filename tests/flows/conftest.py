"""Fixtures of the flow tests: one Prefect test server per session, tiny generated data, a random teacher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

TEACHER, STUDENT = "tiny_teacher_mpii", "tiny_student_mpii"


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A temporary Prefect server and database for the session, results in the session's own folder."""
    from prefect.settings import (
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect_results")
    settings = {PREFECT_LOCAL_STORAGE_PATH: storage, PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}
    with temporary_settings(settings), prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def flow_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny synthetic MPII root and random teacher weights (unlabeled folders are made per test).

    The teacher is untrained: the flow tests check the plumbing (cache, training, scores, artifacts), not accuracy.
    """
    import torch

    from models import create_from_preset, get_preset
    from pipeline.data.synthetic import SyntheticConfig, generate_dataset
    from storage.checkpoints import save_weights

    base = tmp_path_factory.mktemp("flow_data")
    config = SyntheticConfig(num_train=8, num_val=4, size_range=(128, 160), max_people=1)
    mpii = generate_dataset(base / "mpii", "mpii", config)
    torch.manual_seed(0)
    teacher = save_weights(create_from_preset(get_preset(TEACHER)), base / "teacher.pth")
    return {"mpii": mpii, "teacher": teacher}


def add_folder(root: Path, name: str, num_images: int) -> Path:
    """Drop a new unlabeled folder of small generated images into ``root``."""
    from pipeline.data.synthetic import generate_unlabeled_folder

    generate_unlabeled_folder(root / name, num_images, size_range=(128, 160))
    return root / name


def tiny_parameters(data: dict[str, Path], work: Path, **overrides: object) -> dict[str, object]:
    """distill-flow parameters for the tiny data (unlabeled root ``work/unlabeled``, whose generated folders hold
    single-person crops: whole images): one epoch, CPU, one thread."""
    params: dict[str, object] = {
        "teacher": {"preset": TEACHER, "checkpoint": str(data["teacher"])},
        "student": {"preset": STUDENT},
        "labelled": [{"dataset": "mpii", "root": str(data["mpii"])}],
        "unlabeled_roots": [str(work / "unlabeled")],
        "detector": {"person_boxes": "whole_image"},
        "cache_dir": str(work / "cache"),
        "output_dir": str(work / "out"),
        "baselines": ["gt_only"],
        "schedule": {"epochs": 1, "lr": 1e-3, "milestones": [1], "batch_size": 8},
        "eval_datasets": ["mpii"],
        "device": {"device": "cpu", "amp": False, "num_workers": 0, "inference_batch_size": 16, "torch_threads": 1},
        "num_shards": 1,
        "render_overlays": 2,
    }
    return params | overrides
