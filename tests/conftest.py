"""Shared fixtures: the small real MPII / COCO samples kept beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No telemetry from the Prefect servers and clients the tests start, however pytest is invoked.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REAL_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data/real`` (COCO val2017 and MPII samples, see its README); skips when it is absent."""
    if not (REAL_DATA / "mpii").is_dir() or not (REAL_DATA / "coco").is_dir():
        pytest.skip(f"real sample data not found at {REAL_DATA}")
    return REAL_DATA.resolve()


DETECTOR_MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"


@pytest.fixture(scope="session")
def person_detector(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Settings of a real torchvision detector with random weights saved to a file (loaded by the real loading
    code), its person logit raised so that untrained boxes come out as persons; small inputs keep it fast."""
    import torch

    from models.detectors import PERSON_LABEL, create_detector

    torch.manual_seed(0)
    model = create_detector(DETECTOR_MODEL, score_threshold=0.05, nms_threshold=0.5, detections_per_image=100)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[PERSON_LABEL] += 6.0
    path = tmp_path_factory.mktemp("detector") / "person_detector.pth"
    torch.save(model.state_dict(), path)
    return {"model": DETECTOR_MODEL, "weights": str(path), "score_threshold": 0.3, "min_box_size": 8.0,
            "max_persons": 3, "min_size": 96, "max_size": 128}  # fmt: skip


def write_photos(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` noise JPEGs ``p00.jpg``... of 128x96 in ``folder``, for the detector tests; their names."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(0, 255, size=(96, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{i:02d}.jpg", quality=90)
    return [f"p{i:02d}.jpg" for i in range(n)]


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory: pytest.TempPathFactory):
    """``random_weights(preset)``: a seeded, freshly initialised network of the preset saved as a weights file (the
    layout ``fpd train`` writes), as a stand-in for a trained student where only the plumbing is tested."""
    import torch

    from models.presets import create_from_preset

    folder = tmp_path_factory.mktemp("weights")

    def make(preset: str) -> Path:
        path = folder / f"{preset}.pt"
        if not path.is_file():
            torch.manual_seed(0)
            torch.save(create_from_preset(preset).state_dict(), path)
        return path

    return make
