"""Checks of a recipe against this machine before any work: the device exists, the files it names are there.

Each failure is one :class:`ConfigError` naming the recipe key, raised before the data is indexed or a network is
built. Without them a missing teacher checkpoint surfaced only after both, as ``checkpoint not found`` without
its key, and a device this machine lacks without the key that asked for it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.runtime import resolve_device
from pipeline.training.config import ConfigError, TrainConfig

_FILE_HINTS = {
    "student_init": "train the ground-truth student first (e.g. configs/mpii_hg4_gt.yaml), or set student_init: "
    "null to train from scratch",
    "student_backbone": "give ImageNet weights of the student's backbone, or set student_backbone: null",
    "teacher_checkpoint": "teacher_online runs the teacher from these weights",
}
"""What to do about each recipe key that names an input file, when the file is missing."""


def check_recipe(config: TrainConfig) -> None:
    """Check the recipe's device and input files (:func:`check_device`, :func:`check_input_files`).

    Raises:
        ConfigError: the message names the key.
    """
    check_device(config.device)
    check_input_files(config)


def check_device(name: str) -> torch.device:
    """The device ``name`` stands for, when this machine has it (``"auto"`` always resolves).

    Raises:
        ConfigError: ``device: ...`` with :func:`pipeline.runtime.resolve_device`'s reason: a name torch does not
            know (``tpu``), ``cuda`` without CUDA, a GPU index beyond the visible ones (``cuda:7``).
    """
    try:
        return resolve_device(name)
    except ValueError as exc:
        # resolve_device's messages start "device 'x' ..." (it serves --device options too): no "device: device".
        raise ConfigError(f"device: {str(exc).removeprefix('device ')}") from None


def check_input_files(config: TrainConfig) -> None:
    """Every weights file the recipe names must be a file (``teacher_checkpoint`` only with ``teacher_online``:
    with a cache, the cache is the teacher's output and the checkpoint is not read).

    Raises:
        ConfigError: ``KEY: no file PATH; what to do``.
    """
    for key, hint in _FILE_HINTS.items():
        path = getattr(config, key)
        if key == "teacher_checkpoint" and not config.teacher_online:
            continue
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{key}: no file {path}; {hint}")
