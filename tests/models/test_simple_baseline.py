"""SimpleBaseline: head arithmetic and the torchvision ResNet naming of its backbone."""

from __future__ import annotations

import torch
import torchvision

from models.simple_baseline import RESNET_LAYERS, PoseResNet, SimpleBaselineConfig, resnet50


def test_backbone_keys_are_torchvision_resnet_keys():
    # The ImageNet initialisation loads torchvision's files by name: every backbone key must exist with its shape.
    with torch.device("meta"):
        ours = resnet50(num_joints=17).state_dict()
        reference = torchvision.models.resnet50().state_dict()
    backbone = {k: tuple(v.shape) for k, v in reference.items() if not k.startswith("fc.")}
    head = ("deconv_layers", "final_layer")
    assert {k: tuple(v.shape) for k, v in ours.items() if not k.startswith(head)} == backbone


def test_small_resnet_forward_and_deconv_shapes():
    torch.manual_seed(0)
    model = PoseResNet(SimpleBaselineConfig(layers=(1, 1, 1, 1), deconv_filters=(16, 16, 16)), num_joints=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 32))
    assert out.shape == (1, 2, 16, 8)
    deconv = model.deconv_layers[0]
    assert deconv.bias is None and deconv.kernel_size == (4, 4) and deconv.stride == (2, 2)


def test_depths():
    assert RESNET_LAYERS[101] == (3, 4, 23, 3) and RESNET_LAYERS[152] == (3, 8, 36, 3)
