"""Cache-side faults end in one clear error and lose no committed sample: a full disk while writing, a read-only
folder, a damaged manifest of every kind, and repair of damaged shards (after re-inference, refused, forced,
interrupted) or of the manifest itself. Mounts need root; those tests skip elsewhere."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.records import SampleRecord
from pipeline.teacher.plan import plan_inference
from pipeline.teacher.records import cached_records, shard_batch
from storage.cache import CacheWriteError, DamagedShardWarning, ManifestError, RepairReport, TeacherTargetCache
from tests.storage.test_cache import fill, make_folder, missing, provenance


@contextlib.contextmanager
def mounted(path: Path, size: str) -> Iterator[Path]:
    """A fresh tmpfs of ``size`` at ``path``, unmounted on exit; skips when not root or mounting fails."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    """Change a mount made by :func:`mounted` (``ro``, ``rw``, ``size=...``)."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def snapshot(cache: TeacherTargetCache) -> dict[str, bytes]:
    """Bytes of every committed shard, to show that nothing committed was lost or changed."""
    return {s.name: (cache.path / s.name).read_bytes() for s in cache.manifest().shards}


def live_keys(cache: TeacherTargetCache) -> list[tuple[str, ...]]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sound cache reads without a DamagedShardWarning
        return [r.key for r in cached_records(cache.dataset().index)]


# -- full disk ----------------------------------------------------------------------------------------------------


def test_full_disk_ends_in_one_error_that_says_what_was_kept_and_resumes(tmp_path: Path) -> None:
    records = make_folder(tmp_path, "a", 60)
    with mounted(tmp_path / "disk", "1m") as disk:
        # 32x32 maps of 16 joints: 32 KiB of incompressible float16 noise per sample, so 1 MiB holds ~30.
        cache = TeacherTargetCache(disk / "cache").open_or_create(provenance(heatmap_size=(32, 32)))
        with pytest.raises(CacheWriteError) as err:
            fill_big(cache, records)
        message = str(err.value)
        assert str(cache.path) in message and "No space left on device" in message
        shards = cache.manifest().shards
        kept = sum(s.num_samples for s in shards)
        assert 0 < kept < 60 and f"the cache lists {len(shards)} shard(s) ({kept} samples)" in message
        assert "run the same command again: committed shards are kept" in message and "\n" not in message
        assert not list(cache.path.glob(".tmp-*")) and not list(cache.path.glob(".manifest.json.*"))
        assert cache.verify().ok and len(live_keys(cache)) == kept  # every committed sample reads back
        before = snapshot(cache)

        remount(disk, "size=8m")  # space freed: the same call resumes and infers only what is missing
        assert len(missing(cache, records)) == 60 - kept
        fill_big(cache, records)
        assert sorted(live_keys(cache)) == sorted(r.key for r in records)
        assert {name: (cache.path / name).read_bytes() for name in before} == before


