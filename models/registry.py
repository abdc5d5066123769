"""Model factory: one name per architecture, built with explicit keyword options (no string ``eval``)."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

from torch import nn

from models import hourglass, hrnet, simple_baseline

# Read-only: the set of architectures is fixed at import time, never patched at run time.
_FACTORIES: MappingProxyType[str, Callable[..., nn.Module]] = MappingProxyType(
    {
        "hourglass": hourglass.hourglass,
        "hrnet_w18": hrnet.hrnet_w18,
        "hrnet_w32": hrnet.hrnet_w32,
        "hrnet_w48": hrnet.hrnet_w48,
        "resnet50": simple_baseline.resnet50,
        "resnet101": simple_baseline.resnet101,
        "resnet152": simple_baseline.resnet152,
    }
)


def list_models() -> list[str]:
    """Names accepted by ``create_model``, sorted."""
    return sorted(_FACTORIES)


def create_model(name: str, num_joints: int, **options: object) -> nn.Module:
    """Build a freshly initialised pose network.

    Args:
        name: one of ``list_models()``.
        num_joints: number of output heatmaps K.
        **options: architecture fields of the family's config dataclass (e.g. ``num_stacks=4`` for ``hourglass``,
            ``final_conv_kernel=3`` for HRNet, ``deconv_filters=(256, 256)`` for ``resnet*``).

    Returns:
        The module in training mode. Hourglass returns ``list[Tensor]`` (one (N, K, H/4, W/4) per stack), the
        others a (N, K, H/4, W/4) tensor.

    Raises:
        ValueError: unknown name, non-positive ``num_joints`` or an option the architecture does not have.
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if num_joints < 1:
        raise ValueError(f"num_joints must be >= 1, got {num_joints}")
    try:
        return _FACTORIES[name](num_joints=num_joints, **options)
    except TypeError as exc:
        # dataclasses raise TypeError for unknown fields; report it as a bad user option.
        raise ValueError(f"invalid options for model {name!r}: {exc}") from exc
