"""Optimiser set-up: decoupled decay on conv/linear weights only, step schedule per epoch."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.training.config import OptimConfig
from pipeline.training.loop import read_log, train
from pipeline.training.schedule import build_optimizer, lr_per_epoch
from tests.training.conftest import tiny_recipe


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_weight_decay_skips_batchnorm_and_biases() -> None:
    model = _model()
    optimizer = build_optimizer(model, OptimConfig(optimizer="adamw", weight_decay=1e-4), lr=1e-3)
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, undecayed = optimizer.param_groups
    assert decayed["weight_decay"] == 1e-4 and undecayed["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert len(undecayed["params"]) == 4  # two conv biases, BN weight and bias


def test_adam_refuses_coupled_weight_decay() -> None:
    with pytest.raises(ValueError, match="adamw"):
        build_optimizer(_model(), OptimConfig(optimizer="adam", weight_decay=1e-4), lr=1e-3)


def _hrnet_rates(lr: float, lr_step: list[int], factor: float, epochs: int) -> list[float]:
    """HRNet's ``tools/train.py`` (and FPD's ``fpd_train.py``): MultiStepLR(LR_STEP, LR_FACTOR), stepped at the
    start of every epoch, before that epoch trains; the rate each epoch trains with."""
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, lr_step, factor, last_epoch=-1)
    rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HRNet's order is the one PyTorch warns about
        for _ in range(epochs):
            scheduler.step()
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
    return rates


@pytest.mark.parametrize(
    ("lr", "lr_step", "epochs"),
    [(1e-3, [170, 200], 210),  # HRNet COCO w32/w48_256x192_adam_lr1e-3.yaml, FPD's COCO script
     (2.5e-4, [90, 120], 140),  # FPD MPII hourglass (hg_template.yaml)
     (1e-3, [1, 3, 3], 5)],  # edge cases: a decay from the first epoch, a repeated step
)  # fmt: skip
def test_rate_of_every_epoch_equals_hrnets_scheduler(lr: float, lr_step: list[int], epochs: int) -> None:
    ours = lr_per_epoch(OptimConfig(lr=lr, milestones=tuple(lr_step), epochs=epochs, gamma=0.1), lr)
    assert ours == _hrnet_rates(lr, lr_step, 0.1, epochs)
    if lr_step[0] == 170:
        assert ours[168] == lr and ours[169] == pytest.approx(lr * 0.1)  # one epoch before 170, as HRNet


def test_training_loop_logs_hrnets_rates(synthetic_mpii: Path, tmp_path: Path) -> None:
    """The loop's own per-epoch rate (log.jsonl) is HRNet's, not only the helper's."""
    result = train(tiny_recipe(synthetic_mpii, tmp_path / "run", optim={"epochs": 4, "milestones": [2, 3]},
                               data={"batch_size": 8}))  # fmt: skip
    assert [r["lr"] for r in read_log(result.log)] == pytest.approx(_hrnet_rates(1e-3, [2, 3], 0.1, 4))
