"""Optimiser and learning-rate schedule of a recipe (the paper's: Adam, step decay at fixed epochs).

Weight decay, when a recipe asks for it, is decoupled (AdamW) and applies only to conv/linear weights: BatchNorm
weights and every bias (all 1-D parameters) are left undecayed, as in the torchvision references.

HRNet's ``train.py`` and FPD's ``fpd_train.py`` call ``lr_scheduler.step()`` at the *start* of every epoch, so in
0-based epoch ``e`` their rate has already been stepped ``e + 1`` times: the decay of ``LR_STEP`` 170 is in effect
from epoch 169. Our loop steps after each epoch (PyTorch's documented order), so the scheduler is built with every
milestone one epoch earlier; the rate of each epoch is then HRNet's (pinned by ``tests/training/test_schedule.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.training.config import OptimConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group (ndim > 1) and an undecayed one (BN weights, biases)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """Adam (``weight_decay`` must be 0: Adam's L2 decay is coupled to the gradient scale) or AdamW, at ``lr``
    (the recipe's rate, rescaled by ``pipeline.training.recipe.resolve_recipe`` when it asks for it)."""
    if cfg.optimizer == "adam":
        if cfg.weight_decay:
            raise ValueError("optim.weight_decay with Adam is L2-coupled; use optimizer: adamw for decoupled decay")
        return torch.optim.Adam(model.parameters(), lr=lr)
    return torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=lr)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """Step decay by ``gamma`` at HRNet's epochs (see the module docstring); step it once after each epoch."""
    # MultiStepLR counts repeated milestones: [1, 1] decays twice at once, as HRNet's Counter does.
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[m - 1 for m in cfg.milestones], gamma=cfg.gamma)


def lr_per_epoch(cfg: OptimConfig, lr: float) -> list[float]:
    """The rate of every epoch, from the training scheduler itself (what the loop's log will show)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = build_scheduler(optimizer, cfg)
    rates = []
    for _ in range(cfg.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates
