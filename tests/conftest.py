"""Shared fixtures: the small real MPII / COCO samples kept beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data/real`` (COCO val2017 and MPII samples, see its README); skips when it is absent."""
    if not (REAL_DATA / "mpii").is_dir() or not (REAL_DATA / "coco").is_dir():
        pytest.skip(f"real sample data not found at {REAL_DATA}")
    return REAL_DATA.resolve()
