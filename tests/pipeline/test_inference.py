"""Teacher inference into the cache with a tiny hourglass: flip-test values, bad files, slots, kill -9 + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.joints import MPII
from models.presets import create_from_preset, get_preset
from pipeline.cli import build_parser, infer_cmd, main
from pipeline.codec import HeatmapCodec
from pipeline.data.crops import CropDataset
from pipeline.data.folders import scan_folder
from pipeline.flip import flip_test
from pipeline.records import SampleRecord
from pipeline.teacher import inference
from pipeline.teacher.inference import open_teacher_cache, run_teacher_inference, teacher_provenance
from pipeline.teacher.plan import plan_inference, slot_of
from pipeline.teacher.records import cached_records
from storage.cache import COMPRESSIONS, DEFAULT_COMPRESSION, CacheMismatchError, TeacherTargetCache
from storage.checkpoints import save_weights

PRESET = get_preset("tiny_teacher_mpii")
REPO = Path(__file__).resolve().parents[2]


def make_images(folder: Path, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.png")


def tiny_teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_from_preset(PRESET).eval()


def new_cache(path: Path, sha: str = "0" * 64) -> TeacherTargetCache:
    return TeacherTargetCache(path).open_or_create(teacher_provenance(PRESET, sha))


def infer(model: torch.nn.Module, folder: Path, cache: TeacherTargetCache, **kwargs: object):
    records = scan_folder(folder, input_aspect=PRESET.input_aspect).records
    options = dict(batch_size=3, device="cpu", num_workers=0, shard_size=4, progress=False)
    options.update(kwargs)
    return run_teacher_inference(model, PRESET, plan_inference(records, cache), cache, **options)


def test_stored_heatmaps_are_the_flip_average_computed_by_hand(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 4)
    model = tiny_teacher()
    cache = new_cache(tmp_path / "cache")
    report = infer(model, tmp_path / "imgs", cache)
    assert (report.new, report.skipped, report.failed) == (4, 0, 0)

    data = cache.dataset()
    records = cached_records(data.index)
    images = torch.stack([item["image"] for item in CropDataset(records, PRESET.input_size, PRESET.color_order)])
    perm = MPII.flip_permutation()
    with torch.no_grad():
        direct = model(images)[-1]
        mirrored = model(images.flip(-1))[-1].flip(-1)[:, perm]
    shifted = mirrored.clone()
    shifted[..., 1:] = mirrored[..., :-1]  # HRNet's one-pixel shift of the flipped pass
    expected = ((direct + shifted) / 2).numpy()
    stored = torch.stack([data[i]["heatmaps"] for i in range(len(data))]).numpy()
    # Storage: the 8-bit default is within half a step (map range / 510, here <= 1.1e-3) plus float16 rounding.
    np.testing.assert_allclose(stored, expected, atol=2e-3, rtol=2e-3)
    assert not np.allclose(stored, direct.numpy(), atol=2e-3)  # the flip pass really contributed

    codec = HeatmapCodec(PRESET.input_size, PRESET.heatmap_size)
    coords, maxvals = codec.decode(torch.from_numpy(expected))
    np.testing.assert_allclose(data.index.numeric["maxvals"], maxvals.numpy(), atol=2e-3)
    image_px = codec.to_image(coords, [r.center for r in records], [r.scale for r in records])
    np.testing.assert_allclose(data.index.numeric["teacher_joints_image"], image_px, atol=0.5)


def test_bad_image_is_reported_and_does_not_stop_the_run(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 3)
    records = scan_folder(tmp_path / "imgs", input_aspect=PRESET.input_aspect).records
    (tmp_path / "imgs" / "im01.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cache = new_cache(tmp_path / "cache")
    model = tiny_teacher()
    report = run_teacher_inference(model, PRESET, plan_inference(records, cache), cache, batch_size=2, device="cpu",
                                   num_workers=0, progress=False)  # fmt: skip
    assert (report.new, report.failed) == (2, 1)
    assert report.failed_files == (str(tmp_path / "imgs" / "im01.png"),)
    again = run_teacher_inference(model, PRESET, plan_inference(records, cache), cache, batch_size=2, device="cpu",
                                  num_workers=0, progress=False)  # fmt: skip
    assert (again.new, again.skipped, again.failed) == (0, 2, 1)


def test_slots_fill_one_cache_side_by_side(tmp_path: Path) -> None:
    count = 5
    make_images(tmp_path / "imgs", count)
    # Keys hold the (random) tmp root: add images until both slots have work, so that the test cannot be vacuous.
    while len({slot_of(r.key, 2) for r in scan_folder(tmp_path / "imgs", input_aspect=1.0)}) < 2:
        count += 1
        make_images(tmp_path / "imgs", count)
    model = tiny_teacher()
    cache = new_cache(tmp_path / "cache")
    reports = [infer(model, tmp_path / "imgs", cache, shard_index=i, num_shards=2) for i in (0, 1)]
    assert sum(r.new for r in reports) == count and all(r.new for r in reports)
    keys = [r.key for r in cached_records(cache.dataset().index)]
    assert len(set(keys)) == count
    assert {s.slot for s in cache.manifest().shards} == {(0, 2), (1, 2)}
    assert infer(model, tmp_path / "imgs", cache).skipped == count


def test_wrong_teacher_is_refused(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 1)
    cache = new_cache(tmp_path / "cache")
    with pytest.raises(CacheMismatchError, match="checkpoint_sha256"):
        new_cache(tmp_path / "cache", sha="f" * 64)
    coco = get_preset("tiny_teacher_coco")
    records = scan_folder(tmp_path / "imgs", input_aspect=coco.input_aspect).records
    with pytest.raises(CacheMismatchError, match="heatmap_size"):
        run_teacher_inference(create_from_preset(coco), coco, plan_inference(records, cache), cache, batch_size=1,
                              device="cpu", num_workers=0, progress=False)  # fmt: skip


def make_jpegs(folder: Path, count: int) -> None:
    """Textured 600x600 JPEGs: a whole-image crop shrinks them ~6x, so draft mode would decode them at 1/4."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        texture = Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8))
        texture.resize((600, 600), Image.Resampling.BICUBIC).save(folder / f"im{i}.jpg", quality=90)


