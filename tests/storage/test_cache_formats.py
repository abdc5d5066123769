"""The two shard formats: float16 (format 1, what caches held so far) and 8-bit codes with a scale per map and a
float16 window around each peak (format 2): round trips, a cache holding both, an old cache written by the old
code, and what verify says of a format-2 shard that lacks part of its data."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.codec import HeatmapCodec
from pipeline.teacher.records import cached_records, shard_batch
from storage.cache import DEFAULT_COMPRESSION, TeacherTargetCache
from storage.cache.shards import check_structure, decode_u8, encode_u8, paste_windows, peak_windows, read_columns
from tests.storage.test_cache import U8_ATOL, K, fake_outputs, fill, make_folder, provenance

FORMAT1_CACHE = Path(__file__).resolve().parents[1] / "fixtures" / "cache_format1"
"""A cache written by the code before format 2 existed (commit 15fb28f): ``fill(cache, make_folder(root, "images",
3), seed=0, shard_size=4)`` with ``provenance()`` of tests/storage/test_cache.py, default (lzf) compression. Its
heatmaps are therefore ``fake_outputs(3, 0)[0]`` stored as float16."""


def test_u8_codes_are_within_half_a_step_with_negatives_a_constant_map_and_a_tall_peak() -> None:
    rng = np.random.default_rng(0)
    maps = rng.normal(0.0, 0.01, size=(2, 3, 6, 5)).astype(np.float32)
    maps[0, 0] -= 0.3  # all negative, as raw network outputs may be
    maps[0, 1] = 0.25  # constant: step 0
    maps[1, 2, 3, 2] = 750.0  # a peak far above 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero for the constant map
        codes, lo, step = encode_u8(maps)
        back = decode_u8(codes, lo, step)
    assert codes.dtype == np.uint8 and lo.dtype == step.dtype == back.dtype == np.float32
    assert step[0, 1] == 0 and (codes[0, 1] == 0).all() and (back[0, 1] == 0.25).all()
    np.testing.assert_allclose(lo, maps.min(axis=(2, 3)))
    np.testing.assert_allclose(step, np.ptp(maps, axis=(2, 3)) / 255, rtol=1e-6)
    assert (np.abs(back - maps) <= step[..., None, None] / 2 * (1 + 1e-4) + 1e-7).all()
    assert (back[0, 0] < 0).all() and back[1, 2, 3, 2] == pytest.approx(750.0)
    assert codes.reshape(6, -1)[[0, 2, 3, 4, 5]].min(axis=1).tolist() == [0] * 5  # each map spans the codes
    assert codes.reshape(6, -1)[[0, 2, 3, 4, 5]].max(axis=1).tolist() == [255] * 5


def test_peak_windows_are_the_pixels_around_each_maximum_also_on_the_border() -> None:
    maps = np.zeros((1, 3, 6, 5), dtype=np.float32)
    maps[0, 0, 2, 3], maps[0, 1, 0, 0], maps[0, 2, 5, 4] = 1.0, 2.0, 3.0  # inside, corners
    maps += np.arange(30, dtype=np.float32).reshape(6, 5) * 1e-3  # every pixel different
    windows, at = peak_windows(maps)
    assert windows.shape == (1, 3, 3, 3) and windows.dtype == np.float16 and at.dtype == np.int16
    assert at[0].tolist() == [[2, 1], [0, 0], [2, 3]]  # x, y of each window's first pixel
    for j, (x, y) in enumerate(at[0]):
        np.testing.assert_array_equal(windows[0, j], maps[0, j, y : y + 3, x : x + 3].astype(np.float16))
    pasted = np.full_like(maps, -1.0)
    paste_windows(pasted, windows, at)
    assert (pasted != -1.0).sum() == 27
    for j, (x, y) in enumerate(at[0]):
        np.testing.assert_array_equal(pasted[0, j, y : y + 3, x : x + 3], windows[0, j])


def test_u8_shard_reads_back_within_half_a_step_and_decodes_to_the_float16_joints(tmp_path: Path) -> None:
    cache = TeacherTargetCache(tmp_path / "cache").open_or_create(provenance())
    records = make_folder(tmp_path, "a", 3)
    ys, xs = np.mgrid[0:8, 0:8]
    maps = np.zeros((3, K, 8, 8), dtype=np.float32)
    for j in range(K):  # peaks a hair right of and below a pixel: their neighbours differ by less than a step
        maps[:, j] = 0.9 * np.exp(-((xs - 2.0 - j % 4 - 0.02) ** 2 + (ys - 3.0 - j % 3 - 0.01) ** 2) / 8)
    maps[0] += np.random.default_rng(0).normal(0, 0.002, size=(K, 8, 8))
    maps[1, 0] = -0.5  # constant and negative
    maps[2, 1] *= 400.0  # a tall peak
    _, joints, joints_image, maxvals = fake_outputs(3, 0)
    with cache.writer(compression="u8") as writer:
        writer.add(shard_batch(records, {}, maps, joints, joints_image, maxvals))
    with h5py.File(cache.path / cache.manifest().shards[0].name, "r") as f:
        assert f.attrs["format"] == "fpd-teacher-shard-2" and f["heatmaps"].dtype == np.uint8
        assert f["heatmaps_lo"].dtype == f["heatmaps_step"].dtype == np.float32 and f["heatmaps_lo"].shape == (3, K)
        step = f["heatmaps_step"][:]
    got = torch.stack([item["heatmaps"] for item in cache.dataset()])
    stored16 = maps.astype(np.float16).astype(np.float32)  # what inference hands the writer (shard_batch)
    assert (np.abs(got.numpy() - stored16) <= step[..., None, None] / 2 * (1 + 1e-4) + 1e-7).all()
    assert (got[1, 0] == -0.5).all() and float(got[2, 1].max()) == pytest.approx(360.0, rel=1e-3)
    codec = HeatmapCodec((32, 32), (8, 8))
    reference = codec.decode(torch.from_numpy(stored16))[0]
    torch.testing.assert_close(codec.decode(got)[0], reference, rtol=0, atol=0)
    # Without the float16 peak windows the 8-bit codes alone would move these joints' quarter-pixel step.
    codes_only = torch.from_numpy(decode_u8(*encode_u8(stored16)))
    assert not torch.equal(codec.decode(codes_only)[0], reference)


def test_one_cache_holds_float16_and_u8_shards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = TeacherTargetCache(tmp_path / "cache").open_or_create(provenance())
    old = make_folder(tmp_path, "a", 3)
    written_old = fill(cache, old, seed=1, compression="lzf")
    new = make_folder(tmp_path, "b", 2, seed=1)
    written_new = fill(cache, [*old, *new], seed=2)  # the default, 8-bit
    formats = []
    for entry in cache.manifest().shards:
        with h5py.File(cache.path / entry.name, "r") as f:
            formats.append((f.attrs["format"], f.attrs["compression"], f["heatmaps"].dtype))
    assert formats == [("fpd-teacher-shard-1", "lzf", np.float16), ("fpd-teacher-shard-2", DEFAULT_COMPRESSION,
                                                                     np.uint8)]  # fmt: skip
    assert cache.verify().ok
    data = cache.dataset()
    assert [r.key for r in cached_records(data.index)] == [r.key for r in [*old, *new]]
    got = np.stack([data[i]["heatmaps"].numpy() for i in range(5)])
    np.testing.assert_allclose(got[:3], written_old, atol=2.0**-12, rtol=0)  # float16
    np.testing.assert_allclose(got[3:], written_new, atol=U8_ATOL, rtol=0)
    assert not np.allclose(got[3:], written_new, atol=2.0**-12, rtol=0)  # really 8-bit

    # The commands that read shards work on both kinds.
    assert main(["cache", "verify", str(cache.path)]) == 0
    capsys.readouterr()
    assert main(["cache", "inspect", str(cache.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["per_source"] == {"folder/a": 3, "folder/b": 2}
    assert main(["cache", "render", str(cache.path), "--out", str(tmp_path / "render"), "--n", "5"]) == 0
    assert len(list((tmp_path / "render").glob("*.png"))) == 5
    assert main(["cache", "repair", str(cache.path)]) == 0


def test_an_old_float16_cache_reads_verifies_and_is_extended_with_the_default(tmp_path: Path) -> None:
    path = tmp_path / "old"
    shutil.copytree(FORMAT1_CACHE, path)
    cache = TeacherTargetCache(path).open_or_create(provenance())  # the same teacher: no mismatch
    assert cache.verify().ok and main(["cache", "verify", str(path)]) == 0
    data = cache.dataset()
    got = np.stack([data[i]["heatmaps"].numpy() for i in range(len(data))])
    np.testing.assert_allclose(got, fake_outputs(3, 0)[0], atol=2.0**-12, rtol=0)
    assert [r.image for r in cached_records(data.index)] == ["img0.png", "img1.png", "img2.png"]
    written = fill(cache, make_folder(tmp_path, "new", 2, seed=4), seed=5)  # appended in the default format
    data = cache.dataset()
    assert cache.verify().ok and len(data) == 5
    np.testing.assert_allclose(data[0]["heatmaps"].numpy(), got[0], atol=0, rtol=0)
    np.testing.assert_allclose(data[4]["heatmaps"].numpy(), written[1], atol=U8_ATOL, rtol=0)
    with h5py.File(path / cache.manifest().shards[1].name, "r") as f:
        assert f.attrs["format"] == "fpd-teacher-shard-2"


def test_structure_check_flags_u8_shards_missing_their_scale_or_labelled_format_1(tmp_path: Path) -> None:
    cache = TeacherTargetCache(tmp_path / "cache").open_or_create(provenance())
    fill(cache, make_folder(tmp_path, "a", 2), compression="u8")
    shard = cache.path / cache.manifest().shards[0].name
    assert check_structure(shard, provenance(), 2) == []
    no_step, as_format1, unknown = (tmp_path / name for name in ("no_step.h5", "as_format1.h5", "unknown.h5"))
    for copy in (no_step, as_format1, unknown):
        shutil.copyfile(shard, copy)
    with h5py.File(no_step, "r+") as f:
        del f["heatmaps_step"]
    with h5py.File(as_format1, "r+") as f:
        f.attrs["format"] = "fpd-teacher-shard-1"  # what an 8-bit shard would look like to format-1 code
    with h5py.File(unknown, "r+") as f:
        f.attrs["format"] = "fpd-teacher-shard-9"
    assert check_structure(no_step, provenance(), 2) == ["dataset 'heatmaps_step' is missing"]
    assert check_structure(as_format1, provenance(), 2) == [
        "dataset 'heatmaps' is uint8, expected float16 in format 'fpd-teacher-shard-1'"
    ]
    assert "format attribute is 'fpd-teacher-shard-9'" in check_structure(unknown, provenance(), 2)[0]
    with pytest.raises(OSError, match="not a teacher cache shard"):
        read_columns(unknown)
