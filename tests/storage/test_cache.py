"""Teacher target cache without a model: random heatmaps written and read back, incremental planning,
supersession, provenance refusal, locks, damage reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from models.joints import MPII
from pipeline.data.workers import worker_start_method
from pipeline.records import SampleRecord
from pipeline.teacher.plan import plan_inference
from pipeline.teacher.records import cached_records, shard_batch
from storage.cache import (
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    CacheLockedError,
    CacheMismatchError,
    CacheProvenance,
    DamagedShardWarning,
    TeacherTargetCache,
)

K, HM_W, HM_H = 16, 8, 8
U8_ATOL = 0.5 / 255 + 2.0**-12
"""How far the default 8-bit storage reads back from maps in [0, 1): half a code step (range / 510) from the
float16 values it codes, which are within 2**-12 of the written float32 ones."""


def provenance(**changes: object) -> CacheProvenance:
    fields = dict(
        teacher_preset="tiny_teacher_mpii", checkpoint_sha256="a" * 64, input_size=(32, 32), heatmap_size=(HM_W, HM_H),
        joint_set="mpii", joint_names=MPII.names, flip_pairs=MPII.flip_pairs,
    )  # fmt: skip
    fields.update(changes)
    return CacheProvenance(**fields)


def make_folder(root: Path, name: str, count: int, seed: int = 0) -> list[SampleRecord]:
    """``count`` tiny PNGs in ``root/name`` and one record per image (every third one labelled)."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True)
    records = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        labelled = i % 3 == 0
        records.append(
            SampleRecord(
                source=f"folder/{name}", root=folder, image=f"img{i}.png", center=(12.0, 10.0), scale=(0.1, 0.1),
                instance_id=f"img{i}.png#0", joints=rng.random((K, 2)).astype(np.float32) * 20 if labelled else None,
                visibility=np.ones(K, dtype=np.float32) if labelled else None,
            )
        )
    return records


def fake_outputs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    heatmaps = rng.random((n, K, HM_H, HM_W)).astype(np.float32)
    joints = rng.random((n, K, 2)).astype(np.float32) * HM_W
    return heatmaps, joints, joints * 4.0, heatmaps.max(axis=(2, 3))


def missing(cache: TeacherTargetCache, records: list[SampleRecord]) -> list[SampleRecord]:
    """The records the cache lacks (new key or changed image), as planning finds them."""
    return list(plan_inference(records, cache).records)


def fill(
    cache: TeacherTargetCache, records: list[SampleRecord], seed: int = 0, shard_size: int = 4,
    compression: str = DEFAULT_COMPRESSION,
) -> np.ndarray:  # fmt: skip
    """Infer-free write of what ``cache`` lacks of ``records``; returns the heatmaps written (N, K, H, W)."""
    plan = plan_inference(records, cache)
    todo = list(plan.records)
    outputs = fake_outputs(len(todo), seed)
    with cache.writer(shard_size=shard_size, compression=compression) as writer:
        for start in range(0, len(todo), 3):  # batches that do not align with shards
            writer.add(shard_batch(todo[start : start + 3], plan.states, *(o[start : start + 3] for o in outputs)))
    return outputs[0]


@pytest.fixture
def cache(tmp_path: Path) -> TeacherTargetCache:
    return TeacherTargetCache(tmp_path / "cache").open_or_create(provenance())