def flip_maps(model: torch.nn.Module, records: list[SampleRecord], use_draft: bool) -> np.ndarray:
    images = torch.stack([item["image"] for item in CropDataset(records, PRESET.input_size, PRESET.color_order,
                                                                 use_draft=use_draft)])  # fmt: skip
    with torch.inference_mode():
        return flip_test(model, images, MPII.flip_permutation()).numpy()


def test_targets_come_from_full_decodes_unless_draft_decode_is_asked(tmp_path: Path) -> None:
    make_jpegs(tmp_path / "imgs", 2)
    model = tiny_teacher()
    full_cache = new_cache(tmp_path / "full")
    assert infer(model, tmp_path / "imgs", full_cache).new == 2
    records = cached_records(full_cache.dataset().index)
    full, draft = flip_maps(model, records, use_draft=False), flip_maps(model, records, use_draft=True)
    assert np.abs(full - draft).max() > 0.01  # the two decodings really give other targets here
    stored = torch.stack([item["heatmaps"] for item in full_cache.dataset()]).numpy()
    np.testing.assert_allclose(stored, full, atol=2e-3, rtol=2e-3)  # the default: full decodes
    assert full_cache.provenance.draft_decode is False

    draft_cache = TeacherTargetCache(tmp_path / "draft").open_or_create(
        teacher_provenance(PRESET, "0" * 64, draft_decode=True)
    )
    assert infer(model, tmp_path / "imgs", draft_cache, draft_decode=True).new == 2
    data = draft_cache.dataset()
    position = {r.key: i for i, r in enumerate(cached_records(data.index))}
    stored = torch.stack([data[position[r.key]]["heatmaps"] for r in records]).numpy()
    np.testing.assert_allclose(stored, draft, atol=2e-3, rtol=2e-3)
    assert draft_cache.provenance.draft_decode is True


def test_other_jpeg_decoding_than_the_cache_is_refused(tmp_path: Path) -> None:
    make_jpegs(tmp_path / "imgs", 1)
    cache = new_cache(tmp_path / "cache")
    with pytest.raises(CacheMismatchError, match=r"draft_decode: False != True \(the cache holds targets of full "
                       r"JPEG decodes and this run would add draft decodes: .*drop --draft-decode"):  # fmt: skip
        infer(tiny_teacher(), tmp_path / "imgs", cache, draft_decode=True)
    checkpoint = tmp_path / "teacher.pth"
    checkpoint.write_bytes(b"weights")
    open_teacher_cache(tmp_path / "drafted", PRESET, checkpoint, draft_decode=True)
    with pytest.raises(CacheMismatchError, match=r"draft_decode: True != False .*pass --draft-decode"):
        open_teacher_cache(tmp_path / "drafted", PRESET, checkpoint)
    assert len(cache.manifest().shards) == 0  # nothing was written by the refused run


