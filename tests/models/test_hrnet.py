"""Pose HRNet on small real tensors: branch structure, fusion, initialisation."""

from __future__ import annotations

import pytest
import torch

from models.hrnet import PoseHighResolutionNet, hrnet_config


@pytest.fixture(scope="module")
def w18() -> PoseHighResolutionNet:
    torch.manual_seed(0)
    return PoseHighResolutionNet(hrnet_config(18), num_joints=3).eval()


def test_forward_shape(w18):
    with torch.no_grad():
        out = w18(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 3, 16, 24)
    assert torch.isfinite(out).all()


def test_branch_widths_and_collapse_to_one_output(w18):
    assert hrnet_config(18).stages[-1].num_channels == (18, 36, 72, 144)
    assert [len(s) for s in (w18.stage2, w18.stage3, w18.stage4)] == [1, 4, 3]
    assert len(w18.stage4[0].fuse_layers) == 4  # all branches out
    assert len(w18.stage4[-1].fuse_layers) == 1  # only the stride-4 branch feeds the head
    assert w18.stage4[-1].out_channels[0] == 18


def test_low_resolution_branch_reaches_the_output(w18):
    """Fusion works: perturbing the stride-32 branch's weights changes the heatmaps."""
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = w18(x)
        branch = w18.stage4[-1].branches[3]
        saved = branch[0].conv1.weight.clone()
        branch[0].conv1.weight.mul_(50)
        after = w18(x)
        branch[0].conv1.weight.copy_(saved)
    # Outputs are ~1e-11 with HRNet's small initialisation: compare relatively.
    assert not torch.allclose(before, after, rtol=1e-3, atol=0)


def test_hrnet_initialisation(w18):
    assert w18.conv1.weight.std().item() < 0.01  # normal(0, 0.001) as in the reference code
    assert torch.all(w18.bn1.weight == 1) and torch.all(w18.final_layer.bias == 0)
