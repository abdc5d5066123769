"""The teacher cache never serves the wrong heatmaps: keys from resolved roots, the teacher checked at training,
stale crops and edited images re-inferred (``fpd infer``) or left out (training)."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.joints import MPII
from models.presets import get_preset
from pipeline.data.sources import SourceSpec, load_sources
from pipeline.teacher.discovery import summarise
from pipeline.teacher.inference import teacher_provenance
from pipeline.teacher.plan import plan_inference
from pipeline.teacher.records import cached_records
from pipeline.training.config import ConfigError, config_from_dict
from pipeline.training.sources import CacheTargets, cache_teacher, open_cache_targets, served_by_cache
from storage.cache import TeacherTargetCache
from storage.hashing import sha256_file
from tests.storage.test_cache import U8_ATOL, fill, make_folder, provenance


def test_two_folders_of_one_name_keep_their_own_heatmaps(tmp_path: Path) -> None:
    cache = TeacherTargetCache(tmp_path / "cache").open_or_create(provenance())
    cam1 = make_folder(tmp_path / "cam1", "frames", 3, seed=0)
    cam2 = make_folder(tmp_path / "cam2", "frames", 3, seed=1)
    assert cam1[0].source == cam2[0].source == "folder/frames" and cam1[0].image == cam2[0].image
    heatmaps1 = fill(cache, cam1, seed=10)
    heatmaps2 = fill(cache, cam2, seed=20)  # before: the same keys, so cam2 silently superseded cam1
    assert len(cache.dataset()) == 6 and not cache.manifest().superseded
    assert plan_inference([*cam1, *cam2], cache).records == ()  # a rerun infers nothing and flips nothing
    roots = [str((tmp_path / cam / "frames").resolve()) for cam in ("cam1", "cam2")]
    assert cache.inspect().per_source == {f"folder/frames ({roots[0]})": 3, f"folder/frames ({roots[1]})": 3}

    targets = CacheTargets(cache.dataset())
    for folder, written in ((tmp_path / "cam1" / "frames", heatmaps1), (tmp_path / "cam2" / "frames", heatmaps2)):
        records = targets.records_of_source(str(folder))
        assert [r.image for r in records] == ["img0.png", "img1.png", "img2.png"]
        assert {r.root for r in records} == {folder.resolve()}
        got = np.stack([targets(r).heatmaps for r in records])
        np.testing.assert_allclose(got, written, atol=U8_ATOL, rtol=0)
    with pytest.raises(ConfigError, match="'folder/frames' names 2 folders") as err:
        targets.records_of_source("folder/frames")
    assert str((tmp_path / "cam1" / "frames").resolve()) in str(err.value)


def test_sources_of_one_name_get_unique_labels_and_a_repeated_source_is_read_once(tmp_path: Path) -> None:
    make_folder(tmp_path / "cam1", "frames", 2)
    make_folder(tmp_path / "cam2", "frames", 2, seed=1)
    twice = SourceSpec("folder", tmp_path / "cam1" / ".." / "cam1" / "frames")
    specs = [SourceSpec("folder", tmp_path / "cam1" / "frames"), SourceSpec("folder", tmp_path / "cam2" / "frames"),
             twice]  # fmt: skip
    loaded = load_sources(specs, 1.0)
    assert [s.display for s in loaded] == ["folder/cam1/frames", "folder/cam2/frames"]
    assert [s.name for s in loaded] == ["folder/frames", "folder/frames"]
    discovery = summarise(loaded, plan_inference([r for s in loaded for r in s.records],
                                                 TeacherTargetCache(tmp_path / "c").open_or_create(provenance())))
    assert [s.source for s in discovery.sources] == ["folder/cam1/frames", "folder/cam2/frames"]
    assert [s.new_samples for s in discovery.sources] == [2, 2]  # counted per folder, not merged by name
    assert discovery.unlabeled_sources == tuple(str((tmp_path / c / "frames").resolve()) for c in ("cam1", "cam2"))


def test_a_moved_box_is_inferred_again_and_supersedes_the_old_crop(tmp_path: Path) -> None:
    cache = TeacherTargetCache(tmp_path / "cache").open_or_create(provenance())
    records = make_folder(tmp_path, "a", 4)
    fill(cache, records)
    moved = replace(records[1], center=(13.5, 9.0), scale=(0.12, 0.1))
    current = [records[0], moved, *records[2:]]
    plan = plan_inference(current, cache)
    assert [r.key for r in plan.records] == [moved.key] and plan.moved == (moved.key,) and plan.edited == ()
    assert summarise(load_sources([SourceSpec("folder", tmp_path / "a")], 1.0), plan).sources[0].moved == 1
    fill(cache, current, seed=3)
    live = {r.key: r for r in cached_records(cache.dataset().index)}
    assert len(live) == 4 and live[moved.key].center == (13.5, 9.0) and live[moved.key].scale == (0.12, 0.1)
    assert plan_inference(current, cache).records == ()


def test_training_leaves_out_edited_images_and_moved_boxes_with_one_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = TeacherTargetCache(tmp_path / "cache").open_or_create(provenance())
    records = make_folder(tmp_path, "a", 5)
    fill(cache, records)
    Image.new("RGB", (24, 20), (255, 0, 0)).save(records[2].path)
    os.utime(records[2].path, ns=(1, 1))
    moved = replace(records[3], center=(11.0, 10.0))
    current = [records[0], records[1], records[2], moved, records[4]]
    with caplog.at_level(logging.WARNING, logger="pipeline.training.sources"):
        kept = served_by_cache(current, CacheTargets(cache.dataset()))
    assert [r.image for r in kept] == ["img0.png", "img1.png", "img4.png"]
    message = caplog.text
    assert "2 of 5 training records" in message and "fpd infer" in message
    assert f"1 image edited since (first: {records[2].path})" in message
    assert f"1 person box moved since (first: {moved.path})" in message


def _recipe(tmp_path: Path, cache_dir: Path, **teacher: object) -> object:
    return config_from_dict({
        "student_preset": "tiny_student_mpii", "output_dir": str(tmp_path / "run"), "loss": {"alpha": 0.5},
        "data": {"labelled": [{"kind": "mpii", "root": str(tmp_path), "split": "train"}],
                 "teacher_cache": str(cache_dir)}, **teacher,
    })  # fmt: skip


def test_training_refuses_a_cache_of_another_teacher_naming_each_difference(tmp_path: Path) -> None:
    ours, other = tmp_path / "teacher.pt", tmp_path / "other.pt"
    ours.write_bytes(b"teacher weights")
    other.write_bytes(b"other weights")
    cache_dir = tmp_path / "cache"
    TeacherTargetCache(cache_dir).open_or_create(teacher_provenance(get_preset("tiny_teacher_mpii"), sha256_file(ours)))

    same = _recipe(tmp_path, cache_dir, teacher_preset="tiny_teacher_mpii", teacher_checkpoint=str(ours))
    assert len(open_cache_targets(same, MPII).dataset) == 0  # the recipe's teacher: accepted
    assert cache_teacher(same) == {"cache": str(cache_dir), "preset": "tiny_teacher_mpii",
                                   "checkpoint_sha256": sha256_file(ours), "flip_test": True}  # fmt: skip

    with pytest.raises(ConfigError, match="checkpoint_sha256") as err:
        open_cache_targets(_recipe(tmp_path, cache_dir, teacher_checkpoint=str(other)), MPII)
    assert str(cache_dir) in str(err.value) and "teacher_preset" not in str(err.value).split("(cache != recipe):")[1]
    with pytest.raises(ConfigError) as err:
        open_cache_targets(_recipe(tmp_path, cache_dir, teacher_preset="hg8_256"), MPII)
    assert "teacher_preset: 'tiny_teacher_mpii' != 'hg8_256'" in str(err.value) and "input_size" in str(err.value)
    with pytest.raises(ConfigError, match=f"teacher_checkpoint: no file {tmp_path / 'gone.pt'}"):
        open_cache_targets(_recipe(tmp_path, cache_dir, teacher_checkpoint=str(tmp_path / "gone.pt")), MPII)
    with pytest.raises(ConfigError, match="teacher_preset: unknown preset 'nope'"):
        open_cache_targets(_recipe(tmp_path, cache_dir, teacher_preset="nope"), MPII)
    # A recipe naming no teacher trains on the cache's, and its record says which one that is.
    assert cache_teacher(_recipe(tmp_path, cache_dir))["checkpoint_sha256"] == sha256_file(ours)
    assert MPII.names == tuple(TeacherTargetCache(cache_dir).provenance.joint_names)


def test_skipped_inputs_reach_the_log_the_report_and_run_json(tmp_path: Path) -> None:
    from pipeline.data.sources import LoadedSource
    from pipeline.reporting import cache_report, run_summary
    from pipeline.teacher.plan import InferencePlan
    from pipeline.teacher.shards import ShardReport

    records = make_folder(tmp_path, "street", 2)
    bad = ("bad\\xff.jpg", "file name is not valid UTF-8")
    loaded = [LoadedSource("folder/street", records, [bad])]
    discovery = summarise(loaded, InferencePlan(tuple(records)))
    assert "1 input(s) skipped (first: bad\\xff.jpg: file name is not valid UTF-8)" in discovery.log_lines()[0]
    shards = [ShardReport(0, 1, 1, 0, 1, (str(records[1].path),), 0.5)]
    cache_dir = tmp_path / "cache"
    TeacherTargetCache(cache_dir).open_or_create(provenance())
    markdown = cache_report(cache_dir, discovery, shards, None, 0)
    assert "## Inputs skipped (2)" in markdown
    assert "| folder/street | `bad\\xff.jpg` | file name is not valid UTF-8 |" in markdown
    assert f"`{records[1].path}` | image could not be decoded" in markdown
    assert run_summary(discovery, shards, [])["sources"][0]["skipped"] == (bad,)


def test_training_refuses_folder_targets_of_a_cache_made_before_exif_orientation(tmp_path: Path) -> None:
    from pipeline.training.sources import build_train_dataset

    records = make_folder(tmp_path, "street", 2)
    cache_dir = tmp_path / "cache"
    fill(TeacherTargetCache(cache_dir).open_or_create(provenance(exif_orientation="none")), records)
    config = config_from_dict({
        "student_preset": "tiny_student_mpii", "output_dir": str(tmp_path / "run"),
        "loss": {"alpha": 1.0, "use_ground_truth": False},
        "data": {"labelled": [], "unlabeled": [str(tmp_path / "street")], "teacher_cache": str(cache_dir)},
    })  # fmt: skip
    with pytest.raises(ConfigError, match="EXIF orientation") as err:
        build_train_dataset(config, get_preset("tiny_student_mpii"))
    assert str(cache_dir) in str(err.value)
