"""The FPD stacked hourglass on small real tensors: structure, forward, intermediate supervision."""

from __future__ import annotations

import pytest
import torch

from models.hourglass import HourglassConfig, HourglassNet


@pytest.fixture(scope="module")
def tiny() -> HourglassNet:
    torch.manual_seed(0)
    return HourglassNet(HourglassConfig(num_stacks=2, num_features=32, num_blocks=2, depth=3), num_joints=4).eval()


def test_forward_returns_one_heatmap_per_stack(tiny):
    with torch.no_grad():
        out = tiny(torch.randn(2, 3, 64, 32))
    assert isinstance(out, list) and len(out) == 2
    assert all(o.shape == (2, 4, 16, 8) for o in out)
    # Each stack has its own head, so the intermediate and final predictions differ.
    assert not torch.allclose(out[0], out[1])


def test_widths_follow_the_fpd_convention(tiny):
    assert tiny.conv1.out_channels == 8  # num_features / 4
    assert tiny.layer3[0].conv3.out_channels == 32  # num_features
    assert tiny.hg[0].hg[0][0][0].conv1.out_channels == 16  # bottleneck: num_features / 2
    assert len(tiny.hg[0].hg) == 3 and len(tiny.hg[0].hg[0]) == 4 and len(tiny.hg[0].hg[1]) == 3
    assert len(tiny.hg[0].hg[0][0]) == 2  # num_blocks
    assert len(tiny.fc_) == len(tiny.score_) == 1  # no re-injection after the last stack


def test_the_last_stack_depends_on_the_first_through_reinjection(tiny):
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    out = tiny(x)
    out[-1].sum().backward()
    assert tiny.score_[0].weight.grad is not None and tiny.score_[0].weight.grad.abs().sum() > 0
    tiny.zero_grad(set_to_none=True)


def test_depth_must_fit_the_feature_map():
    model = HourglassNet(HourglassConfig(num_stacks=1, num_features=16, depth=4), num_joints=2).eval()
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 3, 96, 96))  # 24x24 features cannot be halved 4 times and added back


@pytest.mark.parametrize("bad", [{"num_stacks": 0}, {"depth": 0}, {"num_features": 18}])
def test_invalid_config(bad):
    with pytest.raises(ValueError):
        HourglassConfig(**bad)


def test_forward_follows_the_reference_wiring():
    """Written out by hand from the official FPD forward: which cell does what, level order, re-injection."""
    torch.manual_seed(0)
    net = HourglassNet(HourglassConfig(num_stacks=2, num_features=16, num_blocks=1, depth=2), num_joints=3).eval()
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if "running_var" in name:
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.3)

    def up(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest")

    def pool(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.max_pool2d(t, 2, 2)

    def hourglass(cells, t: torch.Tensor) -> torch.Tensor:
        outer, inner = cells[1], cells[0]  # hg[depth - 1] is the outermost level, hg[0] holds the bottom cell
        low1 = outer[1](pool(t))
        low2 = inner[0](low1) + up(inner[2](inner[3](inner[1](pool(low1)))))
        return outer[0](t) + up(outer[2](low2))

    def block(b, t: torch.Tensor) -> torch.Tensor:  # pre-activation bottleneck
        out = b.conv1(torch.relu(b.bn1(t)))
        out = b.conv2(torch.relu(b.bn2(out)))
        out = b.conv3(torch.relu(b.bn3(out)))
        return out + (t if b.downsample is None else b.downsample(t))

    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        t = block(net.layer1[0], torch.relu(net.bn1(net.conv1(x))))
        t = block(net.layer3[0], block(net.layer2[0], pool(t)))
        expected = []
        for i in range(2):
            y = net.fc[i](block(net.res[i][0], hourglass(net.hg[i].hg, t)))
            expected.append(net.score[i](y))
            if i == 0:
                t = t + net.fc_[0](y) + net.score_[0](expected[-1])
        outputs = net(x)
    for out, ref in zip(outputs, expected, strict=True):
        torch.testing.assert_close(out, ref)
