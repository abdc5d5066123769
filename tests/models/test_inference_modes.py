"""The inference paths other stages use: inference_mode, channels_last, bf16 autocast, on tiny models."""

from __future__ import annotations

import pytest
import torch

import models
from models.hrnet import HRNetConfig, PoseHighResolutionNet, StageConfig


def _tiny_hrnet() -> PoseHighResolutionNet:
    stages = tuple(StageConfig(1, (1,) * n, (8, 16, 32, 64)[:n]) for n in (2, 3, 4))
    return PoseHighResolutionNet(HRNetConfig(stages=stages), num_joints=17)


@pytest.fixture(scope="module", params=["tiny_teacher_coco", "hrnet"])
def model_and_input(request):
    torch.manual_seed(0)
    if request.param == "hrnet":
        model, x = _tiny_hrnet(), torch.randn(2, 3, 64, 64)
    else:
        model = models.create_from_preset(request.param)
        x = torch.randn(2, 3, *models.get_preset(request.param).input_hw)
    model.eval()
    with torch.no_grad():
        reference = _final(model(x))
    return model, x, reference


def _final(out):
    return out[-1] if isinstance(out, list) else out


def _relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    # Relative to the output's range: HRNet's initialisation gives ~1e-11 heatmaps.
    return ((out.float() - reference).abs().max() / reference.abs().max()).item()


def test_inference_mode(model_and_input):
    model, x, reference = model_and_input
    with torch.inference_mode():
        out = _final(model(x))
    assert out.is_inference() and _relative_error(out, reference) < 1e-5


def test_channels_last(model_and_input):
    model, x, reference = model_and_input
    model = model.to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            out = _final(model(x.to(memory_format=torch.channels_last)))
    finally:
        model.to(memory_format=torch.contiguous_format)
    assert _relative_error(out, reference) < 1e-4


def test_bf16_autocast(model_and_input):
    model, x, reference = model_and_input
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = _final(model(x))
    assert out.dtype == torch.bfloat16
    assert _relative_error(out, reference) < 0.1
