"""Student training from flow parameters: one ``TrainConfig`` per variant, run in-process or under ``torchrun``.

Each variant trains in its own folder named by a hash of its recipe and of the sizes of the sources it reads,
with ``resume=True``: a retried task continues from the last finished epoch, a re-run whose inputs did not
change finds every epoch done and returns at once, and a run with new data (a new unlabeled folder) starts a
fresh folder instead of mixing old and new.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from flows import stages
from flows.params import DistillParams
from pipeline.training.config import DataConfig, EvalConfig, LossConfig, OptimConfig, TrainConfig, config_to_dict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudentResult:
    """A trained student: ``weights`` loads strictly into ``models.create_from_preset(preset)``."""

    variant: str
    preset: str
    weights: str
    output_dir: str


def student_config(params: DistillParams, variant: str, discovery: stages.Discovery) -> TrainConfig:
    """The training recipe of ``variant`` (see ``stages.variant_loss``), in its own hashed output folder."""
    alpha, use_ground_truth, with_unlabeled = stages.variant_loss(params, variant)
    unlabeled = discovery.unlabeled_sources if with_unlabeled else ()
    needs_cache = alpha > 0 or bool(unlabeled) or not use_ground_truth
    on_cuda = stages.device_name(params) == "cuda"
    config = TrainConfig(
        student_preset=params.student.preset,
        student_init=params.student.init_checkpoint,
        data=DataConfig(
            labelled=stages.train_sources(params),
            unlabeled=unlabeled,
            teacher_cache=params.cache_dir if needs_cache else None,
            augment=params.schedule.augment,
            batch_size=params.schedule.batch_size,
            workers=params.device.num_workers,
        ),
        optim=OptimConfig(
            lr=params.schedule.lr, epochs=params.schedule.epochs, milestones=tuple(params.schedule.milestones)
        ),
        loss=LossConfig(alpha=alpha, use_ground_truth=use_ground_truth),
        eval=EvalConfig(format=None),  # the flow scores every model the same way afterwards
        device=params.device.device,
        amp="bf16" if params.device.amp and on_cuda else "none",
        seed=params.schedule.seed,
        resume=True,
    )
    sources = tuple(f"{s.format}/{s.split}" for s in config.data.labelled) + unlabeled
    recipe = json.dumps({"config": config_to_dict(config), "teacher": params.teacher.model_dump() if needs_cache
                         else None, "data": discovery.digest(sources)}, sort_keys=True)  # fmt: skip
    key = hashlib.sha256(recipe.encode()).hexdigest()[:10]
    return replace(config, output_dir=str(params.output_path / "students" / f"{variant}-{key}"))


def train_variant(params: DistillParams, variant: str, discovery: stages.Discovery) -> StudentResult:
    """Train (or resume, or find finished) the ``variant`` student; torchrun over every visible GPU when >1."""
    config = student_config(params, variant, discovery)
    recipe = write_recipe(config)  # also the file to hand to a multi-node torchrun launch
    gpus = _visible_gpus() if stages.device_name(params) == "cuda" else 0
    logger.info("training student %s from %s (%s)", variant, recipe,
                f"torchrun on {gpus} GPUs" if gpus > 1 else "in-process")  # fmt: skip
    if gpus > 1:
        from pipeline.training.loop import WEIGHTS_NAME

        subprocess.run(torchrun_command(recipe, gpus), check=True)
        weights = Path(config.output_dir) / WEIGHTS_NAME
    else:
        from pipeline.training.loop import train

        if params.device.torch_threads:
            import torch

            torch.set_num_threads(params.device.torch_threads)
        weights = train(config).weights
    return StudentResult(variant, params.student.preset, str(weights), config.output_dir)


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


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