def test_infer_cli_draft_decode_reaches_the_crops_and_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_jpegs(tmp_path / "imgs", 2)
    checkpoint = save_weights(tiny_teacher(), tmp_path / "teacher.pth")
    seen = []

    def recording(*args: object, use_draft: bool = False) -> CropDataset:
        seen.append(use_draft)
        return CropDataset(*args, use_draft=use_draft)

    monkeypatch.setattr(inference, "CropDataset", recording)
    args = ["infer", "--teacher", PRESET.name, "--checkpoint", str(checkpoint), "--cache", str(tmp_path / "cache"),
            "--folder", str(tmp_path / "imgs"), "--workers", "0", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main([*args, "--draft-decode"]) == 0
    assert seen == [True] and TeacherTargetCache(tmp_path / "cache").provenance.draft_decode is True
    capsys.readouterr()
    assert main(args) == 2  # without the flag: refused, not mixed
    assert "draft_decode: True != False" in capsys.readouterr().err and seen == [True]


KILLABLE = textwrap.dedent(
    """
    import sys, time, torch
    from models.presets import create_from_preset, get_preset
    from pipeline.data.folders import scan_folder
    from pipeline.teacher.inference import run_teacher_inference, teacher_provenance
    from pipeline.teacher.plan import plan_inference, slot_of
    from storage.cache import TeacherTargetCache

    preset = get_preset("tiny_teacher_mpii")
    torch.manual_seed(0)
    model = create_from_preset(preset).eval()
    forward = model.forward
    def slow_forward(x):  # long enough a run to be killed in the middle
        time.sleep(float(sys.argv[3]))
        return forward(x)
    model.forward = slow_forward
    cache = TeacherTargetCache(sys.argv[2]).open_or_create(teacher_provenance(preset, "0" * 64))
    records = scan_folder(sys.argv[1], input_aspect=preset.input_aspect).records
    report = run_teacher_inference(model, preset, plan_inference(records, cache), cache, batch_size=int(sys.argv[4]),
                                   device="cpu", num_workers=1, shard_size=2, progress=False)
    print(report.new, report.skipped)
    """
)


def test_infer_cli_offers_the_cache_compressions_and_its_default(tmp_path: Path) -> None:
    # infer_cmd spells them out, so that `fpd --help` imports no h5py or torch.
    assert (tuple(COMPRESSIONS), DEFAULT_COMPRESSION) == (infer_cmd.COMPRESSION_NAMES, infer_cmd.DEFAULT_COMPRESSION)
    args = ["infer", "--teacher", PRESET.name, "--checkpoint", "c.pth", "--cache", str(tmp_path)]
    assert build_parser().parse_args(args).compression == DEFAULT_COMPRESSION
    assert build_parser().parse_args([*args, "--compression", "lzf"]).compression == "lzf"


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 8)
    script = tmp_path / "run.py"
    script.write_text(KILLABLE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = tmp_path / "killed"
    args = [sys.executable, str(script), str(tmp_path / "imgs"), str(killed)]
    proc = subprocess.Popen([*args, "0.3", "2"], env=env, cwd=REPO)
    manifest = killed / "manifest.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if manifest.exists() and json.loads(manifest.read_text())["shards"]:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    before = json.loads(manifest.read_text())["shards"]
    assert 2 <= sum(s["num_samples"] for s in before) < 8  # really interrupted in the middle

    done = subprocess.run([*args, "0", "8"], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    new, skipped = map(int, done.stdout.split())
    # A shard renamed just before the kill but not yet listed is adopted, so it may count as skipped too.
    assert skipped >= sum(s["num_samples"] for s in before) and new + skipped == 8
    after = TeacherTargetCache(killed).manifest()
    assert [(s.name, s.sha256) for s in after.shards[: len(before)]] == [(s["name"], s["sha256"]) for s in before]
    assert after.superseded == {} and not list(killed.glob(".tmp-*"))

    reference = new_cache(tmp_path / "reference")
    infer(tiny_teacher(), tmp_path / "imgs", reference, batch_size=8)
    got, want = TeacherTargetCache(killed).dataset(), reference.dataset()
    assert len(got) == len(want) == 8 and len({r.key for r in cached_records(got.index)}) == 8
    position = {r.key: i for i, r in enumerate(cached_records(want.index))}
    # Other batch sizes may change the forward's last bits, which the 8-bit default can turn into one code step
    # (a map's range / 255, 1e-3 to 2.1e-3 for this teacher's maps of random images) plus float16's rounding.
    for i, record in enumerate(cached_records(got.index)):
        np.testing.assert_allclose(got[i]["heatmaps"], want[position[record.key]]["heatmaps"], atol=3e-3)
