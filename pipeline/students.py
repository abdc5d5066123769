"""The students of a distillation run: one training recipe per variant, trained in-process or under ``torchrun``.

A run trains the FPD student and, for the comparison table, optional baselines: ``gt_only`` (ground truth
alone, alpha 0) and ``fpd_labelled`` (FPD without the unlabeled folders). Each variant trains in its own folder,
named by a hash of its recipe and of the sizes of the sources it reads, with ``resume=True``: a retried task
continues from the last finished epoch, a re-run whose inputs did not change finds every epoch done and returns
at once, and a run with new data (a new unlabeled folder) starts a fresh folder instead of mixing old and new.
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


@dataclass(frozen=True)
class StudentResult:
    """A trained student: ``weights`` loads strictly into ``models.create_from_preset(preset)``."""

    variant: str
    preset: str
    weights: str
    output_dir: str


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


def run_variants(baselines: Sequence[str]) -> tuple[str, ...]:
    """Students a run trains: the requested baselines, then the FPD student, in table order."""
    unknown = sorted(set(baselines) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown student variant(s) {unknown}; expected some of {VARIANTS[:2]}")
    return tuple(v for v in VARIANTS if v == "fpd" or v in baselines)


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
    alpha: float,
    use_ground_truth: bool,
    discovery: Discovery,
    cache_dir: str,
    teacher: Mapping[str, object],
    students_dir: str | Path,
) -> TrainConfig:
    """The recipe of ``variant``: ``base`` (labelled data, schedule, device) with its loss, data and folder.

    Args:
        base: the run's recipe without teacher (its ``data.labelled``, ``optim``, ``device``... are kept).
        variant: one of :data:`VARIANTS`.
        alpha, use_ground_truth: the run's FPD loss settings (``gt_only`` overrides them).
        discovery: what the run found; the FPD student trains on its unlabeled folders.
        cache_dir: the teacher cache.
        teacher: the teacher's identity, part of the folder hash (a new teacher trains afresh).
        students_dir: the variant's folder is ``<students_dir>/<variant>-<hash>``.
    """
    alpha, use_ground_truth, with_unlabeled = variant_loss(variant, alpha, use_ground_truth)
    unlabeled = discovery.unlabeled_sources if with_unlabeled else ()
    needs_cache = alpha > 0 or bool(unlabeled) or not use_ground_truth
    raw = config_to_dict(base)
    raw["loss"] = {**raw["loss"], "alpha": alpha, "use_ground_truth": use_ground_truth}
    raw["data"] = {**raw["data"], "unlabeled": list(unlabeled), "teacher_cache": cache_dir if needs_cache else None}
    raw["resume"] = True
    labelled = [f"{s['kind']}/{s['split']}" for s in raw["data"]["labelled"]]
    recipe = json.dumps({"config": raw, "teacher": dict(teacher) if needs_cache else None,
                         "data": discovery.digest([*labelled, *unlabeled])}, sort_keys=True, default=str)  # fmt: skip
    raw["output_dir"] = str(Path(students_dir) / f"{variant}-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}")
    return config_from_dict(raw)


def train_variant(config: TrainConfig, variant: str, *, torch_threads: int | None = None) -> StudentResult:
    """Train (or resume, or find finished) one student; ``torchrun`` over every visible GPU when there are several."""
    recipe = write_recipe(config)  # also the file to hand to a multi-node torchrun launch
    on_cuda = resolve_device(config.device).type == "cuda"
    gpus = torch.cuda.device_count() if on_cuda else 0
    logger.info("training student %s from %s (%s)", variant, recipe,
                f"torchrun on {gpus} GPUs" if gpus > 1 else "in-process")  # fmt: skip
    if gpus > 1:
        subprocess.run(torchrun_command(recipe, gpus), check=True)
        weights = Path(config.output_dir) / WEIGHTS_NAME
    else:
        set_torch_threads(torch_threads)
        weights = train(config).weights
    return StudentResult(variant, config.student_preset, str(weights), config.output_dir)


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
