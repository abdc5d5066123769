"""Student variants of a run: their order, starts and losses, the teacher/student check, recipes keyed by their
inputs, torchrun."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data.sources import LoadedSource, SourceSpec
from pipeline.records import SampleRecord
from pipeline.students import (
    StudentInit,
    StudentResult,
    check_teacher_and_student,
    run_variants,
    torchrun_command,
    variant_config,
    variant_init,
    variant_loss,
    write_recipe,
)
from pipeline.teacher.discovery import Discovery, summarise
from pipeline.teacher.plan import InferencePlan
from pipeline.training.config import DataConfig, EvalConfig, TrainConfig, load_config

TEACHER = {"preset": "tiny_teacher_mpii", "checkpoint": "t.pth"}
SCRATCH = StudentInit()


def _discovery(*sources: str) -> Discovery:
    def record(source: str) -> SampleRecord:
        joints = np.zeros((16, 2), np.float32) if source.startswith("mpii") else None
        root = Path("/data") / source.split("/")[1] if source.startswith("folder/") else Path("/data")
        return SampleRecord(source, root, f"{source}.jpg", (10.0, 10.0), (1.0, 1.0), "0", joints=joints)

    return summarise([LoadedSource(s, [record(s)], []) for s in sources], InferencePlan(()))


def _root(folder: str) -> str:
    """Unlabeled folders reach training as resolved paths."""
    return str(Path("/data", folder).resolve())


def _base() -> TrainConfig:
    return TrainConfig(student_preset="tiny_student_mpii", data=DataConfig(
        labelled=(SourceSpec("mpii", Path("data/mpii"), "train"),)), eval=EvalConfig(dataset=None), loss={"alpha": 0.0},
        device="cpu")  # fmt: skip


def _config(
    variant: str,
    discovery: Discovery,
    alpha: float = 0.6,
    students_dir: str = "out/students",
    init: StudentInit = SCRATCH,
) -> TrainConfig:
    return variant_config(_base(), variant, init=init, alpha=alpha, use_ground_truth=True, discovery=discovery,
                          cache_dir="cache", teacher=TEACHER, students_dir=students_dir)  # fmt: skip


def _gt_student(weights: str = "out/students/gt_only-1/weights.pt") -> StudentResult:
    return StudentResult("gt_only", "tiny_student_mpii", weights, str(Path(weights).parent), "scratch")


def _init(variant: str, fpd_init: str = "gt_student", **given: object) -> StudentInit:
    args = {"gt_checkpoint": None, "backbone": None, "gt_student": _gt_student()} | given
    return variant_init(variant, fpd_init=fpd_init, **args)


def test_gt_only_trains_first_when_the_fpd_students_start_from_it() -> None:
    both = ("gt_only", "fpd_labelled", "fpd")
    assert run_variants(["fpd_labelled", "gt_only"], fpd_init="gt_student", gt_checkpoint=None) == both
    # Not requested, yet trained (first) for the FPD students to fine-tune: FPD's recipe by default.
    assert run_variants([], fpd_init="gt_student", gt_checkpoint=None) == ("gt_only", "fpd")
    assert run_variants(["fpd_labelled"], fpd_init="gt_student", gt_checkpoint=None) == both
    # A ground-truth student of the user's, or FPD* from scratch: gt_only only when requested.
    assert run_variants([], fpd_init="gt_student", gt_checkpoint="gt.pth") == ("fpd",)
    assert run_variants([], fpd_init="scratch", gt_checkpoint=None) == ("fpd",)
    assert run_variants(["gt_only"], fpd_init="gt_student", gt_checkpoint="gt.pth") == ("gt_only", "fpd")
    with pytest.raises(ValueError, match="unknown student variant"):
        run_variants(["teacher_only"], fpd_init="gt_student", gt_checkpoint=None)


def test_each_variant_starts_where_fpd_init_says() -> None:
    gt = _gt_student().weights
    # Default: the FPD students fine-tune the run's gt_only; gt_only starts from ImageNet weights or scratch.
    assert _init("fpd") == _init("fpd_labelled") == StudentInit(weights=gt, description="gt_only student")
    assert _init("gt_only") == StudentInit()
    assert _init("gt_only", backbone="w/hrnet_w32-36af842e.pth") == StudentInit(
        backbone="w/hrnet_w32-36af842e.pth", description="imagenet hrnet_w32-36af842e.pth"
    )
    # A user's ground-truth student wins over the run's gt_only (FPD's TRAIN.CHECKPOINT); it is not a backbone.
    named = _init("fpd", gt_checkpoint="w/best.pth", backbone="w/imagenet.pth")
    assert named == StudentInit(weights="w/best.pth", description="checkpoint best.pth")
    assert _init("fpd", gt_checkpoint="w/best.pth", gt_student=None).weights == "w/best.pth"
    # FPD*: the FPD students start as gt_only does, never from its weights.
    assert _init("fpd", "scratch") == StudentInit()
    assert _init("fpd", "scratch", backbone="w/r50.pth") == StudentInit(
        backbone="w/r50.pth", description="imagenet r50.pth"
    )
    with pytest.raises(ValueError, match="train it first"):
        _init("fpd", gt_student=None)
    with pytest.raises(ValueError, match="fpd_init gt_student"):
        _init("fpd", "scratch", gt_checkpoint="w/best.pth")
    with pytest.raises(ValueError, match="fpd_init 'gt_students'"):
        _init("fpd", "gt_students")


def test_the_start_is_in_the_recipe_and_its_folder_hash() -> None:
    discovery = _discovery("mpii/train", "folder/f")
    from_gt = _config("fpd", discovery, init=_init("fpd"))
    assert (from_gt.student_init, from_gt.student_backbone) == (_gt_student().weights, None)
    backbone = _config("gt_only", discovery, init=_init("gt_only", backbone="w/imagenet.pth"))
    assert (backbone.student_init, backbone.student_backbone) == (None, "w/imagenet.pth")
    # Another ground-truth student, a user's checkpoint, or scratch: each trains afresh in its own folder.
    folders = {
        from_gt.output_dir,
        _config(
            "fpd", discovery, init=_init("fpd", gt_student=_gt_student("out/students/gt_only-2/weights.pt"))
        ).output_dir,
        _config("fpd", discovery, init=_init("fpd", gt_checkpoint="w/best.pth")).output_dir,
        _config("fpd", discovery, init=_init("fpd", "scratch")).output_dir,
        _config("fpd", discovery, init=_init("fpd", "scratch", backbone="w/imagenet.pth")).output_dir,
    }
    assert len(folders) == 5
    assert _config("fpd", discovery, init=_init("fpd")).output_dir == from_gt.output_dir  # same start: same folder


def test_variant_losses() -> None:
    assert variant_loss("gt_only", 0.7, False) == (0.0, True, False)
    assert variant_loss("fpd_labelled", 0.7, False) == (0.7, False, False)
    assert variant_loss("fpd", 0.7, False) == (0.7, False, True)
    with pytest.raises(ValueError, match="unknown student variant"):
        variant_loss("teacher", 0.7, False)


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
    assert fpd.data.teacher_cache == "cache" and fpd.loss.alpha == 0.6 and fpd.data.unlabeled == (_root("f"),)
    assert fpd.resume and gt_only.resume and fpd.eval.dataset is None
    assert fpd.data.labelled == _base().data.labelled and fpd.device == "cpu"  # the base recipe is kept
    assert Path(fpd.output_dir).parent == Path("out/students") and Path(fpd.output_dir).name.startswith("fpd-")
    # New unlabeled data gives the FPD student a fresh folder; the ground-truth student keeps its finished one.
    assert _config("gt_only", after).output_dir == gt_only.output_dir
    assert _config("fpd", after).data.unlabeled == (_root("f"), _root("g"))
    assert _config("fpd", after).output_dir != fpd.output_dir
    assert _config("fpd", before, alpha=0.3).output_dir != fpd.output_dir


def test_multi_gpu_students_run_under_torchrun_from_a_recipe_file(tmp_path: Path) -> None:
    config = _config("fpd", _discovery("mpii/train"), students_dir=str(tmp_path))
    recipe = write_recipe(config)
    assert load_config(recipe) == config  # torchrun's processes train exactly the flow's recipe
    command = torchrun_command(recipe, 4)
    assert "--nproc_per_node=4" in command and command[-4:] == ["-m", "pipeline.training.loop", "--config", str(recipe)]
