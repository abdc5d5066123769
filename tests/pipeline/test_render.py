"""`fpd infer` and `fpd cache inspect | render | verify` on real COCO and MPII images with tiny teachers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.joints import MPII
from models.presets import create_from_preset, get_preset
from pipeline.cli import main
from pipeline.records import SampleRecord
from pipeline.render import heat_colours, render_sample
from pipeline.teacher.plan import plan_inference
from pipeline.teacher.records import cached_records, shard_batch
from storage.cache import CacheProvenance, TeacherTargetCache
from storage.checkpoints import save_weights

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"


def teacher_checkpoint(path: Path, preset: str) -> Path:
    torch.manual_seed(0)
    return save_weights(create_from_preset(get_preset(preset)), path)


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MPII teacher's cache over the 5 real MPII persons and the 4 real COCO images as a folder."""
    if not REAL.is_dir():
        pytest.skip(f"real sample data not found at {REAL}")
    tmp = tmp_path_factory.mktemp("real")
    weights = teacher_checkpoint(tmp / "teacher.pth", "tiny_teacher_mpii")
    code = main([
        "infer", "--teacher", "tiny_teacher_mpii", "--checkpoint", str(weights), "--cache", str(tmp / "cache"),
        "--mpii", f"{REAL / 'mpii'}:valid_first5", "--folder", str(REAL / "coco" / "images" / "val2017"),
        "--batch-size", "4", "--workers", "0", "--device", "cpu", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    return tmp / "cache"


def test_infer_cli_fills_and_then_skips(real_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = real_cache.parent / "teacher.pth"
    args = ["infer", "--teacher", "tiny_teacher_mpii", "--checkpoint", str(weights), "--cache", str(real_cache),
            "--mpii", f"{REAL / 'mpii'}:valid_first5", "--workers", "0", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    assert "0 new, 5 skipped, 0 failed" in capsys.readouterr().out
    torch.manual_seed(1)
    other = save_weights(create_from_preset(get_preset("tiny_teacher_mpii")), real_cache.parent / "other.pth")
    assert main([*args[:4], str(other), *args[5:]]) == 2  # another checkpoint: refused, difference named
    assert "checkpoint_sha256" in capsys.readouterr().err


def test_inspect_json(real_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "inspect", str(real_cache), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_samples"] == 9
    assert summary["per_source"] == {"folder/val2017": 4, "mpii/valid_first5": 5}
    assert (summary["labelled"], summary["unlabeled"]) == (5, 4)
    assert summary["provenance"]["teacher_preset"] == "tiny_teacher_mpii"
    assert summary["provenance.input_size"] == [128, 128] and summary["provenance"]["flip_test"] is True
    assert len(summary["joint_confidence"]) == 16 and summary["bytes_per_sample"] > 0
    means = [low["mean_maxval"] for low in summary["lowest_confidence"]]
    assert means == sorted(means) and len(means) == 9
    assert main(["cache", "inspect", str(real_cache)]) == 0
    assert "mpii/valid_first5: 5" in capsys.readouterr().out


def test_render_writes_overlays_and_index(real_cache: Path, tmp_path: Path) -> None:
    assert main(["cache", "render", str(real_cache), "--out", str(tmp_path), "--n", "3",
                 "--source", "mpii/valid_first5"]) == 0  # fmt: skip
    pictures = sorted(tmp_path.glob("*.png"))
    assert len(pictures) == 3
    with Image.open(pictures[0]) as picture:
        assert picture.size[0] >= 320 and picture.size[1] > picture.size[0]  # crop enlarged + legend strip
        pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    # Both skeleton colours are drawn on a labelled MPII sample.
    assert (pixels == (0, 229, 255)).all(axis=1).any() and (pixels == (255, 64, 160)).all(axis=1).any()
    index = (tmp_path / "index.html").read_text()
    records = cached_records(TeacherTargetCache(real_cache).dataset().index)
    first_mpii = next(r for r in records if r.source.startswith("mpii"))
    assert all(p.name in index for p in pictures) and first_mpii.image in index and "r_ankle" in index


def test_render_lowest_draws_the_teachers_weakest_samples_first(
    real_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "inspect", str(real_cache), "--json", "--lowest", "2"]) == 0
    weakest = [(low["source"], Path(low["image"]).stem) for low in json.loads(capsys.readouterr().out)
               ["lowest_confidence"]]  # fmt: skip
    assert main(["cache", "render", str(real_cache), "--out", str(tmp_path), "--lowest", "2"]) == 0
    drawn = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(drawn) == 2 == len(weakest)
    for k, (name, (source, stem)) in enumerate(zip(drawn, weakest, strict=True)):
        assert name.startswith(f"{k:03d}_{source.replace('/', '-')}_{stem}")


def test_verify_cli(real_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "verify", str(real_cache)]) == 0
    assert "0 damaged" in capsys.readouterr().out
    assert TeacherTargetCache(real_cache).verify().ok


def test_coco_teacher_on_real_coco_ground_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not REAL.is_dir():
        pytest.skip(f"real sample data not found at {REAL}")
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "person_keypoints_val2017.json").symlink_to(
        (REAL / "coco" / "annotations" / "person_keypoints_val2017_subset4.json").resolve()
    )
    (root / "images").symlink_to((REAL / "coco" / "images").resolve())
    weights = teacher_checkpoint(tmp_path / "teacher.pth", "tiny_teacher_coco")
    assert main(["infer", "--teacher", "tiny_teacher_coco", "--checkpoint", str(weights), "--cache",
                 str(tmp_path / "cache"), "--coco", str(root), "--workers", "0", "--device", "cpu",
                 "--no-progress"]) == 0  # fmt: skip
    assert "12 new, 0 skipped, 0 failed" in capsys.readouterr().out
    data = TeacherTargetCache(tmp_path / "cache").dataset()
    w, h = get_preset("tiny_teacher_coco").heatmap_size
    assert len(data) == 12 and data[0]["heatmaps"].shape == (17, h, w) and data[0]["labelled"]


def test_heat_colours_ramp() -> None:
    ramp = heat_colours(np.array([0.0, 1.0, 2.0]))
    assert ramp.dtype == np.uint8 and tuple(ramp[0]) == (20, 40, 200) and tuple(ramp[1]) == tuple(ramp[2])


def test_heat_layer_lands_on_the_heatmap_peak(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), (128, 128, 128)).save(tmp_path / "grey.png")
    record = SampleRecord(source="folder/t", root=tmp_path, image="grey.png", center=(31.5, 31.5),
                          scale=(64 / 200, 64 / 200), instance_id="grey.png#0")  # fmt: skip
    provenance = CacheProvenance("t", "0" * 64, (32, 32), (8, 8), "mpii", MPII.names, MPII.flip_pairs)
    cache = TeacherTargetCache(tmp_path / "cache").open_or_create(provenance)
    heatmaps = np.zeros((1, 16, 8, 8), dtype=np.float32)
    heatmaps[0, 3, 5, 2] = 1.0  # joint 3 peaks at heatmap pixel (x=2, y=5)
    plan = plan_inference([record], cache)
    with cache.writer() as writer:  # maxvals 0: no teacher joints drawn, only the heat layer
        writer.add(shard_batch(plan.records, plan.states, heatmaps, np.zeros((1, 16, 2)), np.zeros((1, 16, 2)),
                               np.zeros((1, 16))))  # fmt: skip
    render_sample(cache.dataset(), 0, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as picture:
        pixels = np.asarray(picture.convert("RGB"), dtype=np.int32)
    factor = picture.size[0] // 32  # enlarged to >= 320 px
    redness = pixels[: 32 * factor, :, 0] - pixels[: 32 * factor, :, 2]
    y, x = np.unravel_index(np.argmax(redness), redness.shape)
    # Heatmap pixel j sits at input pixel 4 * j (stride 4), then the picture enlarges by ``factor``.
    assert abs(x - 2 * 4 * factor) <= 1 and abs(y - 5 * 4 * factor) <= 1
    assert tuple(pixels[2, 2]) == (128, 128, 128)  # far from the peak the crop shows through unchanged


@pytest.mark.parametrize(("instance_id", "boxed"), [("grey.png#det0", True), ("grey.png#0", False)])
def test_a_detector_box_is_drawn_on_unlabeled_overlays(tmp_path: Path, instance_id: str, boxed: bool) -> None:
    """A detector's person box (the crop before its 1.25 padding) is drawn in the box colour; a whole image has
    none."""
    from pipeline.geometry import box_to_center_scale
    from pipeline.render import BOX_COLOUR

    Image.new("RGB", (64, 64), (128, 128, 128)).save(tmp_path / "grey.png")
    center, scale = box_to_center_scale(16.0, 16.0, 32.0, 32.0, aspect_ratio=1.0)
    record = SampleRecord(source="folder/t", root=tmp_path, image="grey.png", center=center, scale=scale,
                          instance_id=instance_id, score=0.87)  # fmt: skip
    provenance = CacheProvenance("t", "0" * 64, (32, 32), (8, 8), "mpii", MPII.names, MPII.flip_pairs)
    cache = TeacherTargetCache(tmp_path / "cache").open_or_create(provenance)
    plan = plan_inference([record], cache)
    with cache.writer() as writer:
        writer.add(shard_batch(plan.records, plan.states, np.zeros((1, 16, 8, 8), dtype=np.float32),
                               np.zeros((1, 16, 2)), np.zeros((1, 16, 2)), np.zeros((1, 16))))  # fmt: skip
    render_sample(cache.dataset(), 0, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as picture:
        pixels = np.asarray(picture.convert("RGB"))
    factor = picture.size[0] // 32
    box = np.all(pixels[: 32 * factor] == BOX_COLOUR, axis=-1)
    assert box.any() == boxed
    if boxed:  # the box spans the crop's inner 1 / 1.25, centred
        ys, xs = np.nonzero(box)
        margin = 32 * factor * (1 - 1 / 1.25) / 2
        assert abs(xs.min() - margin) <= factor and abs(32 * factor - 1 - xs.max() - margin) <= factor + 1
        assert abs(ys.min() - margin) <= factor
