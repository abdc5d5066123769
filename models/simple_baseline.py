"""SimpleBaseline (Xiao et al. 2018, ``lib/models/pose_resnet.py``): a ResNet, three deconvolutions, a 1x1 head.

The backbone keys are torchvision's ResNet keys (``conv1``, ``bn1``, ``layer1``..``layer4``), so ImageNet weights
load by name; the head keys (``deconv_layers.*``, ``final_layer``) match the released ``pose_resnet_*`` files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from models.blocks import Bottleneck, make_res_layer

# ConvTranspose2d (padding, output_padding) that exactly doubles the size for each supported kernel.
_DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}


@dataclass(frozen=True)
class SimpleBaselineConfig:
    """Architecture: bottleneck counts of the four ResNet stages, then the deconvolution head."""

    layers: tuple[int, int, int, int]
    deconv_filters: tuple[int, ...] = (256, 256, 256)
    deconv_kernels: tuple[int, ...] = (4, 4, 4)
    final_conv_kernel: int = 1

    def __post_init__(self) -> None:
        if len(self.deconv_filters) != len(self.deconv_kernels):
            raise ValueError("deconv_filters and deconv_kernels must have the same length")
        if any(k not in _DECONV_PADDING for k in self.deconv_kernels):
            raise ValueError(f"deconv kernels must be in {sorted(_DECONV_PADDING)}, got {self.deconv_kernels}")


RESNET_LAYERS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class PoseResNet(nn.Module):
    """ResNet backbone (stride 32) + bias-free stride-2 deconvolutions + 1x1 head.

    Args:
        config: the architecture.
        num_joints: number of output heatmaps K.
    """

    # torchvision's ResNet modules, which ImageNet files (resnet50-19c8e357.pth) initialise; ``fc`` is not used.
    backbone_layers = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, config: SimpleBaselineConfig, num_joints: int) -> None:
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = (64, 128, 256, 512)
        inplanes = 64
        for index, (planes, blocks) in enumerate(zip(widths, config.layers, strict=True), start=1):
            setattr(self, f"layer{index}", make_res_layer(Bottleneck, inplanes, planes, blocks, 1 if index == 1 else 2))
            inplanes = planes * Bottleneck.expansion
        head: list[nn.Module] = []
        for filters, kernel in zip(config.deconv_filters, config.deconv_kernels, strict=True):
            padding, output_padding = _DECONV_PADDING[kernel]
            head += [
                nn.ConvTranspose2d(
                    inplanes, filters, kernel, stride=2, padding=padding, output_padding=output_padding, bias=False
                ),
                nn.BatchNorm2d(filters),
                nn.ReLU(inplace=True),
            ]
            inplanes = filters
        self.deconv_layers = nn.Sequential(*head)
        kernel = config.final_conv_kernel
        self.final_layer = nn.Conv2d(inplanes, num_joints, kernel, padding=kernel // 2)
        self._init_head()

    def _init_head(self) -> None:
        # The head starts small (as in the reference code) so that early heatmaps are near zero.
        for module in [*self.deconv_layers, self.final_layer]:
            if isinstance(module, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) -> heatmaps (N, K, H / 4, W / 4) with the default three deconvolutions."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_layer(self.deconv_layers(x))


def _create_simple_baseline(depth: int, num_joints: int, **options: object) -> PoseResNet:
    """SimpleBaseline on ResNet-``depth``; ``options`` override the head fields of ``SimpleBaselineConfig``."""
    return PoseResNet(replace(SimpleBaselineConfig(layers=RESNET_LAYERS[depth]), **options), num_joints)


def resnet50(num_joints: int = 17, **options: object) -> PoseResNet:
    """SimpleBaseline ResNet-50 (the reference 256x192 COCO model: 34.0M parameters)."""
    return _create_simple_baseline(50, num_joints, **options)


def resnet101(num_joints: int = 17, **options: object) -> PoseResNet:
    """SimpleBaseline ResNet-101."""
    return _create_simple_baseline(101, num_joints, **options)


def resnet152(num_joints: int = 17, **options: object) -> PoseResNet:
    """SimpleBaseline ResNet-152."""
    return _create_simple_baseline(152, num_joints, **options)
