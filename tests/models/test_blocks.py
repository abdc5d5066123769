"""The shared residual blocks compute exactly what torchvision's do (same names, same weights, same outputs)."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet as tv

from models.blocks import BasicBlock, Bottleneck, make_res_layer
from models.simple_baseline import PoseResNet, SimpleBaselineConfig


def _randomise(module: torch.nn.Module) -> None:
    # Non-trivial BatchNorm statistics so that an eval-mode mix-up of layers would show.
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor) * 0.2)


@pytest.mark.parametrize(("ours", "theirs", "inplanes", "planes"), [(BasicBlock, tv.BasicBlock, 8, 16),
                                                                    (Bottleneck, tv.Bottleneck, 16, 8)])
def test_blocks_match_torchvision(ours, theirs, inplanes, planes):
    torch.manual_seed(0)
    layer = make_res_layer(ours, inplanes, planes, num_blocks=2, stride=2).eval()
    _randomise(layer)
    downsample = torch.nn.Sequential(torch.nn.Conv2d(inplanes, planes * theirs.expansion, 1, 2, bias=False),
                                     torch.nn.BatchNorm2d(planes * theirs.expansion))
    reference = torch.nn.Sequential(theirs(inplanes, planes, 2, downsample), theirs(planes * theirs.expansion, planes))
    reference.load_state_dict(layer.state_dict(), strict=True)
    x = torch.randn(2, inplanes, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference.eval()(x))


def test_simple_baseline_backbone_matches_torchvision_resnet():
    torch.manual_seed(0)
    ours = PoseResNet(SimpleBaselineConfig(layers=(1, 1, 1, 1)), num_joints=3).eval()
    reference = tv.ResNet(tv.Bottleneck, [1, 1, 1, 1]).eval()
    _randomise(reference)
    ours.load_state_dict({**ours.state_dict(), **{k: v for k, v in reference.state_dict().items() if "fc." not in k}})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))
        features = ours.layer4(ours.layer3(ours.layer2(ours.layer1(ours.maxpool(ours.relu(ours.bn1(ours.conv1(x))))))))
    torch.testing.assert_close(features, expected)
