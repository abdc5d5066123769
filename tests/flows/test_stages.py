"""The plain stage functions behind distill-flow: discovery counts, variants, shard environments, student recipes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flows import sharding, stages
from flows.params import DistillParams
from pipeline.data.records import SampleRecord


def _record(source: str, image: str, instance: str = "0") -> SampleRecord:
    return SampleRecord(source, Path("/data"), image, (10.0, 10.0), (1.0, 1.0), f"{image}#{instance}",
                        joints=np.zeros((16, 2), np.float32) if source.startswith("mpii") else None)  # fmt: skip


def _params(**changes: object) -> DistillParams:
    base = {
        "teacher": {"preset": "tiny_teacher_mpii", "checkpoint": "t.pth"},
        "student": {"preset": "tiny_student_mpii"},
        "labelled": [{"dataset": "mpii", "root": "data/mpii"}],
        "cache_dir": "cache",
        "output_dir": "out",
        "device": {"device": "cpu"},
    }
    return DistillParams.model_validate(base | changes)


def test_summarise_counts_images_samples_and_new_folders() -> None:
    records = [_record("mpii/train", "a.jpg", "0"), _record("mpii/train", "a.jpg", "1"), _record("mpii/train", "b.jpg")]
    records += [_record("folder/old", "x.jpg"), _record("folder/new", "y.jpg"), _record("folder/new", "z.jpg")]
    missing = [records[1], records[4], records[5]]
    discovery = stages.summarise(records, missing)
    by_source = {s.source: s for s in discovery.sources}
    assert [s.source for s in discovery.sources] == ["mpii/train", "folder/old", "folder/new"]
    assert (by_source["mpii/train"].images, by_source["mpii/train"].samples) == (2, 3)
    assert (by_source["mpii/train"].new_images, by_source["mpii/train"].new_samples) == (1, 1)
    assert by_source["folder/new"].new_folder and not by_source["folder/old"].new_folder
    assert not by_source["mpii/train"].new_folder  # a labelled split is never a "folder"
    assert discovery.new_samples == 3
    assert discovery.unlabeled_sources == ("folder/old", "folder/new")
    lines = discovery.log_lines()
    assert "folder/new (new folder): 2 images, 2 samples, 2 new images (2 samples) to infer" in lines
    assert lines[-1] == "total to infer: 3 samples"


def test_digest_changes_only_with_the_named_sources() -> None:
    before = stages.summarise([_record("mpii/train", "a.jpg"), _record("folder/f", "x.jpg")], [])
    after = stages.summarise(
        [_record("mpii/train", "a.jpg"), _record("folder/f", "x.jpg"), _record("folder/g", "y.jpg")], []
    )
    assert before.digest(("mpii/train",)) == after.digest(("mpii/train",))
    assert before.digest(("mpii/train", "folder/f")) == after.digest(("mpii/train", "folder/f"))
    assert after.digest(after.unlabeled_sources) != before.digest(before.unlabeled_sources)


def test_variants_and_their_losses() -> None:
    params = _params(alpha=0.7, use_ground_truth=False, baselines=["fpd_labelled", "gt_only"])
    assert stages.run_variants(params) == ("gt_only", "fpd_labelled", "fpd")
    assert stages.run_variants(_params()) == ("fpd",)
    assert stages.variant_loss(params, "gt_only") == (0.0, True, False)
    assert stages.variant_loss(params, "fpd_labelled") == (0.7, False, False)
    assert stages.variant_loss(params, "fpd") == (0.7, False, True)
    with pytest.raises(ValueError, match="unknown student variant"):
        stages.variant_loss(params, "teacher")


def test_teacher_and_student_must_share_the_joint_set() -> None:
    with pytest.raises(ValueError, match="student tiny_student_coco coco"):
        stages.teacher_preset(_params(student={"preset": "tiny_student_coco"}))
    with pytest.raises(ValueError, match="labelled data is"):
        stages.teacher_preset(_params(teacher={"preset": "tiny_teacher_coco", "checkpoint": "t"},
                                      student={"preset": "tiny_student_coco"}))  # fmt: skip


def test_shard_environment_deals_gpus_round_robin_and_splits_cpu_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "PATH": "/bin"}
    assert sharding.shard_environment(env, 0, 2)["CUDA_VISIBLE_DEVICES"] == "0,2"
    assert sharding.shard_environment(env, 1, 2)["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert sharding.shard_environment(env, 0, 1)["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert sharding.shard_environment({"CUDA_VISIBLE_DEVICES": "5"}, 1, 2)["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert sharding.shard_environment({}, 0, 4)["OMP_NUM_THREADS"] == "2"
    assert sharding.shard_environment({"OMP_NUM_THREADS": "3"}, 0, 4)["OMP_NUM_THREADS"] == "3"
    assert env == {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "PATH": "/bin"}  # the caller's mapping is not touched


def test_shard_report_round_trips_through_its_file(tmp_path: Path) -> None:
    params = _params(output_dir=str(tmp_path))
    report = sharding.ShardReport(1, 3, 5, 2, 1, ("/data/bad.jpg",), 0.5)
    stages.write_json(sharding.report_path(params, 1, 3), report.__dict__)
    assert sharding.read_shard_report(params, 1, 3) == report
    assert sharding.shard_parameters(params, 1, 3)["params"]["output_dir"] == str(tmp_path)


def test_student_recipes_resume_in_folders_keyed_by_their_inputs() -> None:
    from flows.students import student_config

    params = _params(baselines=["gt_only"], alpha=0.6)
    before = stages.summarise([_record("mpii/train", "a.jpg"), _record("folder/f", "x.jpg")], [])
    after = stages.summarise(
        [_record("mpii/train", "a.jpg"), _record("folder/f", "x.jpg"), _record("folder/g", "y.jpg")], []
    )
    gt_only, fpd = student_config(params, "gt_only", before), student_config(params, "fpd", before)
    assert gt_only.data.teacher_cache is None and gt_only.loss.alpha == 0.0 and gt_only.data.unlabeled == ()
    assert fpd.data.teacher_cache == "cache" and fpd.loss.alpha == 0.6 and fpd.data.unlabeled == ("folder/f",)
    assert fpd.resume and gt_only.resume and fpd.eval.format is None
    assert Path(fpd.output_dir).parent == Path("out/students") and Path(fpd.output_dir).name.startswith("fpd-")
    # New unlabeled data gives the FPD student a fresh folder; the ground-truth student keeps its finished one.
    assert student_config(params, "gt_only", after).output_dir == gt_only.output_dir
    assert student_config(params, "fpd", after).data.unlabeled == ("folder/f", "folder/g")
    assert student_config(params, "fpd", after).output_dir != fpd.output_dir
    assert student_config(_params(alpha=0.3), "fpd", before).output_dir != fpd.output_dir


def test_a_failing_shard_process_raises_with_the_end_of_its_log(tmp_path: Path) -> None:
    params = _params(output_dir=str(tmp_path), teacher={"preset": "tiny_teacher_mpii", "checkpoint": "missing.pth"})
    with pytest.raises(RuntimeError, match=r"shard 1/2 exited 1 \(log .*shard-1-of-2.log\):\n(.|\n)*missing.pth"):
        sharding.run_shard_subprocess(params, 1, 2)
