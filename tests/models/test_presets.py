"""Presets: the paper's models with their published sizes, the tiny CPU ones, and their conventions."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import models
from models.complexity import trace_macs
from models.joints import get_joint_set

EXPECTED_NAMES = [
    "hg8_256", "hg4_128", "hrnet_w32_256x192", "hrnet_w48_256x192", "resnet50_256x192", "hrnet_w32_256x256",
    "hrnet_w48_256x256", "tiny_teacher_mpii", "tiny_student_mpii", "tiny_teacher_coco", "tiny_student_coco",
]  # fmt: skip

# Published / reference figures (params, GFLOPs at the preset's input size).
PUBLISHED = {
    "hrnet_w32_256x192": (28_536_113, 7.120),
    "hrnet_w48_256x192": (63_595_745, 14.614),
    "hg8_256": (25_594_624, 26.165),
    "hg4_128": (3_287_936, 3.639),
    "resnet50_256x192": (33_999_697, 8.991),
}


def _meta(preset: models.ModelPreset) -> torch.nn.Module:
    with torch.device("meta"):
        return models.create_from_preset(preset)


def test_names_and_lookup():
    assert models.list_presets() == EXPECTED_NAMES
    assert models.get_preset("hg4_128").name == "hg4_128"
    with pytest.raises(ValueError, match="unknown preset 'hg2'"):
        models.get_preset("hg2")


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_output_size_and_published_figures(name):
    preset = models.get_preset(name)
    model = _meta(preset)
    macs, out = trace_macs(model, preset.input_hw)
    if name in PUBLISHED:
        assert (sum(p.numel() for p in model.parameters()), round(macs / 2**30, 3)) == PUBLISHED[name]
    final = out[-1] if isinstance(out, list) else out
    width, height = preset.heatmap_size
    assert tuple(final.shape) == (1, preset.num_joints, height, width)
    assert preset.input_size == (4 * width, 4 * height)
    assert preset.num_joints == get_joint_set(preset.joint_set).num_joints


def test_conventions():
    by_name = {n: models.get_preset(n) for n in EXPECTED_NAMES}
    bgr = {n for n, p in by_name.items() if p.color_order == "BGR"}
    assert bgr == {"hg8_256", "hg4_128", "resnet50_256x192"}  # FPD hourglass and HRNet res50 configs: COLOR_RGB false
    assert by_name["hrnet_w32_256x192"].input_size == (192, 256)  # (width, height); the name reads H x W
    assert by_name["hrnet_w32_256x192"].input_hw == (256, 192)
    tiny_coco = by_name["tiny_student_coco"]
    assert tiny_coco.input_size == (96, 128) and tiny_coco.heatmap_size == (24, 32)  # portrait, as COCO 192x256
    assert by_name["tiny_teacher_mpii"].options == {"num_stacks": 2, "num_features": 64, "num_blocks": 1, "depth": 3}
    assert by_name["tiny_student_mpii"].options["num_stacks"] == 1
    assert by_name["hg4_128"].joint_set == "mpii" and by_name["resnet50_256x192"].joint_set == "coco"


def test_presets_are_immutable():
    preset = models.get_preset("hg8_256")
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.input_size = (1, 1)  # type: ignore[misc]
    options = preset.options
    options["num_stacks"] = 1
    assert models.get_preset("hg8_256").options["num_stacks"] == 8
    with pytest.raises(ValueError, match="color_order"):
        dataclasses.replace(preset, color_order="rgb")


def test_create_from_preset_accepts_a_name_and_builds_real_tiny_models():
    torch.manual_seed(0)
    model = models.create_from_preset("tiny_student_coco").eval()
    preset = models.get_preset("tiny_student_coco")
    with torch.no_grad():
        out = model(torch.randn(1, 3, *preset.input_hw))
    assert len(out) == 1 and out[0].shape == (1, 17, 32, 24)
