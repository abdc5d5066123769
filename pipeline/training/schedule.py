"""Optimiser and learning-rate schedule of a recipe (the paper's: Adam, step decay at fixed epochs).

Weight decay, when a recipe asks for it, is decoupled (AdamW) and applies only to conv/linear weights: BatchNorm
weights and every bias (all 1-D parameters) are left undecayed, as in the torchvision references.
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


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam (``weight_decay`` must be 0: Adam's L2 decay is coupled to the gradient scale) or AdamW."""
    if cfg.optimizer == "adam":
        if cfg.weight_decay:
            raise ValueError("optim.weight_decay with Adam is L2-coupled; use optimizer: adamw for decoupled decay")
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """Step decay by ``gamma`` at the ``milestones`` epochs (stepped once per epoch)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
