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

    A device this machine does not have is refused here, by name, rather than by a torch error at the first
    tensor moved there (after a cache folder was created or a model built).

    Raises:
        ValueError: ``name`` is not a device torch knows, or not one this machine has (the message says which).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available on this machine (no GPU visible, "
                             "or a torch built without CUDA); use cpu or auto")  # fmt: skip
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} asked for, but this machine has {torch.cuda.device_count()} "
                             "CUDA devices (cuda:0 ...)")  # fmt: skip
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for, but MPS is not available on this machine; use cpu or auto")
    elif device.type not in ("cpu", "mps"):
        raise ValueError(f"device {name!r} is not supported; expected auto, cpu, cuda, cuda:N or mps")
    return device


def set_torch_threads(threads: int | None) -> None:
    """Pin torch's intra-op CPU threads (None keeps torch's default of one per core)."""
    if threads:
        torch.set_num_threads(threads)


def cpu_threads_beside(workers: int) -> int:
    """Intra-op threads that leave one core to each of ``workers`` loader processes: ``max(1, cores - workers)``.

    torch's default (one thread per core) plus busy workers oversubscribes the cores; each thread then waits for
    the others at every op, and on a shared 2-core machine an epoch took 57 s that way against 2.8 s with one
    thread. ``cores`` is what this process may run on (``sched_getaffinity``: containers and ``taskset`` limit it).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - max(0, workers))


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
