"""Two gloo processes under DDP end where one process lands when it accumulates both ranks' micro-batches."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pipeline.codec import HeatmapCodec
from pipeline.training.data import step_inputs
from pipeline.training.distributed import all_reduce_mean, barrier, cleanup_distributed, init_distributed
from pipeline.training.loop import Precision, train_one_epoch
from pipeline.training.loss import FPDLoss

WORLD, BATCH, EPOCHS, SEED = 2, 3, 2, 7


CODEC = HeatmapCodec((16, 16), (4, 4), sigma=1.0)


class RandomPoses(Dataset):
    """12 fixed random samples in the DistillDataset item format (half of them unlabeled, a third of them with cached
    teacher maps to shift by a pixel and mirror, the rest on their cached crop)."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (12, 16, 16, 3), dtype=torch.uint8, generator=gen)
        self.joints = torch.rand(12, 2, 2, generator=gen) * 16
        self.teacher = torch.rand(12, 2, 4, 4, generator=gen)
        self.visibility = (torch.rand(12, 2, generator=gen) > 0.2).float()

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> dict:
        moved, labelled = i % 3 == 0, i % 2 == 0
        matrix = torch.tensor([[-1.0, 0.0, 4.0], [0.0, 1.0, 0.0]] if moved else [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                              dtype=torch.float64)  # fmt: skip
        return {"image": self.images[i], "joints": self.joints[i] if labelled else torch.zeros(2, 2),
                "visibility": self.visibility[i] if labelled else torch.zeros(2), "teacher": self.teacher[i],
                "teacher_matrix": matrix, "teacher_channels": torch.tensor([1, 0] if moved else [0, 1]),
                "labelled": labelled, "index": i}  # fmt: skip


def _model() -> nn.Module:
    # No bias before BatchNorm: its true gradient is zero and Adam would amplify rounding noise into steps.
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 3, 2, 1))


def _loader(dataset: Dataset, rank: int) -> tuple[DataLoader, DistributedSampler]:
    sampler = DistributedSampler(dataset, num_replicas=WORLD, rank=rank, shuffle=True, seed=SEED)
    return DataLoader(dataset, batch_size=BATCH, sampler=sampler), sampler


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    model = DistributedDataParallel(_model())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader, sampler = _loader(RandomPoses(), info.rank)
    curve = []
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        precision = Precision.from_config("none", torch.device("cpu"))  # the loop's one path, scaler disabled
        steps = train_one_epoch(model, FPDLoss(), optimizer, loader, torch.device("cpu"), precision, codec=CODEC)
        curve.append(all_reduce_mean(steps["loss"]))  # the loop logs the mean over ranks
    if info.is_main:
        torch.save({"state": model.module.state_dict(), "curve": torch.cat(curve)}, Path(out) / f"rank{rank}.pt")
    barrier()  # as the loop does after rank 0 writes: a peer leaving the group mid-write aborted rank 1 (SIGABRT)
    cleanup_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_matches_single_process_gradient_accumulation(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ddp = torch.load(tmp_path / "rank0.pt", weights_only=True)

    # One process: per step, rank 0's and rank 1's micro-batches each contribute loss / WORLD (DDP averages
    # gradients); BatchNorm sees each micro-batch alone, as it does per rank under DDP.
    model, dataset, criterion = _model(), RandomPoses(), FPDLoss(alpha=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loaders = [_loader(dataset, r) for r in range(WORLD)]
    step_losses = []
    for epoch in range(EPOCHS):
        for _, sampler in loaders:
            sampler.set_epoch(epoch)
        for batches in zip(*(loader for loader, _ in loaders), strict=True):
            optimizer.zero_grad()
            total = 0.0
            for batch in batches:
                x = step_inputs(batch, CODEC, torch.device("cpu"), cached_teacher=True)
                loss = criterion(model(x.images), x.teacher, x.target, x.target_weight, x.labelled)
                (loss.total / WORLD).backward()
                total += loss.total.item() / WORLD
            optimizer.step()
            step_losses.append(total)

    torch.testing.assert_close(ddp["curve"], torch.tensor(step_losses), rtol=1e-5, atol=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(ddp["state"][name], param.detach(), rtol=1e-4, atol=1e-5)
    # and the run did move the weights, so the comparison is not vacuous
    assert not torch.allclose(ddp["state"]["0.weight"], _model()[0].weight)
