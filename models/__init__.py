"""Pose networks (stacked hourglass, pose HRNet, SimpleBaseline), their presets and complexity counts."""

from models.complexity import Complexity, complexity
from models.presets import ModelPreset, create_from_preset, get_preset, list_presets
from models.registry import create_model, list_models

__all__ = [
    "Complexity",
    "ModelPreset",
    "complexity",
    "create_from_preset",
    "create_model",
    "get_preset",
    "list_models",
    "list_presets",
]
