"""Data-parallel training launched by ``torchrun``: process-group set-up, rank queries, rank-0-only writes.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; the group joins
through the ``env://`` rendezvous with NCCL on CUDA and gloo on CPU. A plain ``python`` run (no ``WORLD_SIZE``)
is a world of one and never creates a process group. Examples::

    torchrun --nproc_per_node 8 -m pipeline.training.loop --config configs/coco_w48_to_w32.yaml
    # two nodes: run on each, with --node_rank 0 / 1
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr 10.0.0.1 --master_port 29500 \
        -m pipeline.training.loop --config configs/coco_w48_to_w32.yaml
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor
from torch import distributed as dist

from pipeline.runtime import resolve_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, its ``device`` (``cuda:LOCAL_RANK`` on GPU)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1``; otherwise describe a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", world_size=world_size, rank=rank)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup_distributed() -> None:
    """Leave the process group (no-op for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Mean of ``tensor`` over ranks (a copy; the input is unchanged). Identity without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    reduced = tensor.clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / dist.get_world_size()


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
