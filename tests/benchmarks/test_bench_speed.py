"""``benchmarks/bench_speed.py``: its smoke setting end to end, ratios that follow from the timings, and a mode
that cannot run reported instead of ending the run."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.bench_speed import main, parse_args
from models import complexity, create_from_preset, get_preset


def test_smoke_setting_times_every_mode_and_batch(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "speed.json"
    result = main(["--smoke", "--threads", "1", "--json-out", str(out)])

    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    teacher, student = get_preset("tiny_teacher_mpii"), get_preset("tiny_student_mpii")
    ratio = (complexity(create_from_preset(teacher), teacher.input_hw).gflops
             / complexity(create_from_preset(student), student.input_hw).gflops)  # fmt: skip
    rows = result["rows"]
    assert [(r["mode"], r["batch"]) for r in rows] == [
        (mode, batch) for mode in ("eager", "channels_last", "onnxruntime") for batch in (1, 2)
    ]
    for row in rows:
        assert row["status"] == "ok" and row["teacher_images_per_s"] > 0 and row["student_images_per_s"] > 0
        assert row["speedup"] == pytest.approx(row["student_images_per_s"] / row["teacher_images_per_s"])
        assert row["gflop_ratio"] == pytest.approx(ratio) and ratio > 5  # 0.139 / 0.025 GFLOPs
        assert row["fraction_of_gflop_ratio"] == pytest.approx(row["speedup"] / ratio)
    onnx_rows = [r for r in rows if r["mode"] == "onnxruntime"]
    for role in ("teacher", "student"):  # the timed ONNX files compute what PyTorch computes
        check = onnx_rows[0]["onnx_check"][role]
        assert check["passed"] and check["joints_identical"] and check["max_abs_diff"] <= 1e-4
    table = capsys.readouterr().out
    assert "ONNX files vs PyTorch (batch 1 and 4, tolerance 1e-4): tiny_teacher_mpii max |diff|" in table
    assert "tiny_teacher_mpii -> tiny_student_mpii" in table and "load (1-min average" in table
    assert table.count("onnxruntime") >= 2 and result["setting"]["threads"] == 1


def test_a_mode_that_fails_is_reported_and_the_others_still_run(monkeypatch, capsys):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nsecond line")

    monkeypatch.setattr(torch, "compile", broken_compile)
    result = main(["--smoke", "--threads", "1", "--modes", "compile", "eager", "--batch-sizes", "1"])
    compiled, eager = result["rows"]
    assert compiled["mode"] == "compile" and compiled["status"] == "n/a (RuntimeError: no C++ compiler found)"
    assert eager["mode"] == "eager" and eager["status"] == "ok"
    assert "n/a (RuntimeError: no C++ compiler found)" in capsys.readouterr().out


def test_defaults_are_fpd_pairs_and_device_modes():
    cpu = parse_args([])
    assert cpu.pairs == [("hg8_256", "hg4_128"), ("hrnet_w48_256x192", "hrnet_w32_256x192")]
    assert cpu.modes == ["eager", "channels_last", "compile", "onnxruntime"] and cpu.batch_sizes == [1, 8]
    with pytest.raises(SystemExit):
        parse_args(["--modes", "bf16"])  # autocast modes are CUDA's
    with pytest.raises(SystemExit):
        parse_args(["--pairs", "hg8_256"])
