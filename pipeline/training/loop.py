"""Student training, shaped like the torchvision reference scripts: read :func:`train` top to bottom.

``train(config)`` is the plain function behind ``fpd train`` and the Prefect flow; under ``torchrun``
(``python -m pipeline.training.loop --config FILE``) every process runs it and rank 0 alone writes checkpoints,
weights and the JSONL log. One optimiser step per batch; the loss is read back to the host once per epoch (and,
with a progress bar, once every ``progress_every`` steps for its running loss).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from models.presets import ModelPreset, get_preset
from pipeline.codec import HeatmapCodec
from pipeline.data.workers import worker_start_method
from pipeline.flip import final_heatmaps
from pipeline.runtime import load_model
from pipeline.training.config import ConfigError, TrainConfig, add_train_arguments, config_to_dict, load_config
from pipeline.training.data import step_inputs
from pipeline.training.distributed import all_reduce_mean, barrier, cleanup_distributed, init_distributed
from pipeline.training.loss import FPDLoss
from pipeline.training.preflight import check_recipe
from pipeline.training.recipe import describe_init, resolve_recipe
from pipeline.training.schedule import build_optimizer, build_scheduler
from pipeline.training.sources import build_train_dataset, cache_teacher, evaluate
from pipeline.training.state import (
    BEST_NAME,
    CHECKPOINT_NAME,
    LOG_NAME,
    WEIGHTS_NAME,
    append_log,
    changed_keys,
    load_training_state,
    prepare_output_dir,
    save_training_state,
    truncate_log,
)
from storage.checkpoints import load_backbone, save_weights

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a finished run left in ``output_dir``.

    Attributes:
        checkpoint: the resumable checkpoint of the last epoch.
        weights: bare state_dict of the final student (loads into ``models.create_from_preset`` strictly).
        metrics: the last validation table (empty when validation is off).
        best_weights: bare state_dict of the best-validated epoch, when validation ran.
        best_metric: its ``config.best_metric_key`` value.
        log: the per-epoch JSONL log.
    """

    checkpoint: Path
    weights: Path
    metrics: dict[str, float] = field(default_factory=dict)
    best_weights: Path | None = None
    best_metric: float | None = None
    log: Path | None = None


@dataclass(frozen=True)
class Precision:
    """The one AMP path (as nanoGPT): an autocast dtype (None = full precision) and always a GradScaler.

    The scaler is enabled only for fp16 on CUDA. A disabled one is the identity: ``scale(loss)`` returns the loss,
    ``step(optimizer)`` calls ``optimizer.step()``, ``update()`` does nothing, so the loop has one backward path.
    """

    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    @classmethod
    def from_config(cls, amp: str, device: torch.device) -> Precision:
        """``amp`` is ``"none"``, ``"bf16"`` (autocast, no scaling needed: bf16 has float32's range) or ``"fp16"``."""
        if amp == "fp16" and device.type != "cuda":
            raise ConfigError("amp: fp16 needs CUDA (GradScaler); use bf16 or none on CPU")
        dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        return cls(dtype, torch.amp.GradScaler(device.type, enabled=amp == "fp16"))


class _StepBar(tqdm):
    """A tqdm bar without tqdm's monitor thread.

    tqdm starts that thread in ``__new__`` (even for ``disable=True``). Persistent DataLoader workers are forked at
    the first batch, i.e. after the bar exists, and forking a multi-threaded process is what
    ``pipeline.data.workers`` avoids. A subclass attribute, not ``tqdm.monitor_interval = 0``: that would change
    every other bar of the process.
    """

    monitor_interval = 0


