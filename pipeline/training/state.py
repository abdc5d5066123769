"""Training checkpoints: everything an exact resume needs, written atomically, readable with weights_only=True.

A checkpoint holds the student (bare state_dict, no ``module.`` prefix), optimiser, scheduler, AMP scaler, the
number of finished epochs, the best metric so far, the recipe, and the RNG states (torch, CUDA, numpy, python).
The numpy and python states are stored as tensors and plain ints so that ``torch.load(weights_only=True)``
accepts the file (it refuses pickled numpy objects).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from storage.atomic import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"


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
    with atomic_write(path) as handle:
        torch.save(payload, handle)


def load_training_state(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    map_location: torch.device | str = "cpu",
) -> TrainingState:
    """Load a checkpoint written by :func:`save_training_state` into the given objects and restore the RNGs.

    The scaler state is loaded only when both sides have one: a checkpoint from a run without fp16 holds ``{}``
    (older ones None), which an enabled scaler refuses, so it then starts from its initial scale; a disabled
    scaler ignores any state.
    """
    payload = torch.load(path, map_location=map_location, weights_only=True)
    model.load_state_dict(payload["model"], strict=True)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if payload["scaler"] and scaler.is_enabled():
        scaler.load_state_dict(payload["scaler"])
    restore_rng_state(payload["rng"])
    return TrainingState(start_epoch=int(payload["epoch"]), best_metric=payload["best_metric"],
                         best_epoch=payload["best_epoch"], config=payload["config"])
