"""Pose HRNet (Sun et al. 2019, ``lib/models/pose_hrnet.py`` of deep-high-resolution-net.pytorch).

Parallel branches at strides 4, 8, 16, 32 exchange information in every module; the heatmaps come from the
highest-resolution branch through a final 1x1 conv. The state_dict keys, their order and shapes match the
released ``pose_hrnet_w32/w48`` checkpoints, and the backbone names match the ImageNet HRNet files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from models.blocks import BasicBlock, Bottleneck, conv_bn, make_res_layer

_BLOCKS: dict[str, type[BasicBlock | Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


@dataclass(frozen=True)
class StageConfig:
    """One HRNet stage: ``num_modules`` multi-resolution modules over ``len(num_channels)`` branches."""

    num_modules: int
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]
    block: str = "basic"

    @property
    def num_branches(self) -> int:
        return len(self.num_channels)


@dataclass(frozen=True)
class HRNetConfig:
    """Architecture of a pose HRNet: the stem (two stride-2 3x3 convs + 4 bottlenecks) then stages 2-4."""

    stages: tuple[StageConfig, ...]
    final_conv_kernel: int = 1


def hrnet_config(width: int) -> HRNetConfig:
    """The published pose HRNet-W``width`` (stage modules 1/4/3, 4 basic blocks per branch)."""
    channels = tuple(width * 2**i for i in range(4))
    return HRNetConfig(
        stages=tuple(
            StageConfig(num_modules=modules, num_blocks=(4,) * branches, num_channels=channels[:branches])
            for modules, branches in ((1, 2), (4, 3), (3, 4))
        )
    )


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn(in_channels, out_channels, 3, stride), nn.ReLU(inplace=True))


class HighResolutionModule(nn.Module):
    """Branches of residual blocks, then a fusion that sums every branch, resized, into every output branch.

    Args:
        in_channels: input width of each branch.
        stage: block type, blocks and widths per branch.
        multi_scale_output: fuse into every branch (True) or only into the highest-resolution one.
    """

    def __init__(self, in_channels: tuple[int, ...], stage: StageConfig, multi_scale_output: bool = True) -> None:
        super().__init__()
        block = _BLOCKS[stage.block]
        if len(in_channels) != stage.num_branches or len(stage.num_blocks) != stage.num_branches:
            raise ValueError(f"branch count mismatch: in_channels={in_channels}, stage={stage}")
        self.branches = nn.ModuleList(
            make_res_layer(block, cin, planes, blocks)
            for cin, planes, blocks in zip(in_channels, stage.num_channels, stage.num_blocks, strict=True)
        )
        self.out_channels = tuple(c * block.expansion for c in stage.num_channels)
        num_out = stage.num_branches if multi_scale_output else 1
        self.fuse_layers = (
            nn.ModuleList(
                nn.ModuleList(self._fuse_path(src, dst) for src in range(stage.num_branches)) for dst in range(num_out)
            )
            if stage.num_branches > 1
            else None
        )
        self.relu = nn.ReLU(inplace=True)

    def _fuse_path(self, src: int, dst: int) -> nn.Module | None:
        """Resize branch ``src`` to branch ``dst``: 1x1 conv + nearest upsampling, or a chain of stride-2 3x3s."""
        channels = self.out_channels
        if src == dst:
            return None
        if src > dst:
            return nn.Sequential(*conv_bn(channels[src], channels[dst], 1), nn.Upsample(scale_factor=2 ** (src - dst)))
        # Each step halves the size; intermediate steps keep the source width and end with a ReLU, the last not.
        steps = [_conv_bn_relu(channels[src], channels[src], 2) for _ in range(dst - src - 1)]
        steps.append(conv_bn(channels[src], channels[dst], 3, 2))
        return nn.Sequential(*steps)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Branch features [(N, C_b, H / 2**b, W / 2**b)] -> the same list (or only its first entry)."""
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        if self.fuse_layers is None:
            return xs
        fused = []
        for paths in self.fuse_layers:
            total = xs[0] if paths[0] is None else paths[0](xs[0])
            for path, x in zip(paths[1:], xs[1:], strict=True):
                total = total + (x if path is None else path(x))
            fused.append(self.relu(total))
        return fused