def test_round_trip_in_bounded_shards(tmp_path: Path, cache: TeacherTargetCache) -> None:
    records = make_folder(tmp_path, "a", 10)
    heatmaps = fill(cache, records)
    manifest = cache.manifest()
    assert [s.num_samples for s in manifest.shards] == [4, 4, 2]
    data = cache.dataset()
    assert len(data) == 10
    for i in range(10):
        item = data[i]
        assert item["heatmaps"].dtype == torch.float32 and item["heatmaps"].shape == (K, HM_H, HM_W)
        np.testing.assert_allclose(item["heatmaps"].numpy(), heatmaps[i], atol=U8_ATOL, rtol=0)
        assert item["image"] == f"img{i}.png" and item["root"] == str((tmp_path / "a").resolve())
        assert item["labelled"] == (i % 3 == 0)
        np.testing.assert_array_equal(data.heatmaps(i), item["heatmaps"].numpy())  # the training read, alone
    with pytest.raises(IndexError, match="out of range"):
        data.heatmaps(10)
    back = cached_records(data.index)
    assert [r.key for r in back] == [r.key for r in records]
    np.testing.assert_array_equal(back[3].joints, records[3].joints)
    assert back[1].joints is None and back[1].fingerprint and back[1].path.exists()
    # Provenance travels with every shard as attributes.
    with __import__("h5py").File(cache.path / manifest.shards[0].name, "r") as f:
        assert json.loads(f.attrs["provenance"])["checkpoint_sha256"] == "a" * 64
        assert f.attrs["format"] == "fpd-teacher-shard-2" and f.attrs["compression"] == DEFAULT_COMPRESSION
        assert f["heatmaps"].chunks == (1, K, HM_H, HM_W) and f["heatmaps"].dtype == np.uint8


def test_dataset_in_dataloader_workers(tmp_path: Path, cache: TeacherTargetCache) -> None:
    heatmaps = fill(cache, make_folder(tmp_path, "a", 6))
    data = cache.dataset()
    data[0]  # the parent opens a handle first: the pickled dataset the workers get must not carry it
    batches = list(DataLoader(data, batch_size=3, num_workers=2, multiprocessing_context=worker_start_method(2)))
    got = torch.cat([b["heatmaps"] for b in batches]).numpy()
    np.testing.assert_allclose(got, heatmaps, atol=U8_ATOL, rtol=0)
    assert batches[0]["joints"].shape == (3, K, 2) and batches[0]["source"] == ["folder/a"] * 3


def test_new_folder_costs_only_its_images(tmp_path: Path, cache: TeacherTargetCache) -> None:
    old = make_folder(tmp_path, "a", 5)
    fill(cache, old)
    new = make_folder(tmp_path, "b", 3, seed=1)
    everything = [*old, *new]
    todo = missing(cache, everything)
    assert [r.key for r in todo] == [r.key for r in new]
    fill(cache, everything, seed=1)
    assert len(cache.dataset()) == 8
    assert missing(cache, everything) == []


def test_edited_image_is_reinferred_and_superseded(tmp_path: Path, cache: TeacherTargetCache) -> None:
    records = make_folder(tmp_path, "a", 5)
    fill(cache, records)
    edited = records[2]
    Image.new("RGB", (20, 24), (255, 0, 0)).save(edited.path)
    os.utime(edited.path, ns=(1, 1))  # a distinct mtime even on coarse-clock filesystems
    todo = missing(cache, records)
    assert [r.key for r in todo] == [edited.key]
    new_heatmaps = fill(cache, records, seed=7)
    manifest = cache.manifest()
    first = manifest.shards[0].name
    assert manifest.superseded == {first: [2]}
    data = cache.dataset()
    assert len(data) == 5 and data.index.num_superseded == 1
    i = [r.key for r in cached_records(data.index)].index(edited.key)
    np.testing.assert_allclose(data[i]["heatmaps"].numpy(), new_heatmaps[0], atol=U8_ATOL, rtol=0)
    assert missing(cache, records) == []


def test_mismatched_provenance_is_refused_naming_differences(cache: TeacherTargetCache) -> None:
    other = provenance(checkpoint_sha256="b" * 64, input_size=(64, 64), flip_test=False)
    with pytest.raises(CacheMismatchError) as err:
        TeacherTargetCache(cache.path).open_or_create(other)
    message = str(err.value)
    assert "checkpoint_sha256" in message and "input_size: (32, 32) != (64, 64)" in message and "flip_test" in message
    assert len(err.value.differences) == 3
    # A later run of the same teacher (other time stamp and version) is the same cache.
    TeacherTargetCache(cache.path).open_or_create(provenance(created="later", package_version="9"))


