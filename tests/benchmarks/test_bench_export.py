"""``benchmarks/bench_export.py`` on a tiny preset: both formats exported and checked on the real photos."""

from __future__ import annotations

import json

import pytest

from benchmarks.bench_export import main


def test_tiny_preset_exports_in_both_formats_and_matches(real_data, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "export.json"
    rows = main(["--presets", "tiny_student_coco", "--threads", "1", "--json-out", str(out)])
    assert json.loads(out.read_text()) == rows
    assert [r["format"] for r in rows] == ["onnx", "torchscript"]
    for row in rows:
        assert row["crops"] == 4 and row["batch_sizes"] == [1, 4]  # the four COCO photos, whole
        assert row["max_abs_diff"] <= 1e-4 and row["joints_identical"] and row["size_mib"] > 0
