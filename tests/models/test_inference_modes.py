"""The inference paths other stages use: inference_mode, channels_last, bf16 autocast, on tiny models."""

from __future__ import annotations

import pytest
import torch

import models


@pytest.fixture(scope="module", params=["tiny_teacher_coco", "hrnet_w18"])
def model_and_input(request):
    torch.manual_seed(0)
    if request.param == "hrnet_w18":
        model = models.create_model("hrnet_w18", num_joints=17)
        # HRNet's 0.001-std init gives ~1e-11 outputs; larger weights make the numerical comparisons meaningful.
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight)
        x = torch.randn(2, 3, 64, 64)
    else:
        model = models.create_from_preset(request.param)
        x = torch.randn(2, 3, *models.get_preset(request.param).input_hw)
    model.eval()
    with torch.no_grad():
        reference = _final(model(x))
    return model, x, reference


def _final(out):
    return out[-1] if isinstance(out, list) else out


def test_inference_mode(model_and_input):
    model, x, reference = model_and_input
    with torch.inference_mode():
        out = _final(model(x))
    assert out.is_inference() and torch.allclose(out, reference, atol=1e-5, rtol=1e-4)


def test_channels_last(model_and_input):
    model, x, reference = model_and_input
    model = model.to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            out = _final(model(x.to(memory_format=torch.channels_last)))
    finally:
        model.to(memory_format=torch.contiguous_format)
    assert torch.allclose(out, reference, atol=1e-4, rtol=1e-3)


def test_bf16_autocast(model_and_input):
    model, x, reference = model_and_input
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = _final(model(x))
    assert out.dtype == torch.bfloat16
    scale = reference.abs().max()
    assert (out.float() - reference).abs().max() < 0.1 * scale