def test_jpeg_decoding_is_part_of_the_identity_and_old_caches_read_as_drafted(
    tmp_path: Path, cache: TeacherTargetCache
) -> None:
    assert cache.provenance.draft_decode is False  # the default: targets of full decodes
    records = make_folder(tmp_path, "a", 2)
    fill(cache, records)
    assert cache.verify().ok and cache.dataset().provenance.draft_decode is False  # shards carry it too
    with pytest.raises(CacheMismatchError, match="draft_decode: False != True"):
        TeacherTargetCache(cache.path).open_or_create(provenance(draft_decode=True))
    # A cache written before the field existed was inferred from draft decodes (the old default): it reads so.
    manifest = json.loads((cache.path / "manifest.json").read_text())
    del manifest["provenance"]["draft_decode"]
    (cache.path / "manifest.json").write_text(json.dumps(manifest))
    assert TeacherTargetCache(cache.path).provenance.draft_decode is True
    with pytest.raises(CacheMismatchError, match="draft_decode: True != False"):
        TeacherTargetCache(cache.path).open_or_create(provenance())


def test_writer_slots_lock(cache: TeacherTargetCache) -> None:
    with cache.writer(shard_index=0, num_shards=2):
        with pytest.raises(CacheLockedError, match="slot 0/2"):
            TeacherTargetCache(cache.path).writer(shard_index=0, num_shards=2)
        with TeacherTargetCache(cache.path).writer(shard_index=1, num_shards=2):
            pass  # another slot of the same layout runs side by side
        with pytest.raises(CacheLockedError, match="overlap"):
            TeacherTargetCache(cache.path).writer(shard_index=0, num_shards=1)
    with cache.writer(shard_index=0, num_shards=1):
        pass  # released on exit


def test_verify_reports_damage_and_reading_skips_it(tmp_path: Path, cache: TeacherTargetCache) -> None:
    records = make_folder(tmp_path, "a", 12)
    fill(cache, records)
    shards = cache.manifest().shards
    assert cache.verify().ok
    truncated, corrupt, gone = (cache.path / s.name for s in shards)
    os.truncate(truncated, truncated.stat().st_size // 2)
    with open(corrupt, "r+b") as f:  # flip bytes inside the heatmap data, size unchanged
        f.seek(corrupt.stat().st_size - 600)
        f.write(b"\xff" * 64)
    os.chmod(gone, 0o644)
    gone.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in cache.path.iterdir()}
    report = cache.verify()
    assert {c.name: c.status for c in report.shards} == {
        truncated.name: "truncated", corrupt.name: "corrupt", gone.name: "missing"
    }
    assert not report.ok
    assert {p.name: p.stat().st_mtime_ns for p in cache.path.iterdir()} == before  # verify changed nothing
    with pytest.warns(DamagedShardWarning):  # planning sees the damage too
        fill(cache, make_folder(tmp_path, "b", 2, seed=3))
    with pytest.warns(DamagedShardWarning) as caught:
        data = cache.dataset()
    messages = " ".join(str(w.message) for w in caught)
    assert all(p.name in messages for p in (truncated, corrupt, gone))
    assert len(data) == 2 and data[1]["source"] == "folder/b"
    with pytest.warns(DamagedShardWarning):
        assert len(missing(cache, records)) == 12  # the damaged shards' samples are planned again


def test_leftovers_of_a_killed_writer(tmp_path: Path, cache: TeacherTargetCache) -> None:
    records = make_folder(tmp_path, "a", 4)
    fill(cache, records, shard_size=4)
    entry = cache.manifest().shards[0]
    # Simulate a crash after the rename but before the manifest update, plus a half-written temporary file.
    orphan = cache.path / ("shard-" + "f" * 32 + ".h5")
    os.rename(cache.path / entry.name, orphan)
    manifest_path = cache.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"] = []
    manifest_path.write_text(json.dumps(manifest))
    temp = cache.path / (".tmp-slot0of1-" + "0" * 32 + ".h5")
    temp.write_bytes(b"half a shard")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with TeacherTargetCache(cache.path).writer():
            pass
    assert not temp.exists()
    assert [s.name for s in cache.manifest().shards] == [orphan.name]  # adopted, not re-inferred
    assert missing(cache, records) == []