def train_one_epoch(
    model: nn.Module,
    criterion: FPDLoss,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    device: torch.device,
    precision: Precision,
    *,
    codec: HeatmapCodec,
    teacher: nn.Module | None = None,
    use_cached_teacher: bool = True,
    channels_last: bool = False,
    progress: bool = False,
    epoch: int = 0,
    progress_every: int = 20,
) -> dict[str, Tensor]:
    """One pass over ``loader``.

    Args:
        model: the student (possibly DDP-wrapped), in train mode.
        criterion: the FPD loss.
        optimizer: steps once per batch.
        loader: yields ``DistillDataset`` batches.
        device: where to compute.
        precision: autocast dtype and scaler.
        codec: encodes the batch's joints into GT targets (the dataset's, ``DistillDataset.codec``).
        teacher: a teacher run on each augmented batch (reference ``teacher_online`` mode), or None.
        use_cached_teacher: feed the batch's cached ``teacher`` heatmaps, warped to its crops on ``device``
            (``pipeline.training.data.step_inputs``), to the loss (False: no teacher term).
        channels_last: NHWC inputs.
        progress: show a per-step bar (pass True on rank 0 only; other ranks create none).
        epoch: shown in the bar.
        progress_every: steps between two refreshes of the bar's running loss (each one reads the device).

    Returns:
        ``loss``, ``teacher``, ``ground_truth``: (steps,) tensors on ``device`` (read them once, after the epoch).
    """
    model.train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    totals, teacher_terms, gt_terms = [], [], []
    # Only a shown bar is created (rank 0 with progress on): not tqdm(disable=not is_main), which on every rank
    # would still run tqdm's set-up (see _StepBar) for a bar nobody sees.
    bar = _StepBar(total=len(loader), desc=f"epoch {epoch}", unit="step", leave=False) if progress else None
    scaler = precision.scaler
    for step, batch in enumerate(loader, start=1):
        # The workers hand over uint8 crops, joints and cached maps; normalising, encoding and the teacher warp are
        # done here, batched on the device, in float32 outside autocast.
        inputs = step_inputs(batch, codec, device, cached_teacher=teacher is None and use_cached_teacher)
        images = inputs.images.contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=precision.dtype or torch.float32, enabled=precision.dtype is not None):
            teacher_heatmaps, seen = inputs.teacher, inputs.teacher_seen
            if teacher is not None:  # the online teacher sees every pixel of the crop: no seen map
                with torch.no_grad():
                    teacher_heatmaps = final_heatmaps(teacher(images)).float()
            output = model(images)
            terms = criterion(output, teacher_heatmaps, inputs.target, inputs.target_weight, inputs.labelled, seen)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms.total).backward()
        scaler.step(optimizer)  # skips the step on inf/NaN gradients when enabled
        scaler.update()
        totals.append(terms.total.detach())
        teacher_terms.append(terms.teacher)
        gt_terms.append(terms.ground_truth)
        if bar is not None:
            bar.update()
            if step % progress_every == 0 or step == len(loader):
                # The one device read of the bar, every ``progress_every`` steps: the mean of the last ones.
                bar.set_postfix(loss=f"{torch.stack(totals[-progress_every:]).mean().item():.5f}")
    if bar is not None:
        bar.close()
    empty = torch.zeros(0, device=device)
    return {
        "loss": torch.stack(totals) if totals else empty,
        "teacher": torch.stack(teacher_terms) if teacher_terms else empty,
        "ground_truth": torch.stack(gt_terms) if gt_terms else empty,
    }


