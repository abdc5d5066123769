"""Pose HRNet: the published structure (meta tensors) and a narrow real one for forward and fusion."""

from __future__ import annotations

import pytest
import torch

from models.hrnet import HRNetConfig, PoseHighResolutionNet, StageConfig, hrnet_config


def _narrow() -> HRNetConfig:
    """W8 with one module and one block per branch: every code path of the real model, a fraction of its cost."""
    widths = (8, 16, 32, 64)
    return HRNetConfig(
        stages=tuple(StageConfig(1, (1,) * n, widths[:n]) for n in (2, 3, 4)),
    )


@pytest.fixture(scope="module")
def narrow() -> PoseHighResolutionNet:
    torch.manual_seed(0)
    return PoseHighResolutionNet(_narrow(), num_joints=3).eval()


def test_forward_shape(narrow):
    with torch.no_grad():
        out = narrow(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 3, 16, 24)
    assert torch.isfinite(out).all()


def test_published_w18_structure():
    with torch.device("meta"):
        w18 = PoseHighResolutionNet(hrnet_config(18), num_joints=3)
    assert hrnet_config(18).stages[-1].num_channels == (18, 36, 72, 144)
    assert [len(s) for s in (w18.stage2, w18.stage3, w18.stage4)] == [1, 4, 3]
    assert len(w18.stage4[0].fuse_layers) == 4  # all branches out
    assert len(w18.stage4[-1].fuse_layers) == 1  # only the stride-4 branch feeds the head
    assert w18.stage4[-1].out_channels[0] == 18
    assert tuple(w18.final_layer.weight.shape) == (3, 18, 1, 1)


def test_low_resolution_branch_reaches_the_output(narrow):
    """Fusion works: scaling the stride-32 -> stride-4 fusion path changes the heatmaps."""
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = narrow(x)
        conv = narrow.stage4[-1].fuse_layers[0][3][0]
        assert conv.in_channels == 64 and conv.out_channels == 8
        saved = conv.weight.clone()
        conv.weight.mul_(1000)
        after = narrow(x)
        conv.weight.copy_(saved)
    # Outputs are ~1e-11 with HRNet's small initialisation: compare relatively.
    assert not torch.allclose(before, after, rtol=1e-3, atol=0)


def test_hrnet_initialisation(narrow):
    assert narrow.conv1.weight.std().item() < 0.01  # normal(0, 0.001) as in the reference code
    assert torch.all(narrow.bn1.weight == 1) and torch.all(narrow.final_layer.bias == 0)
