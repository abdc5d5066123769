"""``benchmarks/bench_training_sample.py``: one round on the real COCO photos, every timing reported, and the faster
sample's outputs equal to the previous path's where they should be (targets, teacher maps) and within one grey level
inside the image."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.bench_training_sample import STEPS, main


def test_one_round_times_every_step_and_keeps_the_outputs(real_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sample.json"
    result = main(["--data", str(real_data), "--rounds", "1", "--passes", "1", "--json-out", str(out)])

    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    medians = result["median_ms_per_sample"]
    for arm in ("before", "now"):
        assert all(medians[f"{arm}/{step}"] > 0 for step in (*STEPS, "__getitem__", "collate"))
    assert medians["now/training step share"] > 0 and "hrnet/__getitem__" not in medians  # no --hrnet-root
    summary = result["summary"]
    assert summary["now_over_floor"] == summary["now_ms"] / summary["decode_floor_ms"]
    assert summary["hrnet_ms"] is None and summary["goal_hrnet_met"] is None
    pixels = result["pixels"]
    # GT targets, their weights, the teacher maps and their view: what the previous per-sample path gave, exactly
    assert all(pixels[f"{name}_max"] == 0 for name in ("target_diff", "target_weight_diff", "teacher_diff",
                                                        "seen_diff", "gt_joint_diff", "tea_joint_diff"))  # fmt: skip
    # the OpenCV crop: one grey level from Pillow's inside the image, more only on the border band
    assert pixels["crop_diff_interior_max"] == 1 and pixels["crop_diff_border_max"] > 1
    assert 0 < pixels["crop_diff_interior_mean"] < 1
