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