def test_a_disk_already_full_refuses_to_create_a_cache_by_name(tmp_path: Path) -> None:
    with mounted(tmp_path / "disk", "64k") as disk:
        with pytest.raises(OSError), open(disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        with pytest.raises(CacheWriteError, match=f"teacher cache {disk / 'cache'}: .*No space left on device"):
            TeacherTargetCache(disk / "cache").open_or_create(provenance())
        assert not list((disk / "cache").glob(".manifest.json.*"))  # no half-written manifest left


def fill_big(cache: TeacherTargetCache, records: list[SampleRecord]) -> None:
    """``fill`` for a cache of 32x32 heatmaps (the helper of test_cache writes 8x8 ones), uncompressed."""
    plan = plan_inference(records, cache)
    todo = list(plan.records)
    rng = np.random.default_rng(0)
    heatmaps = rng.random((len(todo), 16, 32, 32)).astype(np.float32)
    joints = rng.random((len(todo), 16, 2)).astype(np.float32)
    with cache.writer(shard_size=4, compression="none") as writer:
        for start in range(0, len(todo), 3):
            part = slice(start, start + 3)
            writer.add(shard_batch(todo[part], plan.states, heatmaps[part], joints[part], joints[part] * 4,
                                   heatmaps[part].max(axis=(2, 3))))  # fmt: skip


# -- read-only folders --------------------------------------------------------------------------------------------


def test_read_only_cache_refuses_writers_by_path_and_still_reads(tmp_path: Path) -> None:
    records = make_folder(tmp_path, "a", 6)
    with mounted(tmp_path / "ro", "4m") as ro:
        cache = TeacherTargetCache(ro / "cache").open_or_create(provenance())
        fill(cache, records)
        before = snapshot(cache)
        remount(ro, "ro")
        try:
            for attempt in (lambda: cache.open_or_create(provenance()), cache.writer, cache.repair):
                with pytest.raises(CacheWriteError, match="Read-only file system") as err:
                    attempt()
                assert str(cache.path) in str(err.value) and "writable" in str(err.value)
            with pytest.raises(CacheWriteError, match=f"{ro / 'new' / 'cache'}.*Read-only file system"):
                TeacherTargetCache(ro / "new" / "cache").open_or_create(provenance())  # parent not writable
            assert cache.verify().ok and cache.inspect().num_samples == 6  # reading needs no write access
            assert sorted(live_keys(cache)) == sorted(r.key for r in records)
        finally:
            remount(ro, "rw")
        assert snapshot(cache) == before


# -- damaged manifests --------------------------------------------------------------------------------------------


def _entry(manifest: dict, **changes: object) -> dict:
    return {**manifest, "shards": [{**manifest["shards"][0], **changes}, *manifest["shards"][1:]]}


def _without(manifest: dict, key: str) -> dict:
    return {**manifest, "shards": [{k: v for k, v in manifest["shards"][0].items() if k != key}]}


DAMAGE = {
    "garbage bytes": (lambda text, m: b"\x89\xff\x00garbage\xfe", "not UTF-8"),
    "empty file": (lambda text, m: b"", "the file is empty"),
    "truncated JSON": (lambda text, m: text[: len(text) // 2].encode(), "not valid JSON"),
    "a list": (lambda text, m: json.dumps([m]).encode(), "expected a JSON object, found a list"),
    "no shards": (lambda text, m: json.dumps({k: v for k, v in m.items() if k != "shards"}).encode(), "'shards'"),
    "shards not a list": (lambda text, m: json.dumps({**m, "shards": {"a": 1}}).encode(), "'shards' must be a list"),
    "entry without sha256": (lambda text, m: json.dumps(_without(m, "sha256")).encode(), "missing 'sha256'"),
    "num_samples a string": (lambda text, m: json.dumps(_entry(m, num_samples="4")).encode(), "num_samples must"),
    "slot of wrong shape": (lambda text, m: json.dumps(_entry(m, slot="0/1")).encode(), "slot must be"),
    "bad sha256": (lambda text, m: json.dumps(_entry(m, sha256=5)).encode(), "sha256 must be"),
    "shard listed twice": (lambda text, m: json.dumps({**m, "shards": m["shards"] * 2}).encode(), "listed twice"),
    "name outside the folder": (lambda text, m: json.dumps(_entry(m, name="../x.h5")).encode(), "not a shard file"),
    "superseded row too far": (lambda text, m: json.dumps({**m, "superseded": {m["shards"][0]["name"]: [99]}}).encode(),
                               "beyond the shard"),
    "provenance field of the wrong type": (
        lambda text, m: json.dumps({**m, "provenance": {**m["provenance"], "input_size": "big"}}).encode(), "provenance"
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_every_reader_and_writer_names_a_damaged_manifest(tmp_path: Path, kind: str) -> None:
    cache = TeacherTargetCache(tmp_path / "cache").open_or_create(provenance())
    fill(cache, make_folder(tmp_path, "a", 6))
    before = snapshot(cache)
    path = cache.path / "manifest.json"
    damage, problem = DAMAGE[kind]
    path.write_bytes(damage(path.read_text(), json.loads(path.read_text())))
    opens = {
        "load": cache.manifest, "dataset": cache.dataset, "index": cache.index, "plan": cache.cached_samples,
        "verify": cache.verify, "inspect": cache.inspect, "writer": cache.writer, "repair": cache.repair,
        "open_or_create": lambda: cache.open_or_create(provenance()),
    }  # fmt: skip
    for name, call in opens.items():
        with pytest.raises(ManifestError) as err:
            call()
        message = str(err.value)
        assert str(path) in message and problem in message, name
        assert "--rebuild-manifest" in message and "\n" not in message
    assert isinstance(err.value, ValueError)  # so `fpd` prints it as one line, exit 2
    assert {name: (cache.path / name).read_bytes() for name in before} == before


# -- repair -------------------------------------------------------------------------------------------------------


def corrupt(path: Path) -> None:
    """Overwrite bytes inside the first sample's heatmap chunk: same size, other SHA-256, rows still readable."""
    with h5py.File(path, "r") as f:
        chunk = f["heatmaps"].id.get_chunk_info(0)
    with open(path, "r+b") as f:
        f.seek(chunk.byte_offset + chunk.size // 4)
        f.write(b"\xff" * (chunk.size // 2))


def damaged_cache(tmp_path: Path, how: str) -> tuple[TeacherTargetCache, list, str]:
    """A cache of 12 samples in 3 shards whose middle shard is damaged ``how``; returns it, the records, the name."""
    cache = TeacherTargetCache(tmp_path / "cache").open_or_create(provenance())
    records = make_folder(tmp_path, "a", 12)
    fill(cache, records)
    name = cache.manifest().shards[1].name
    if how == "corrupt":
        corrupt(cache.path / name)
    else:
        os.truncate(cache.path / name, (cache.path / name).stat().st_size // 2)
    with pytest.warns(DamagedShardWarning):
        assert not cache.verify().ok and len(missing(cache, records)) == 4  # planned again, as fpd infer would
    return cache, records, name


def test_repair_drops_a_damaged_shard_once_its_samples_were_inferred_again(tmp_path: Path) -> None:
    cache, records, name = damaged_cache(tmp_path, "corrupt")
    with pytest.warns(DamagedShardWarning):
        fill(cache, records, seed=5)  # fpd infer with the same sources: the damaged shard's 4 samples again
    assert not cache.verify().ok and name in cache.manifest().superseded  # the trap: verify keeps failing
    good = {s.name for s in cache.manifest().shards} - {name}
    before = {n: (cache.path / n).read_bytes() for n in good}

    report = cache.repair()
    assert isinstance(report, RepairReport) and report.ok
    assert [(s.name, s.status, s.not_reinferred, s.dropped) for s in report.shards] == [(name, "corrupt", 0, True)]
    assert cache.verify().ok and name not in cache.manifest().superseded
    assert (cache.path / "damaged" / name).exists() and not (cache.path / name).exists()  # moved, not deleted
    assert sorted(live_keys(cache)) == sorted(r.key for r in records)  # no warning, every sample once
    assert {n: (cache.path / n).read_bytes() for n in good} == before
    assert cache.repair().shards == ()  # nothing left to do


def test_repair_keeps_a_shard_whose_samples_are_not_all_inferred_again_unless_forced(tmp_path: Path) -> None:
    cache, records, name = damaged_cache(tmp_path, "corrupt")
    with pytest.warns(DamagedShardWarning):
        fill(cache, records[4:6])  # only 2 of the damaged shard's 4 samples inferred again
    manifest = (cache.path / "manifest.json").read_bytes()
    report = cache.repair()
    assert not report.ok and [(s.name, s.not_reinferred, s.dropped) for s in report.shards] == [(name, 2, False)]
    assert (cache.path / "manifest.json").read_bytes() == manifest and (cache.path / name).exists()

    forced = cache.repair(force=True)
    assert forced.ok and forced.dropped[0].name == name and cache.verify().ok
    assert sorted(r.key for r in missing(cache, records)) == sorted(r.key for r in records[6:8])  # simply missing
    fill(cache, records)
    assert sorted(live_keys(cache)) == sorted(r.key for r in records)


def test_an_unreadable_shard_is_judged_by_the_key_digests_of_its_manifest_entry(tmp_path: Path) -> None:
    cache, records, name = damaged_cache(tmp_path, "truncate")
    with pytest.warns(DamagedShardWarning):
        fill(cache, records, seed=5)
    dropped = cache.repair().shards
    assert [(s.name, s.status, s.not_reinferred, s.dropped) for s in dropped] == [(name, "truncated", 0, True)]
    assert cache.verify().ok and sorted(live_keys(cache)) == sorted(r.key for r in records)


def test_an_unreadable_shard_without_key_digests_needs_force(tmp_path: Path) -> None:
    cache, records, name = damaged_cache(tmp_path, "truncate")
    manifest = json.loads((cache.path / "manifest.json").read_text())
    for entry in manifest["shards"]:
        del entry["keys"]  # as a manifest written before key digests were listed
    (cache.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(DamagedShardWarning):
        fill(cache, records, seed=5)
    kept = cache.repair().shards
    assert [(s.name, s.status, s.not_reinferred, s.dropped) for s in kept] == [(name, "truncated", None, False)]
    assert cache.repair(force=True).ok and cache.verify().ok
    assert sorted(live_keys(cache)) == sorted(r.key for r in records)


def test_repair_interrupted_after_moving_the_file_finishes_on_the_next_run(tmp_path: Path) -> None:
    cache, records, name = damaged_cache(tmp_path, "corrupt")
    with pytest.warns(DamagedShardWarning):
        fill(cache, records, seed=5)
    (cache.path / "damaged").mkdir()
    os.replace(cache.path / name, cache.path / "damaged" / name)  # as a crash before the manifest update leaves it
    report = cache.repair()
    assert [(s.status, s.not_reinferred, s.dropped) for s in report.shards] == [("missing", 0, True)]
    assert cache.verify().ok and (cache.path / "damaged" / name).exists()


def test_rebuild_manifest_lists_the_shards_again_with_their_supersession(tmp_path: Path) -> None:
    cache = TeacherTargetCache(tmp_path / "cache").open_or_create(provenance())
    records = make_folder(tmp_path, "a", 10)
    fill(cache, records)
    edited = records[2]
    edited.path.write_bytes((tmp_path / "a" / "img7.png").read_bytes())
    os.utime(edited.path, ns=(1, 1))
    fill(cache, records, seed=7)  # the edited image's new record supersedes the old one
    old = cache.manifest()
    heatmaps = {k: cache.dataset()[i]["heatmaps"].numpy() for i, k in enumerate(live_keys(cache))}
    (cache.path / "manifest.json").write_bytes(b"{ half a manif")
    (cache.path / ("shard-" + "0" * 32 + ".h5")).write_bytes(b"not hdf5")

    report = TeacherTargetCache(cache.path).rebuild_manifest()
    new = cache.manifest()
    assert [s.name for s in new.shards] == [s.name for s in old.shards] and new.superseded == old.superseded
    assert [(s.sha256, s.num_samples, s.slot) for s in new.shards] == [(s.sha256, s.num_samples, s.slot)
                                                                        for s in old.shards]  # fmt: skip
    assert new.provenance == old.provenance and cache.verify().ok
    assert Path(report.backup).read_bytes() == b"{ half a manif"
    assert [n for n, _ in report.set_aside] == ["shard-" + "0" * 32 + ".h5"]
    data = cache.dataset()
    assert {k: data[i]["heatmaps"].numpy() for i, k in enumerate(live_keys(cache))}.keys() == heatmaps.keys()
    for i, key in enumerate(live_keys(cache)):
        np.testing.assert_array_equal(data[i]["heatmaps"].numpy(), heatmaps[key])
    with pytest.raises(ValueError, match="the manifest is readable, nothing to rebuild"):
        cache.rebuild_manifest()
