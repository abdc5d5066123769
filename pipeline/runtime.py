"""Where a process computes and with what: ``"auto"`` becomes a device here, threads are pinned here, and a
preset's network is built and given its weights here (every command, stage and flow goes through these)."""

from __future__ import annotations

import os

import torch
from torch import nn

from models.presets import ModelPreset, create_from_preset, get_preset
from storage.checkpoints import load_checkpoint


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; a bare ``"cuda"`` picks this process's local GPU.

    Raises:
        ValueError: ``name`` is not a device torch knows (the message names it).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def set_torch_threads(threads: int | None) -> None:
    """Pin torch's intra-op CPU threads (None keeps torch's default of one per core)."""
    if threads:
        torch.set_num_threads(threads)


def load_model(preset: str | ModelPreset, weights: str | os.PathLike[str] | None) -> tuple[ModelPreset, nn.Module]:
    """The preset's network with ``weights`` loaded strictly (None: freshly initialised), on the CPU.

    Raises:
        ValueError: unknown preset name.
        storage.checkpoints.CheckpointError: the weights do not fit the network (the message says how).
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    model = create_from_preset(preset)
    if weights is not None:
        load_checkpoint(model, weights, strict=True)
    return preset, model
