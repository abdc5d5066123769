"""Complexity counts against hand-computed MACs, and the counter's lack of side effects."""

from __future__ import annotations

import torch
from torch import nn

from models import Complexity, complexity, create_from_preset


def test_hand_computed_macs():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # out 8x4x4: 8*3*3*3 * 16 = 3456
        nn.Conv2d(8, 8, 3, padding=1, groups=4),  # grouped weight [8,2,3,3] * 16 = 2304
        nn.BatchNorm2d(8),  # not counted
        nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, bias=False),  # HRNet rule: 512 * out 8x8 = 32768
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),  # 2560
    )
    cost = complexity(model, (8, 8))
    assert cost.macs == 3456 + 2304 + 32768 + 2560
    assert cost.gflops == cost.macs / 2**30
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert isinstance(cost, Complexity)


def test_buffers_are_not_parameters():
    model = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.BatchNorm2d(2))
    assert complexity(model, (4, 4)).params == 6 + 4  # conv weight + BN weight/bias; running stats excluded


def test_counting_leaves_the_model_untouched():
    model = create_from_preset("tiny_student_mpii").train()
    model.bn1.eval()  # a frozen BatchNorm inside a training model must stay frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cost = complexity(model, (128, 128))
    assert cost.params == 49_856
    assert model.training and model.layer1.training and not model.bn1.training
    assert all(torch.equal(before[k], v) and v.device.type == "cpu" for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())


def test_half_precision_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 1)).to(torch.bfloat16)
    assert complexity(model, (2, 2)).macs == 12 * 4
