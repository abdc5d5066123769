"""The model factory: names, options, errors, and that no call leaks configuration into the next."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import models
from models.hourglass import HourglassConfig

ALL_NAMES = ["hourglass", "hrnet_w18", "hrnet_w32", "hrnet_w48", "resnet101", "resnet152", "resnet50"]


def test_list_models():
    assert models.list_models() == ALL_NAMES


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_registered_model_maps_images_to_quarter_size_heatmaps(name):
    # Meta device: shapes only, so even ResNet-152 costs a fraction of a second.
    with torch.device("meta"):
        model = models.create_model(name, num_joints=5).eval()
        out = model(torch.empty(2, 3, 128, 64))
    outputs = out if isinstance(out, list) else [out]
    assert isinstance(out, list) == (name == "hourglass")
    assert all(tuple(o.shape) == (2, 5, 32, 16) for o in outputs)


def test_unknown_name_and_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match=r"unknown model 'hrnet_w64'.*hrnet_w32"):
        models.create_model("hrnet_w64", num_joints=17)
    with pytest.raises(ValueError, match="num_stack"):
        models.create_model("hourglass", num_joints=16, num_stack=4)
    with pytest.raises(ValueError, match="num_joints"):
        models.create_model("hourglass", num_joints=0)
    with pytest.raises(ValueError, match="divisible by 4"):
        models.create_model("hourglass", num_joints=16, num_features=30)


def test_options_never_leak_into_later_defaults():
    # timm's HRNet once mutated a module-level dict: a non-default call changed every later default model.
    with torch.device("meta"):
        small = models.create_model("hourglass", num_joints=16, num_stacks=2, num_features=64)
        default = models.create_model("hourglass", num_joints=16)
    assert small.config.num_stacks == 2 and len(small.hg) == 2
    assert default.config == HourglassConfig() and len(default.hg) == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        default.config.num_stacks = 1  # type: ignore[misc]


def test_hrnet_final_conv_kernel_option():
    with torch.device("meta"):
        model = models.create_model("hrnet_w18", num_joints=16, final_conv_kernel=3)
    assert tuple(model.final_layer.weight.shape) == (16, 18, 3, 3)
    assert model.final_layer.padding == (1, 1)


def test_simple_baseline_head_options():
    with torch.device("meta"):
        model = models.create_model("resnet50", num_joints=17, deconv_filters=(128, 128), deconv_kernels=(4, 4))
        out = model.eval()(torch.empty(1, 3, 256, 192))
    assert tuple(out.shape) == (1, 17, 32, 24)  # two deconvolutions: stride 8
    assert tuple(model.final_layer.weight.shape) == (17, 128, 1, 1)