def train(config: TrainConfig, *, overwrite: bool = False) -> TrainResult:
    """Train a student as ``config`` says; resumes from ``output_dir/checkpoint.pt`` when ``config.resume``.

    A folder holding a previous run is refused unless ``config.resume`` or ``overwrite`` (start over) says what to
    do with it (``pipeline.training.state.prepare_output_dir``).
    """
    check_recipe(config)
    info = init_distributed(config.device)
    try:
        device = info.device
        seed_everything(config.seed)
        out = Path(config.output_dir)
        resume = prepare_output_dir(out, resume=config.resume, overwrite=overwrite, is_main=info.is_main)
        recipe = resolve_recipe(config, info.world_size)
        preset = recipe.preset
        precision = Precision.from_config(config.amp, device)
        if info.is_main:
            logger.info("global batch %d = %d process(es) x %d; lr %g; init: %s", recipe.global_batch,
                        info.world_size, recipe.per_process_batch, recipe.lr, recipe.init)  # fmt: skip
            if recipe.lr_note:
                logger.warning("%s", recipe.lr_note)

        dataset = build_train_dataset(config, preset)
        sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                     seed=config.seed)
        loader = DataLoader(
            dataset, batch_size=recipe.per_process_batch, sampler=sampler, num_workers=config.data.workers,
            pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(config.seed),
            multiprocessing_context=worker_start_method(config.data.workers),
            persistent_workers=config.data.workers > 0,
        )

        _, model = load_model(preset, config.student_init)
        if config.student_backbone:
            layers = getattr(model, "backbone_layers", ())
            if not layers:
                raise ConfigError(f"student_backbone: {preset.name} ({preset.arch}) has no ImageNet backbone")
            report = load_backbone(model, config.student_backbone, layers)
            logger.info("backbone from %s: %d tensors loaded, %d file tensors skipped (%s...), %d left as "
                        "initialised (the head)", config.student_backbone, len(report.loaded),
                        len(report.unexpected), ", ".join(report.unexpected[:3]), len(report.missing))  # fmt: skip
        model.to(device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        model_without_ddp = model
        if info.distributed:
            model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if config.compile:
            model = torch.compile(model)
        teacher = _online_teacher(config, preset, device) if config.teacher_online else None

        criterion = FPDLoss(
            alpha=config.loss.alpha, use_ground_truth=config.loss.use_ground_truth,
            confidence_weighting=config.loss.confidence_weighting, confidence_clip=config.loss.confidence_clip,
            min_teacher_confidence=config.loss.min_teacher_confidence,
            teacher_seen_only=config.loss.teacher_seen_only,
        )
        optimizer = build_optimizer(model_without_ddp, config.optim, recipe.lr)
        scheduler = build_scheduler(optimizer, config.optim)

        start_epoch, best_metric, best_epoch = 0, None, None
        checkpoint_path = out / CHECKPOINT_NAME
        if resume:
            state = load_training_state(checkpoint_path, model=model_without_ddp, optimizer=optimizer,
                                        scheduler=scheduler, scaler=precision.scaler)
            start_epoch, best_metric, best_epoch = state.start_epoch, state.best_metric, state.best_epoch
            if start_epoch >= config.optim.epochs:
                logger.info("%s: all %d epochs already trained, its weights are reused", out, config.optim.epochs)
            else:
                logger.info("resuming %s at epoch %d", checkpoint_path, start_epoch)
            changed = changed_keys(state.config, config_to_dict(config))
            if changed:
                logger.warning("resuming with a recipe that differs from the checkpoint's in: %s", ", ".join(changed))
        log_path = out / LOG_NAME
        if info.is_main:
            truncate_log(log_path, start_epoch)

        metrics: dict[str, float] = {}
        for epoch in range(start_epoch, config.optim.epochs):
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            lr = optimizer.param_groups[0]["lr"]
            tic = time.perf_counter()
            steps = train_one_epoch(
                model, criterion, optimizer, loader, device, precision, codec=dataset.codec, teacher=teacher,
                use_cached_teacher=config.data.teacher_cache is not None, channels_last=config.channels_last,
                progress=config.progress and info.is_main, epoch=epoch,
            )
            # One host read per epoch: the mean over ranks of every step's loss.
            curves = {name: all_reduce_mean(values).tolist() for name, values in steps.items()}
            seconds = time.perf_counter() - tic
            scheduler.step()

            epoch_metrics: dict[str, float] = {}
            last_epoch = epoch + 1 == config.optim.epochs
            if config.eval.dataset is not None and ((epoch + 1) % config.eval.every == 0 or last_epoch):
                if info.is_main:
                    epoch_metrics = evaluate(model_without_ddp, config, preset, device)
                    metrics = epoch_metrics
                barrier()
            score = epoch_metrics.get(config.best_metric_key)
            improved = score is not None and (best_metric is None or score > best_metric)
            if improved:
                best_metric, best_epoch = score, epoch

            if info.is_main:
                record = {
                    "epoch": epoch, "lr": lr, "loss": _mean(curves["loss"]), "loss_teacher": _mean(curves["teacher"]),
                    "loss_ground_truth": _mean(curves["ground_truth"]), "seconds": round(seconds, 3),
                    "samples_per_s": round(len(sampler) * info.world_size / max(seconds, 1e-9), 2),
                    "step_losses": curves["loss"], "metrics": epoch_metrics,
                }
                # Log and best weights before the checkpoint: a run killed in between redoes this epoch on resume
                # (which drops the log line), so the three never disagree.
                append_log(log_path, record)
                if improved:
                    save_weights(model_without_ddp, out / BEST_NAME, metadata=_weights_metadata(config, epoch_metrics))
                save_training_state(
                    checkpoint_path, model=model_without_ddp, optimizer=optimizer, scheduler=scheduler,
                    scaler=precision.scaler, epochs_done=epoch + 1, best_metric=best_metric, best_epoch=best_epoch,
                    config=config_to_dict(config), metrics=epoch_metrics,
                )
                logger.info("epoch %d/%d loss %.6f lr %.3g %.1f s %.1f samples/s%s", epoch + 1, config.optim.epochs,
                            record["loss"], record["lr"], seconds, record["samples_per_s"],
                            f" {epoch_metrics}" if epoch_metrics else "")  # fmt: skip
            barrier()

        weights_path = out / WEIGHTS_NAME
        if info.is_main:
            save_weights(model_without_ddp, weights_path, metadata=_weights_metadata(config, metrics))
        barrier()
        best_path = out / BEST_NAME
        return TrainResult(
            checkpoint=checkpoint_path, weights=weights_path, metrics=metrics,
            best_weights=best_path if best_path.exists() else None, best_metric=best_metric, log=log_path,
        )
    finally:
        cleanup_distributed()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (the same seed on every rank: identical initial weights)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _online_teacher(config: TrainConfig, student_preset: ModelPreset, device: torch.device) -> nn.Module:
    """The frozen teacher for ``teacher_online``: it must see the student's crop as is (same sizes and colours)."""
    preset = get_preset(config.teacher_preset)
    for name in ("input_size", "heatmap_size", "color_order", "joint_set"):
        if getattr(preset, name) != getattr(student_preset, name):
            raise ConfigError(
                f"teacher_online: teacher preset {preset.name} and student preset {student_preset.name} differ in "
                f"{name} ({getattr(preset, name)} vs {getattr(student_preset, name)}); online mode feeds one crop "
                "to both"
            )
    _, teacher = load_model(preset, config.teacher_checkpoint)
    teacher.to(device).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def _weights_metadata(config: TrainConfig, metrics: dict[str, float]) -> dict[str, object]:
    return {"preset": config.student_preset, "init": describe_init(config), "metrics": metrics,
            "teacher": cache_teacher(config), "recipe": config_to_dict(config)}


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def read_log(path: str | Path) -> list[dict]:
    """The records of a ``log.jsonl``, in order."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.training.loop --config FILE [--resume | --overwrite] [--set key=value ...]`` (the torchrun
    entry)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.training.loop", description=__doc__.splitlines()[0])
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(args.config, [*args.set, *(["resume=true"] if args.resume else [])])
        result = train(config, overwrite=args.overwrite)
    except ConfigError as exc:  # one line per rank, as `fpd train` prints it; a traceback here would be a bug's
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        logger.info("weights: %s", result.weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
