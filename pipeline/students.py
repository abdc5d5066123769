"""The students of a distillation run: one training recipe per variant, trained in-process or under ``torchrun``.

A run trains the FPD student and, for the comparison table, optional baselines: ``gt_only`` (ground truth
alone, alpha 0) and ``fpd_labelled`` (FPD without the unlabeled folders). Each variant trains in its own folder,
named by a hash of its recipe and of the sizes of the sources it reads, with ``resume=True``: a retried task
continues from the last finished epoch, a re-run whose inputs did not change finds every epoch done and returns
at once, and a run with new data (a new unlabeled folder) starts a fresh folder instead of mixing old and new.

The FPD students fine-tune a ground-truth student, as FPD's ``fpd_train.py`` does (``TRAIN.CHECKPOINT``; FPD's
table: 89.040 PCKh from the 87.934 GT student, 87.598 from scratch): the run's own ``gt_only`` (trained first) or a
checkpoint the user names. Starting from scratch (FPD's "FPD*") is an explicit choice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
import yaml

from models.presets import ModelPreset, get_preset
from pipeline.runtime import resolve_device, set_torch_threads
from pipeline.teacher.discovery import Discovery
from pipeline.training.config import TrainConfig, config_from_dict, config_to_dict
from pipeline.training.loop import WEIGHTS_NAME, train

logger = logging.getLogger(__name__)

VARIANTS = ("gt_only", "fpd_labelled", "fpd")
"""Students a run can train, in table order: ground truth alone, FPD on labelled images, FPD + unlabeled folders."""

FpdInit = Literal["gt_student", "scratch"]
"""Where the FPD students start: a ground-truth student's weights (FPD's recipe) or no pose weights (FPD*)."""


@dataclass(frozen=True)
class StudentInit:
    """Where a student's training starts, as the recipe says it and as the table names it.

    Attributes:
        weights: pose weights of the student's preset (``TrainConfig.student_init``, loaded strictly).
        backbone: ImageNet weights (``TrainConfig.student_backbone``); exclusive with ``weights``.
        description: e.g. ``gt_only student``, ``checkpoint <file name>``, ``imagenet <file name>``, ``scratch``.
    """

    weights: str | None = None
    backbone: str | None = None
    description: str = "scratch"


@dataclass(frozen=True)
class StudentResult:
    """A trained student: ``weights`` loads strictly into ``models.create_from_preset(preset)``; ``init`` is the
    :attr:`StudentInit.description` of where its training started."""

    variant: str
    preset: str
    weights: str
    output_dir: str
    init: str


def check_teacher_and_student(teacher: str, student: str, datasets: Sequence[str]) -> ModelPreset:
    """The teacher's preset, checked against the student's and the data: one joint set, or the heatmaps mean nothing.

    Raises:
        ValueError: the teacher, the student and the labelled datasets do not share one joint set.
    """
    teacher_preset, student_preset = get_preset(teacher), get_preset(student)
    if teacher_preset.joint_set != student_preset.joint_set:
        raise ValueError(f"teacher {teacher} predicts {teacher_preset.joint_set} joints, student {student} "
                         f"{student_preset.joint_set}")  # fmt: skip
    if set(datasets) != {teacher_preset.joint_set}:
        raise ValueError(f"teacher {teacher} predicts {teacher_preset.joint_set} joints; labelled data is "
                         f"{sorted(set(datasets))}")  # fmt: skip
    return teacher_preset


def run_variants(baselines: Sequence[str], *, fpd_init: FpdInit, gt_checkpoint: str | None) -> tuple[str, ...]:
    """Students a run trains, in table (and training) order: the requested baselines and the FPD student.

    ``gt_only`` comes first, and is trained even when not requested, when the FPD students fine-tune from it
    (``fpd_init`` ``gt_student`` without a ``gt_checkpoint`` of the user's).
    """
    unknown = sorted(set(baselines) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown student variant(s) {unknown}; expected some of {VARIANTS[:2]}")
    wanted = {*baselines, "fpd"}
    if fpd_init == "gt_student" and gt_checkpoint is None:
        wanted.add("gt_only")
    return tuple(v for v in VARIANTS if v in wanted)


def variant_init(
    variant: str,
    *,
    fpd_init: FpdInit,
    gt_checkpoint: str | None,
    backbone: str | None,
    gt_student: StudentResult | None,
) -> StudentInit:
    """Where ``variant`` starts: the FPD students from a ground-truth student, the others without pose weights.

    Args:
        variant: one of :data:`VARIANTS`.
        fpd_init: ``gt_student`` (FPD's recipe) or ``scratch`` (FPD*: the FPD students start like ``gt_only``).
        gt_checkpoint: a ground-truth student of this preset the FPD students fine-tune from instead of the run's
            ``gt_only`` (only with ``gt_student``).
        backbone: ImageNet weights for a student that starts without pose weights (None: random initialisation).
        gt_student: the run's trained ``gt_only`` (needed by the FPD students without ``gt_checkpoint``).

    Raises:
        ValueError: unknown ``variant`` or ``fpd_init``, ``gt_checkpoint`` with ``scratch``, or an FPD student that
            needs ``gt_student`` before it was trained.
    """
    if variant not in VARIANTS or fpd_init not in get_args(FpdInit):
        raise ValueError(f"unknown student variant {variant!r} or fpd_init {fpd_init!r}")
    if fpd_init == "scratch" and gt_checkpoint is not None:
        raise ValueError("gt_checkpoint is where the FPD students start: give it with fpd_init gt_student")
    if variant == "gt_only" or fpd_init == "scratch":
        if backbone is None:
            return StudentInit()
        return StudentInit(backbone=backbone, description=f"imagenet {Path(backbone).name}")
    if gt_checkpoint is not None:
        return StudentInit(weights=gt_checkpoint, description=f"checkpoint {Path(gt_checkpoint).name}")
    if gt_student is None:
        raise ValueError(f"{variant} fine-tunes the gt_only student: train it first (run_variants puts it first)")
    return StudentInit(weights=gt_student.weights, description="gt_only student")


def variant_loss(variant: str, alpha: float, use_ground_truth: bool) -> tuple[float, bool, bool]:
    """``(alpha, use_ground_truth, with_unlabeled)`` of a student variant, given the run's FPD settings."""
    if variant == "gt_only":
        return 0.0, True, False
    if variant == "fpd_labelled":
        return alpha, use_ground_truth, False
    if variant == "fpd":
        return alpha, use_ground_truth, True
    raise ValueError(f"unknown student variant {variant!r}; expected one of {VARIANTS}")


def variant_config(
    base: TrainConfig,
    variant: str,
    *,
    init: StudentInit,
    alpha: float,
    use_ground_truth: bool,
    discovery: Discovery,
    cache_dir: str,
    teacher: Mapping[str, object],
    students_dir: str | Path,
) -> TrainConfig:
    """The recipe of ``variant``: ``base`` (labelled data, schedule, device) with its start, loss, data and folder.

    Args:
        base: the run's recipe without teacher (its ``data.labelled``, ``optim``, ``device``... are kept).
        variant: one of :data:`VARIANTS`.
        init: where it starts (:func:`variant_init`); part of the folder hash, as the whole recipe is, so that
            another ground-truth student, or none, trains afresh.
        alpha, use_ground_truth: the run's FPD loss settings (``gt_only`` overrides them).
        discovery: what the run found; the FPD student trains on its unlabeled folders.
        cache_dir: the teacher cache.
        teacher: the teacher's identity, part of the folder hash (a new teacher trains afresh).
        students_dir: the variant's folder is ``<students_dir>/<variant>-<hash>``.
    """
    alpha, use_ground_truth, with_unlabeled = variant_loss(variant, alpha, use_ground_truth)
    unlabeled = discovery.unlabeled_sources if with_unlabeled else ()
    needs_cache = alpha > 0 or bool(unlabeled) or not use_ground_truth
    raw = config_to_dict(base) | {"student_init": init.weights, "student_backbone": init.backbone}
    raw["loss"] = {**raw["loss"], "alpha": alpha, "use_ground_truth": use_ground_truth}
    raw["data"] = {**raw["data"], "unlabeled": list(unlabeled), "teacher_cache": cache_dir if needs_cache else None}
    if needs_cache:  # training then checks that the cache holds this teacher's targets
        raw |= {"teacher_preset": teacher["preset"], "teacher_checkpoint": teacher["checkpoint"]}
    raw["resume"] = True
    labelled = [f"{s['kind']}/{s['split']}" for s in raw["data"]["labelled"]]
    recipe = json.dumps({"config": raw, "teacher": dict(teacher) if needs_cache else None,
                         "data": discovery.digest([*labelled, *unlabeled])}, sort_keys=True, default=str)  # fmt: skip
    raw["output_dir"] = str(Path(students_dir) / f"{variant}-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}")
    return config_from_dict(raw)


def train_variant(config: TrainConfig, variant: str, *, init: str, torch_threads: int | None = None) -> StudentResult:
    """Train (or resume, or find finished) one student; ``torchrun`` over every visible GPU when there are several.

    ``init`` describes where ``config`` starts (:attr:`StudentInit.description`), for the log and the result.
    """
    recipe = write_recipe(config)  # also the file to hand to a multi-node torchrun launch
    on_cuda = resolve_device(config.device).type == "cuda"
    gpus = torch.cuda.device_count() if on_cuda else 0
    logger.info("training student %s (start: %s) from %s (%s)", variant, init, recipe,
                f"torchrun on {gpus} GPUs" if gpus > 1 else "in-process")  # fmt: skip
    if gpus > 1:
        subprocess.run(torchrun_command(recipe, gpus), check=True)
        weights = Path(config.output_dir) / WEIGHTS_NAME
    else:
        set_torch_threads(torch_threads)
        weights = train(config).weights
    return StudentResult(variant, config.student_preset, str(weights), config.output_dir, init)


def write_recipe(config: TrainConfig) -> Path:
    """Write ``config`` as ``<output_dir>/recipe.yaml`` (what ``fpd train --config`` and torchrun read)."""
    recipe = Path(config.output_dir) / "recipe.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return recipe


def torchrun_command(recipe: Path, gpus: int) -> list[str]:
    """One node, ``gpus`` processes; for several nodes run ``torchrun --nnodes ... -m pipeline.training.loop``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            "-m", "pipeline.training.loop", "--config", str(recipe)]  # fmt: skip
