"""Optimiser set-up: decoupled decay on conv/linear weights only, step schedule per epoch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.training.config import OptimConfig
from pipeline.training.schedule import build_optimizer, build_scheduler


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_weight_decay_skips_batchnorm_and_biases() -> None:
    model = _model()
    optimizer = build_optimizer(model, OptimConfig(optimizer="adamw", weight_decay=1e-4))
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, undecayed = optimizer.param_groups
    assert decayed["weight_decay"] == 1e-4 and undecayed["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert len(undecayed["params"]) == 4  # two conv biases, BN weight and bias


def test_adam_refuses_coupled_weight_decay() -> None:
    with pytest.raises(ValueError, match="adamw"):
        build_optimizer(_model(), OptimConfig(optimizer="adam", weight_decay=1e-4))


def test_step_schedule_of_the_coco_recipe() -> None:
    optimizer = build_optimizer(_model(), OptimConfig())
    scheduler = build_scheduler(optimizer, OptimConfig(lr=1e-3, milestones=(170, 200), gamma=0.1))
    lrs = []
    for _ in range(210):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[169] == pytest.approx(1e-3) and lrs[170] == pytest.approx(1e-4) and lrs[200] == pytest.approx(1e-5)