class PoseHighResolutionNet(nn.Module):
    """Pose HRNet returning heatmaps (N, K, H / 4, W / 4) from the stride-4 branch.

    Args:
        config: the architecture.
        num_joints: number of output heatmaps K.
    """

    # HRNet's PRETRAINED_LAYERS: the modules an ImageNet HRNet file initialises (the rest is the pose head).
    backbone_layers = ("conv1", "bn1", "conv2", "bn2", "layer1", "transition1", "stage2", "transition2", "stage3",
                       "transition3", "stage4")  # fmt: skip

    def __init__(self, config: HRNetConfig, num_joints: int) -> None:
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_res_layer(Bottleneck, 64, 64, 4)
        channels: tuple[int, ...] = (64 * Bottleneck.expansion,)
        for index, stage in enumerate(config.stages, start=1):
            target = tuple(c * _BLOCKS[stage.block].expansion for c in stage.num_channels)
            setattr(self, f"transition{index}", self._transition(channels, target))
            modules = []
            for m in range(stage.num_modules):
                # Only the very last module of the network collapses to the high-resolution branch.
                last = index == len(config.stages) and m == stage.num_modules - 1
                modules.append(HighResolutionModule(channels if m else target, stage, multi_scale_output=not last))
                channels = modules[-1].out_channels
            setattr(self, f"stage{index + 1}", nn.Sequential(*modules))
        kernel = config.final_conv_kernel
        self.final_layer = nn.Conv2d(channels[0], num_joints, kernel, padding=kernel // 2)
        self._init_weights()

    @staticmethod
    def _transition(previous: tuple[int, ...], target: tuple[int, ...]) -> nn.ModuleList:
        """Adapt existing branches whose width changes (3x3 conv) and spawn new ones from the lowest branch."""
        layers: list[nn.Module | None] = []
        for i, out_channels in enumerate(target):
            if i < len(previous):
                layers.append(_conv_bn_relu(previous[i], out_channels, 1) if previous[i] != out_channels else None)
            else:
                # A new branch i comes from the last existing one through (i + 1 - len(previous)) stride-2 convs.
                num_steps = i + 1 - len(previous)
                widths = [previous[-1]] * num_steps + [out_channels]
                layers.append(nn.Sequential(*(_conv_bn_relu(widths[s], widths[s + 1], 2) for s in range(num_steps))))
        return nn.ModuleList(layers)

    def _init_weights(self) -> None:
        # HRNet's initialisation: small normal convs, unit BN; it matters when training without ImageNet weights.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) -> heatmaps (N, K, H / 4, W / 4); H and W must be divisible by 32."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        branches = [self.layer1(x)]
        for index in range(1, len(self.config.stages) + 1):
            transition = getattr(self, f"transition{index}")
            inputs = []
            for i, layer in enumerate(transition):
                # New branches grow from the lowest-resolution existing branch.
                source = branches[min(i, len(branches) - 1)]
                inputs.append(source if layer is None else layer(source))
            branches = getattr(self, f"stage{index + 1}")(inputs)
        return self.final_layer(branches[0])


def _create_hrnet(width: int, num_joints: int, **options: int) -> PoseHighResolutionNet:
    """Pose HRNet-W``width``; ``options`` may set ``final_conv_kernel`` (1 or 3)."""
    return PoseHighResolutionNet(replace(hrnet_config(width), **options), num_joints)


def hrnet_w18(num_joints: int = 17, **options: int) -> PoseHighResolutionNet:
    """Pose HRNet-W18 (branch widths 18/36/72/144)."""
    return _create_hrnet(18, num_joints, **options)


def hrnet_w32(num_joints: int = 17, **options: int) -> PoseHighResolutionNet:
    """Pose HRNet-W32 (branch widths 32/64/128/256), the FPD COCO student."""
    return _create_hrnet(32, num_joints, **options)


def hrnet_w48(num_joints: int = 17, **options: int) -> PoseHighResolutionNet:
    """Pose HRNet-W48 (branch widths 48/96/192/384), the FPD COCO teacher."""
    return _create_hrnet(48, num_joints, **options)
