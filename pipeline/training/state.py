"""A run's folder: the resumable checkpoint, the restart guard and the per-epoch log.

A checkpoint holds the student (bare state_dict, no ``module.`` prefix), optimiser, scheduler, AMP scaler, the
number of finished epochs, the best metric so far, the recipe, and the RNG states (torch, CUDA, numpy, python).
The numpy and python states are stored as tensors and plain ints so that ``torch.load(weights_only=True)``
accepts the file (it refuses pickled numpy objects). Every write names its file when it fails (a full disk
included), and the checkpoint and weights are replaced atomically, so a failed write keeps the previous ones.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.training.config import ConfigError
from storage.atomic import atomic_write
from storage.checkpoints import CheckpointError, check_state_dict, metadata_path, read_checkpoint, writing_to

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
WEIGHTS_NAME = "weights.pt"
LOG_NAME = "log.jsonl"
RUN_OUTPUTS = (CHECKPOINT_NAME, WEIGHTS_NAME, BEST_NAME)
"""The files whose presence means a folder holds a run that a fresh start would replace."""

_PAYLOAD_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "best_metric", "best_epoch", "config", "rng")
_START_OVER = "pass --overwrite to start over (it replaces the run)"


def prepare_output_dir(out: Path, *, resume: bool, overwrite: bool, is_main: bool) -> bool:
    """Check ``out`` against what was asked, before anything is written; True when a checkpoint is to be resumed.

    A folder holding a previous run's checkpoint or weights is refused unless ``resume`` (continue it) or
    ``overwrite`` (start over) is given: a rerun without either used to start over silently and replace the
    checkpoint after its first epoch. ``overwrite`` wins over ``resume`` (a flow's ``recipe.yaml`` says
    ``resume: true``) and removes the previous run's files, so that none of them (an old ``best.pt``) is taken for
    the new run's; the log says which.

    Args:
        out: the run's ``output_dir``.
        resume: continue from ``out/checkpoint.pt`` when there is one (``--resume``, ``resume: true``).
        overwrite: start over, removing the previous run's files (``--overwrite``).
        is_main: rank 0, the only process that removes files or creates the folder.

    Raises:
        ConfigError: the folder holds a run and neither option is given, or ``resume`` finds finished weights but
            no checkpoint to continue from; the message names the folder and both options.
    """
    found = [name for name in RUN_OUTPUTS if (out / name).exists()]
    checkpoint = out / CHECKPOINT_NAME
    if overwrite:
        candidates = [path for name in RUN_OUTPUTS for path in (out / name, metadata_path(out / name))]
        previous = [path for path in (*candidates, out / LOG_NAME) if path.exists()]
        if previous and is_main:
            logger.warning("--overwrite: starting over in %s; removing the previous run's %s", out,
                           ", ".join(path.name for path in previous))  # fmt: skip
            for path in previous:
                path.unlink()
    elif found and not resume:
        raise ConfigError(f"{out} already holds a run ({', '.join(found)}): pass --resume to continue it, or "
                          "--overwrite to start over (replaces it)")  # fmt: skip
    elif found and not checkpoint.exists():
        raise ConfigError(f"--resume: {out} holds {', '.join(found)} but no {CHECKPOINT_NAME} to continue from; "
                          "pass --overwrite to start over (replaces it)")  # fmt: skip
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    return resume and not overwrite and checkpoint.exists()


def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and every CUDA device), numpy's global generator and python's ``random``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states are restored only when the device count matches)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))


@dataclass(frozen=True)
class TrainingState:
    """What :func:`load_training_state` returns: the next epoch to run, the best metric so far, the saved recipe."""

    start_epoch: int
    best_metric: float | None
    best_epoch: int | None
    config: dict[str, Any]


def save_training_state(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    epochs_done: int,
    best_metric: float | None,
    best_epoch: int | None,
    config: dict[str, Any],
    metrics: dict[str, float],
) -> None:
    """Write a resumable checkpoint atomically (a reader sees the old file or the new one, never a torn one).

    Args:
        path: destination file.
        model: the student without its DDP / compile wrapper.
        optimizer, scheduler, scaler: their ``state_dict`` is saved (a disabled scaler's is ``{}``).
        epochs_done: number of finished epochs (the resumed run starts at this epoch index).
        best_metric, best_epoch: best validation result so far (None before the first validation).
        config: the recipe as plain data (``config_to_dict``).
        metrics: the latest validation table.
    """
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epochs_done,
        "best_metric": best_metric,
        "best_epoch": best_epoch,
        "config": config,
        "metrics": metrics,
        "rng": capture_rng_state(),
    }
    with writing_to(path), atomic_write(path) as handle:
        torch.save(payload, handle)


def load_training_state(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> TrainingState:
    """Load a checkpoint written by :func:`save_training_state` into the given objects and restore the RNGs.

    The file is read on the CPU (the RNG states must stay there; ``load_state_dict`` moves the rest to the
    model's device). The scaler state is loaded only when both sides have one: a checkpoint from a run without
    fp16 holds ``{}`` (older ones None), which an enabled scaler refuses, so it then starts from its initial
    scale; a disabled scaler ignores any state.

    Raises:
        CheckpointError: the file is truncated or not a torch file, ``weights_only`` refuses it, it is not a
            training checkpoint (a bare state_dict), or it is of another model or optimiser; the message names the
            file, what is wrong, and that ``--overwrite`` starts over.
    """
    try:
        payload = read_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; {_START_OVER}") from None
    _check_payload(payload, path)
    try:
        check_state_dict(payload["model"], model, path)
    except CheckpointError as exc:
        held = payload["config"].get("student_preset")
        # What it is first: the key lists that follow can be long.
        raise CheckpointError(f"cannot resume from {path}: it holds a student_preset {held!r} run that does not fit "
                              f"this recipe's network; {_START_OVER} ({exc})") from None  # fmt: skip
    model.load_state_dict(payload["model"], strict=True)
    try:
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if payload["scaler"] and scaler.is_enabled():
            scaler.load_state_dict(payload["scaler"])
        restore_rng_state(payload["rng"])
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
        raise CheckpointError(f"cannot resume from {path}: its optimiser, scheduler or RNG state does not fit this "
                              f"recipe ({type(exc).__name__}: {exc}); {_START_OVER}") from None  # fmt: skip
    return TrainingState(start_epoch=payload["epoch"], best_metric=payload["best_metric"],
                         best_epoch=payload["best_epoch"], config=payload["config"])


def _check_payload(payload: object, path: Path) -> None:
    """Refuse anything but a :func:`save_training_state` dict, saying what the file holds instead."""
    if isinstance(payload, Mapping) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        what = f"a bare state_dict of {len(payload)} tensors (weights only, like {WEIGHTS_NAME})"
    elif not isinstance(payload, Mapping):
        what = f"a {type(payload).__name__}"
    elif missing := [key for key in _PAYLOAD_KEYS if key not in payload]:
        what = f"a dict without {', '.join(missing)} (keys: {', '.join(sorted(map(str, payload))[:8])})"
    elif not isinstance(payload["epoch"], int) or not isinstance(payload["config"], Mapping):
        what = "a dict whose epoch or config entry is of the wrong type"
    else:
        return
    raise CheckpointError(f"cannot resume from {path}: it is {what}, not a training checkpoint; {_START_OVER}")


def saved_epoch(path: Path) -> int | None:
    """The finished epochs a checkpoint records, or None when there is no readable one (for messages only).

    ``mmap`` maps the tensors instead of reading them, so this costs little even for a large model.
    """
    try:
        epoch = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"]
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError):
        return None
    return epoch if isinstance(epoch, int) else None


def append_log(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line to the log; a write that fails (a full disk) is cut off again, leaving no torn line."""
    data = memoryview((json.dumps(record) + "\n").encode("utf-8"))
    # Unbuffered, so that a failed write leaves nothing behind in a buffer to be flushed again at close.
    with writing_to(path), open(path, "ab", buffering=0) as handle:
        start = handle.seek(0, os.SEEK_END)
        try:
            while data:
                data = data[handle.write(data) :]
        except OSError:
            handle.truncate(start)
            raise


def truncate_log(path: Path, start_epoch: int) -> None:
    """Keep only the records of epochs before ``start_epoch`` (a resumed run rewrites the rest).

    A line that does not parse is dropped too: a run killed in the middle of writing it left it, and that epoch
    has no checkpoint, so it is redone.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["epoch"] < start_epoch:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    with writing_to(path), atomic_write(path, "w") as handle:
        handle.write("".join(line + "\n" for line in kept))


def changed_keys(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain recipes (``resume``, ``progress`` and ``optim.epochs`` may
    change)."""
    changed = []
    for key in sorted(set(saved) | set(current)):
        dotted = f"{prefix}{key}"
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed.extend(changed_keys(a, b, dotted + "."))
        elif a != b and dotted not in ("resume", "progress", "optim.epochs"):
            changed.append(dotted)
    return changed