def test_writer_rejects_wrong_shapes_and_reports_background_failures(
    tmp_path: Path, cache: TeacherTargetCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = make_folder(tmp_path, "a", 2)
    heatmaps, joints, joints_image, maxvals = fake_outputs(2, 0)
    wrong = shard_batch(records, {}, heatmaps[:, :, :4], joints, joints_image, maxvals)
    with cache.writer(shard_size=1) as writer, pytest.raises(ValueError, match="expects"):
        writer.add(wrong)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("storage.cache.writer.write_shard", disk_full)
    writer = cache.writer(shard_size=1)
    writer.add(shard_batch(records[:1], {}, heatmaps[:1], joints[:1], joints_image[:1], maxvals[:1]))
    with pytest.raises(OSError, match="No space"):
        writer.close()
    monkeypatch.undo()
    assert not writer._lock.held and cache.manifest().shards == []
    with cache.writer():  # the slot was released despite the failure
        pass


@pytest.mark.parametrize("compression", list(COMPRESSIONS))
def test_every_compression_reads_back_within_its_precision(
    tmp_path: Path, cache: TeacherTargetCache, compression: str
) -> None:
    records = make_folder(tmp_path, "a", 2)
    outputs = fake_outputs(2, 0)
    with cache.writer(compression=compression) as writer:
        writer.add(shard_batch(records, {}, *outputs))
    spec = COMPRESSIONS[compression]
    with __import__("h5py").File(cache.path / cache.manifest().shards[0].name, "r") as f:
        assert f.attrs["compression"] == compression
        assert f["heatmaps"].dtype == (np.uint8 if spec.uint8 else np.float16)
    got = torch.stack([item["heatmaps"] for item in cache.dataset()]).numpy()
    # float16 rounds values below 1 by at most 2**-12; the "-q" options add at most half their quantum, the 8-bit
    # ones half a code step of each map's range.
    maps = outputs[0].astype(np.float16).astype(np.float32)
    step = np.ptp(maps, axis=(2, 3), keepdims=True) / 255 if spec.uint8 else 0.0
    error = np.abs(got - outputs[0])
    assert (error <= 2.0**-12 + spec.quantum / 2 + step / 2 * (1 + 1e-5)).all()
    assert error.max() > (2.0**-12 if spec.uint8 else 0.0)  # really quantised, not stored as float16


def test_slot_held_by_another_process_is_refused_until_it_dies(cache: TeacherTargetCache) -> None:
    lock = cache.path / "locks" / "slot-0-of-1.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CacheLockedError, match="another process is already writing slot 0/1"):
            cache.writer()
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock with the process
        holder.wait()
    with cache.writer():
        pass


def test_inspect_counts_and_empty_cache(tmp_path: Path, cache: TeacherTargetCache) -> None:
    empty = cache.inspect()
    assert empty.num_samples == 0 and empty.per_source == {} and np.isnan(empty.joint_confidence[0].mean)
    fill(cache, make_folder(tmp_path, "a", 5))
    summary = cache.inspect(lowest=2)
    assert summary.per_source == {"folder/a": 5} and (summary.labelled, summary.unlabeled) == (2, 3)
    maxvals = cache.dataset().index.numeric["maxvals"]
    assert summary.joint_confidence[0].mean == pytest.approx(float(maxvals[:, 0].mean()))
    assert [low["mean_maxval"] for low in summary.lowest_confidence] == pytest.approx(
        sorted(maxvals.mean(axis=1))[:2]
    )
    assert summary.disk_bytes == sum(s.size for s in cache.manifest().shards)
