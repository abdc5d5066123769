"""Student variants of a run: their losses, the teacher/student check, recipes keyed by their inputs, torchrun."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data.sources import LoadedSource, SourceSpec
from pipeline.records import SampleRecord
from pipeline.students import (
    check_teacher_and_student,
    run_variants,
    torchrun_command,
    variant_config,
    variant_loss,
    write_recipe,
)
from pipeline.teacher.discovery import Discovery, summarise
from pipeline.teacher.plan import InferencePlan
from pipeline.training.config import DataConfig, EvalConfig, TrainConfig, load_config

TEACHER = {"preset": "tiny_teacher_mpii", "checkpoint": "t.pth"}


def _discovery(*sources: str) -> Discovery:
    def record(source: str) -> SampleRecord:
        joints = np.zeros((16, 2), np.float32) if source.startswith("mpii") else None
        return SampleRecord(source, Path("/data"), f"{source}.jpg", (10.0, 10.0), (1.0, 1.0), "0", joints=joints)

    return summarise([LoadedSource(s, [record(s)], []) for s in sources], InferencePlan(()))


def _base() -> TrainConfig:
    return TrainConfig(student_preset="tiny_student_mpii", data=DataConfig(
        labelled=(SourceSpec("mpii", Path("data/mpii"), "train"),)), eval=EvalConfig(dataset=None), loss={"alpha": 0.0},
        device="cpu")  # fmt: skip


def _config(variant: str, discovery: Discovery, alpha: float = 0.6, students_dir: str = "out/students") -> TrainConfig:
    return variant_config(_base(), variant, alpha=alpha, use_ground_truth=True, discovery=discovery,
                          cache_dir="cache", teacher=TEACHER, students_dir=students_dir)  # fmt: skip


def test_variants_and_their_losses() -> None:
    assert run_variants(["fpd_labelled", "gt_only"]) == ("gt_only", "fpd_labelled", "fpd")
    assert run_variants([]) == ("fpd",)
    assert variant_loss("gt_only", 0.7, False) == (0.0, True, False)
    assert variant_loss("fpd_labelled", 0.7, False) == (0.7, False, False)
    assert variant_loss("fpd", 0.7, False) == (0.7, False, True)
    with pytest.raises(ValueError, match="unknown student variant"):
        variant_loss("teacher", 0.7, False)
    with pytest.raises(ValueError, match="unknown student variant"):
        run_variants(["teacher_only"])


def test_teacher_and_student_must_share_the_joint_set() -> None:
    assert check_teacher_and_student("tiny_teacher_mpii", "tiny_student_mpii", ["mpii"]).name == "tiny_teacher_mpii"
    with pytest.raises(ValueError, match="student tiny_student_coco coco"):
        check_teacher_and_student("tiny_teacher_mpii", "tiny_student_coco", ["mpii"])
    with pytest.raises(ValueError, match="labelled data is"):
        check_teacher_and_student("tiny_teacher_coco", "tiny_student_coco", ["mpii"])


def test_student_recipes_resume_in_folders_keyed_by_their_inputs() -> None:
    before, after = _discovery("mpii/train", "folder/f"), _discovery("mpii/train", "folder/f", "folder/g")
    gt_only, fpd = _config("gt_only", before), _config("fpd", before)
    assert gt_only.data.teacher_cache is None and gt_only.loss.alpha == 0.0 and gt_only.data.unlabeled == ()
    assert fpd.data.teacher_cache == "cache" and fpd.loss.alpha == 0.6 and fpd.data.unlabeled == ("folder/f",)
    assert fpd.resume and gt_only.resume and fpd.eval.dataset is None
    assert fpd.data.labelled == _base().data.labelled and fpd.device == "cpu"  # the base recipe is kept
    assert Path(fpd.output_dir).parent == Path("out/students") and Path(fpd.output_dir).name.startswith("fpd-")
    # New unlabeled data gives the FPD student a fresh folder; the ground-truth student keeps its finished one.
    assert _config("gt_only", after).output_dir == gt_only.output_dir
    assert _config("fpd", after).data.unlabeled == ("folder/f", "folder/g")
    assert _config("fpd", after).output_dir != fpd.output_dir
    assert _config("fpd", before, alpha=0.3).output_dir != fpd.output_dir


def test_multi_gpu_students_run_under_torchrun_from_a_recipe_file(tmp_path: Path) -> None:
    config = _config("fpd", _discovery("mpii/train"), students_dir=str(tmp_path))
    recipe = write_recipe(config)
    assert load_config(recipe) == config  # torchrun's processes train exactly the flow's recipe
    command = torchrun_command(recipe, 4)
    assert "--nproc_per_node=4" in command and command[-4:] == ["-m", "pipeline.training.loop", "--config", str(recipe)]
