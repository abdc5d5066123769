"""Parameter and multiply-accumulate counts, with HRNet's ``get_model_summary`` conventions.

GFLOPs here means conv + linear multiply-accumulates / 2**30 for one image (what HRNet's README and logs call
GFLOPs). ``ConvTranspose2d`` counts ``weight.numel() * H_out * W_out`` like HRNet, not the true ``H_in * W_in``.
Bias, BatchNorm, activations, pooling, upsampling and additions are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call


@dataclass(frozen=True)
class Complexity:
    """Size and cost of a network for one image.

    Attributes:
        params: number of parameter elements (buffers such as BatchNorm statistics excluded).
        gflops: conv + linear multiply-accumulates / 2**30.
        macs: the exact multiply-accumulate count behind ``gflops``.
    """

    params: int
    gflops: float
    macs: int = 0


def trace_macs(model: nn.Module, input_hw: tuple[int, int]) -> tuple[int, Any]:
    """Multiply-accumulates of conv and linear layers for one (1, 3, H, W) image, and the (meta) output.

    The forward runs on the ``meta`` device with the model's own modules but meta copies of its parameters and
    buffers, so it costs no arithmetic, leaves the model untouched and works for any model size.

    Returns:
        (MAC count, the model's output as meta tensors: a (1, K, h, w) tensor or a list of them).
    """
    total = 0

    def hook(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            total += module.weight.numel() * output.shape[-2] * output.shape[-1]
        else:
            total += module.weight.numel() * (output.numel() // output.shape[-1])

    counted = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, counted)]
    tensors = [*model.named_parameters(), *model.named_buffers()]  # non-persistent buffers too
    state = {name: torch.empty_like(t, device="meta") for name, t in tensors}
    dtype = next((t.dtype for _, t in tensors if t.is_floating_point()), torch.float32)
    image = torch.empty(1, 3, *input_hw, device="meta", dtype=dtype)
    # Per-module modes, restored one by one: a model may be training with some BatchNorms frozen in eval mode.
    modes = [(m, m.training) for m in model.modules()]
    try:
        # Eval mode: BatchNorm must not try to update (meta) running statistics.
        model.eval()
        with torch.no_grad():
            result = functional_call(model, state, (image,))
    finally:
        for module, mode in modes:
            module.training = mode
        for handle in handles:
            handle.remove()
    return total, result


def complexity(model: nn.Module, input_hw: tuple[int, int]) -> Complexity:
    """Parameter count and GFLOPs (conv + linear MACs / 2**30) of ``model`` at input size ``input_hw`` = (H, W).

    Example: pose HRNet-W32 at (256, 192) gives ``Complexity(params=28536113, gflops=7.12...)``.
    """
    params = sum(p.numel() for p in model.parameters())
    macs, _ = trace_macs(model, input_hw)
    return Complexity(params=params, gflops=macs / 2**30, macs=macs)
