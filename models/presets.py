"""Named model presets: architecture + options, joint set, input/heatmap size and colour order, in one record.

Sizes are ``(width, height)``. Preset names follow the field's ``HxW`` habit (``hrnet_w32_256x192`` is 256 high,
192 wide). The FPD hourglass checkpoints were trained on BGR images (OpenCV loading), the HRNet and SimpleBaseline
ones on RGB; the colour swap happens once, in ``pipeline.data.images.to_tensor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from torch import nn

from models.joints import JOINT_SETS, get_joint_set
from models.registry import create_model


@dataclass(frozen=True)
class ModelPreset:
    """Everything needed to build a network and feed it.

    Attributes:
        name: preset name.
        arch: a ``models.list_models()`` name.
        arch_options: ``(key, value)`` pairs passed to ``create_model`` (a tuple, so the preset stays hashable).
        joint_set: "mpii" (16 joints) or "coco" (17 joints).
        input_size: network input (width, height) in pixels.
        heatmap_size: output heatmap (width, height).
        color_order: "RGB" or "BGR", the channel order the weights expect.
        description: one line for listings.
    """

    name: str
    arch: str
    arch_options: tuple[tuple[str, object], ...]
    joint_set: str
    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    color_order: str
    description: str = ""

    def __post_init__(self) -> None:
        if self.joint_set not in JOINT_SETS:
            raise ValueError(f"preset {self.name}: joint_set must be one of {sorted(JOINT_SETS)}")
        if self.color_order not in ("RGB", "BGR"):
            raise ValueError(f"preset {self.name}: color_order must be 'RGB' or 'BGR'")

    @property
    def num_joints(self) -> int:
        """K: 16 for MPII, 17 for COCO."""
        return get_joint_set(self.joint_set).num_joints

    @property
    def options(self) -> dict[str, object]:
        """``arch_options`` as a fresh dict (mutating it does not touch the preset)."""
        return dict(self.arch_options)

    @property
    def input_aspect(self) -> float:
        """Input width / height: the aspect every person box is fitted to before cropping (HRNet's rule)."""
        return self.input_size[0] / self.input_size[1]

    @property
    def input_hw(self) -> tuple[int, int]:
        """``input_size`` as (height, width), the order of image tensors."""
        return self.input_size[1], self.input_size[0]


def _hourglass(stacks: int, features: int, depth: int = 4) -> tuple[tuple[str, object], ...]:
    return (("num_stacks", stacks), ("num_features", features), ("num_blocks", 1), ("depth", depth))


_PRESET_LIST = (
    ModelPreset("hg8_256", "hourglass", _hourglass(8, 256), "mpii", (256, 256), (64, 64), "BGR",
                "FPD MPII teacher: 8-stack hourglass, 256 features"),
    ModelPreset("hg4_128", "hourglass", _hourglass(4, 128), "mpii", (256, 256), (64, 64), "BGR",
                "FPD MPII student: 4-stack hourglass, 128 features"),
    ModelPreset("hrnet_w32_256x192", "hrnet_w32", (), "coco", (192, 256), (48, 64), "RGB",
                "FPD COCO student: pose HRNet-W32"),
    ModelPreset("hrnet_w48_256x192", "hrnet_w48", (), "coco", (192, 256), (48, 64), "RGB",
                "FPD COCO teacher: pose HRNet-W48"),
    ModelPreset("resnet50_256x192", "resnet50", (), "coco", (192, 256), (48, 64), "BGR",
                "SimpleBaseline ResNet-50, COCO"),
    ModelPreset("hrnet_w32_256x256", "hrnet_w32", (), "mpii", (256, 256), (64, 64), "RGB",
                "pose HRNet-W32, MPII"),
    ModelPreset("hrnet_w48_256x256", "hrnet_w48", (), "mpii", (256, 256), (64, 64), "RGB",
                "pose HRNet-W48, MPII"),
    # CPU-sized hourglasses for tests and the demo. COCO ones are portrait like 192x256; depth 3 so that the 24x32
    # (w x h) heatmap halves cleanly three times.
    ModelPreset("tiny_teacher_mpii", "hourglass", _hourglass(2, 64, depth=3), "mpii", (128, 128), (32, 32), "RGB",
                "CPU demo teacher: 2-stack hourglass, 64 features, depth 3"),
    ModelPreset("tiny_student_mpii", "hourglass", _hourglass(1, 32, depth=3), "mpii", (128, 128), (32, 32), "RGB",
                "CPU demo student: 1-stack hourglass, 32 features, depth 3"),
    ModelPreset("tiny_teacher_coco", "hourglass", _hourglass(2, 64, depth=3), "coco", (96, 128), (24, 32), "RGB",
                "CPU demo teacher: 2-stack hourglass, 64 features, depth 3"),
    ModelPreset("tiny_student_coco", "hourglass", _hourglass(1, 32, depth=3), "coco", (96, 128), (24, 32), "RGB",
                "CPU demo student: 1-stack hourglass, 32 features, depth 3"),
)

_PRESETS: MappingProxyType[str, ModelPreset] = MappingProxyType({p.name: p for p in _PRESET_LIST})


def list_presets() -> list[str]:
    """Preset names in definition order (the paper's models first, then the tiny CPU ones)."""
    return list(_PRESETS)


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name``; raises ValueError listing the known names otherwise."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(_PRESETS)}")
    return _PRESETS[name]


def create_from_preset(preset: ModelPreset | str) -> nn.Module:
    """A freshly initialised network for ``preset`` (a ``ModelPreset`` or its name)."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    return create_model(preset.arch, num_joints=preset.num_joints, **preset.options)
