"""A recipe resolved for one launch: per-process batch, learning rate, per-epoch schedule, init and augmentation.

The recipe states the global batch (the paper's); how many processes share it is only known at launch
(``torchrun``'s ``WORLD_SIZE``). :func:`resolve_recipe` is the one place that turns the two into what each process
does, for the training loop and for ``fpd train --print-recipe`` alike, so what is printed is what trains.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

from models.presets import ModelPreset, get_preset
from pipeline.augment import AugmentConfig
from pipeline.training.config import ConfigError, TrainConfig
from pipeline.training.schedule import lr_per_epoch


@dataclass(frozen=True)
class ResolvedRecipe:
    """What one launch of a recipe trains with.

    Attributes:
        preset: the student's model preset (input and heatmap sizes, colour order).
        world_size: processes sharing the global batch.
        global_batch: samples per optimiser step over all processes (``data.batch_size``).
        per_process_batch: ``global_batch / world_size``.
        lr: the starting rate (``optim.lr``, rescaled only with ``optim.scale_lr``).
        lr_note: what the global batch does to the rate, relative to ``optim.reference_batch`` ("" when equal).
        lr_schedule: ``(first epoch, rate)`` of each constant stretch of the schedule (0-based epochs).
        init: how the student's weights start (:func:`describe_init`).
        augment: the augmentation (dataset defaults filled in), or None.
    """

    preset: ModelPreset
    world_size: int
    global_batch: int
    per_process_batch: int
    lr: float
    lr_note: str
    lr_schedule: tuple[tuple[int, float], ...]
    init: str
    augment: AugmentConfig | None


def describe_init(config: TrainConfig) -> str:
    """``checkpoint <path>`` (pose weights, FPD's fine-tune), ``imagenet <path>`` (backbone only) or ``scratch``."""
    if config.student_init:
        return f"checkpoint {config.student_init}"
    if config.student_backbone:
        return f"imagenet {config.student_backbone}"
    return "scratch"


def resolve_recipe(config: TrainConfig, world_size: int = 1) -> ResolvedRecipe:
    """Resolve ``config`` for ``world_size`` processes.

    Raises:
        ConfigError: the global batch does not divide among the processes.
    """
    global_batch = config.data.batch_size
    if world_size < 1 or global_batch % world_size:
        raise ConfigError(f"data.batch_size: the global batch {global_batch} does not divide among {world_size} "
                          f"processes; choose a multiple of {world_size}")  # fmt: skip
    optim = config.optim
    reference = optim.reference_batch or global_batch
    scaled = optim.lr * global_batch / reference
    lr = scaled if optim.scale_lr else optim.lr
    if global_batch == reference:
        note = ""
    elif optim.scale_lr:
        note = (f"global batch {global_batch} instead of the recipe's {reference}: lr scaled linearly "
                f"{optim.lr:g} -> {lr:g}")  # fmt: skip
    else:
        note = (f"global batch {global_batch} instead of the recipe's {reference}: lr kept at {optim.lr:g}, so each "
                f"sample weighs {reference / global_batch:.3g}x what it did; the linear scaling rule would give "
                f"{scaled:g} (set optim.scale_lr: true)")  # fmt: skip
    rates = lr_per_epoch(optim, lr)
    schedule = tuple((epoch, rate) for epoch, rate in enumerate(rates) if epoch == 0 or rate != rates[epoch - 1])
    preset = get_preset(config.student_preset)
    return ResolvedRecipe(
        preset=preset, world_size=world_size, global_batch=global_batch, per_process_batch=global_batch // world_size,
        lr=lr, lr_note=note, lr_schedule=schedule, init=describe_init(config),
        augment=config.data.augment.resolve(preset.joint_set),
    )  # fmt: skip


def recipe_summary(config: TrainConfig, resolved: ResolvedRecipe) -> dict[str, Any]:
    """The resolved recipe as plain data, in reading order (``fpd train --print-recipe`` prints it as YAML)."""
    optim, loss, preset = config.optim, config.loss, resolved.preset
    epochs = optim.epochs
    stretches = [*resolved.lr_schedule, (epochs, 0.0)]
    return {
        "student": {"preset": preset.name, "arch": preset.arch, "input_size": list(preset.input_size),
                    "heatmap_size": list(preset.heatmap_size), "color_order": preset.color_order,
                    "init": resolved.init},
        "data": {"labelled": [f"{s.kind} {s.root} {s.split}" for s in config.data.labelled],
                 "unlabeled": list(config.data.unlabeled), "teacher_cache": config.data.teacher_cache},
        "batch": {"global": resolved.global_batch, "processes": resolved.world_size,
                  "per_process": resolved.per_process_batch, "note": resolved.lr_note or None},
        "optim": {"optimizer": optim.optimizer, "lr": resolved.lr, "weight_decay": optim.weight_decay,
                  "epochs": epochs,
                  "lr_by_epoch": [f"epochs {start}-{end - 1}: {rate:g}"
                                  for (start, rate), (end, _) in itertools.pairwise(stretches)]},
        "augment": dataclasses.asdict(resolved.augment) if resolved.augment else None,
        "loss": {"alpha": loss.alpha, "use_ground_truth": loss.use_ground_truth,
                 "teacher": ("online " + str(config.teacher_checkpoint)) if config.teacher_online
                 else ("cached " + str(config.data.teacher_cache)) if config.data.teacher_cache else None,
                 "confidence_weighting": loss.confidence_weighting},
        "eval": {"dataset": config.eval.dataset, "split": config.eval.split, "every": config.eval.every}
        if config.eval.dataset else None,
        "precision": {"amp": config.amp, "channels_last": config.channels_last, "compile": config.compile},
    }  # fmt: skip
