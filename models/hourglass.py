"""Stacked hourglass network of the official FPD code (Newell et al. 2016, as in bearpaw/pytorch-pose ``hg``).

The state_dict keys, their order and shapes match the released FPD teacher (8 stacks, 256 features) and student
(4 stacks, 128 features) checkpoints, and the unofficial FPD repository's ``hg`` models.

Width convention of the FPD code: ``num_features`` is the channel width inside each hourglass; the stem starts at
``num_features / 4`` channels and the residual blocks have a bottleneck of ``num_features / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HourglassConfig:
    """Architecture of a stacked hourglass.

    Attributes:
        num_stacks: number of hourglasses; the network returns one heatmap per stack.
        num_features: channel width inside the hourglasses (must be divisible by 4).
        num_blocks: residual blocks per hourglass cell.
        depth: number of 2x downsamplings inside each hourglass (4 in the paper; the feature map after the
            stem, input / 4, must be divisible by 2**depth).
    """

    num_stacks: int = 8
    num_features: int = 256
    num_blocks: int = 1
    depth: int = 4

    def __post_init__(self) -> None:
        if self.num_stacks < 1 or self.num_blocks < 1 or self.depth < 1:
            raise ValueError(f"num_stacks, num_blocks and depth must be >= 1, got {self}")
        if self.num_features % 4:
            raise ValueError(f"num_features must be divisible by 4, got {self.num_features}")


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (BN-ReLU-conv x3, convs with bias), ``inplanes -> 2 * planes`` channels."""

    expansion = 2

    def __init__(self, inplanes: int, planes: int, downsample: nn.Module | None = None) -> None:
        super().__init__()
        # Registration order (bn1, conv1, bn2, ...) is the checkpoint key order.
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, inplanes, H, W) -> (N, 2 * planes, H, W)."""
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


def _residual(inplanes: int, planes: int, num_blocks: int) -> nn.Sequential:
    """``num_blocks`` bottlenecks; a biased 1x1 conv projects the shortcut when the width changes."""
    out_channels = planes * PreActBottleneck.expansion
    downsample = nn.Sequential(nn.Conv2d(inplanes, out_channels, 1)) if inplanes != out_channels else None
    layers = [PreActBottleneck(inplanes, planes, downsample)]
    layers += [PreActBottleneck(out_channels, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


class Hourglass(nn.Module):
    """One hourglass: recursive down/up path of ``depth`` levels, all at ``2 * planes`` channels.

    ``hg[level]`` holds the residual stacks (skip branch, after pooling, after the inner hourglass) and, at the
    innermost level ``hg[0]``, a fourth one at the bottom. Level ``depth - 1`` is the outermost.
    """

    def __init__(self, planes: int, num_blocks: int, depth: int) -> None:
        super().__init__()
        self.depth = depth
        channels = planes * PreActBottleneck.expansion
        self.hg = nn.ModuleList(
            nn.ModuleList(_residual(channels, planes, num_blocks) for _ in range(4 if level == 0 else 3))
            for level in range(depth)
        )

    def _forward_level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        cells = self.hg[level]
        skip = cells[0](x)
        low = cells[1](F.max_pool2d(x, 2, stride=2))
        low = self._forward_level(level - 1, low) if level > 0 else cells[3](low)
        low = cells[2](low)
        # Nearest-neighbour 2x upsampling, as in the original code.
        return skip + F.interpolate(low, scale_factor=2.0, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W); H and W must be divisible by 2**depth."""
        return self._forward_level(self.depth - 1, x)


class HourglassNet(nn.Module):
    """Stacked hourglass with intermediate supervision: forward returns one heatmap tensor per stack.

    Args:
        config: the architecture.
        num_joints: number of output heatmaps K.
    """

    def __init__(self, config: HourglassConfig, num_joints: int) -> None:
        super().__init__()
        self.config = config
        stem = config.num_features // 4
        planes = config.num_features // 2
        channels = config.num_features
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _residual(stem, stem, 1)
        self.layer2 = _residual(2 * stem, 2 * stem, 1)
        self.layer3 = _residual(channels, planes, 1)
        self.maxpool = nn.MaxPool2d(2, stride=2)
        stacks = range(config.num_stacks)
        self.hg = nn.ModuleList(Hourglass(planes, config.num_blocks, config.depth) for _ in stacks)
        self.res = nn.ModuleList(_residual(channels, planes, config.num_blocks) for _ in stacks)
        self.fc = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
            for _ in stacks
        )
        self.score = nn.ModuleList(nn.Conv2d(channels, num_joints, 1) for _ in stacks)
        # Re-injection of features and predictions into the next stack (none after the last one).
        self.fc_ = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in stacks[:-1])
        self.score_ = nn.ModuleList(nn.Conv2d(num_joints, channels, 1) for _ in stacks[:-1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images (N, 3, H, W) -> ``num_stacks`` heatmaps, each (N, K, H / 4, W / 4); the last is the final one."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.maxpool(self.layer1(x))))
        outputs = []
        for i in range(self.config.num_stacks):
            y = self.fc[i](self.res[i](self.hg[i](x)))
            score = self.score[i](y)
            outputs.append(score)
            if i < self.config.num_stacks - 1:
                x = x + self.fc_[i](y) + self.score_[i](score)
        return outputs


def _create_hourglass(num_joints: int, **options: int) -> HourglassNet:
    """Build a stacked hourglass; ``options`` override fields of the FPD teacher default ``HourglassConfig()``."""
    return HourglassNet(HourglassConfig(**options), num_joints)


def hourglass(num_joints: int = 16, **options: int) -> HourglassNet:
    """Stacked hourglass; defaults to the FPD MPII teacher (8 stacks, 256 features, 1 block, depth 4)."""
    return _create_hourglass(num_joints, **options)
