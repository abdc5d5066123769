"""ImageNet backbone initialisation of a student (HRNet's MODEL.PRETRAINED): wired into training, exclusive."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pipeline.training.loop as loop
from models import create_from_preset, get_preset
from pipeline.training.config import ConfigError
from storage.checkpoints import save_weights
from tests.training.conftest import tiny_recipe


def test_student_backbone_weights_are_loaded_before_training(
    synthetic_mpii: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(123)
    backbone = save_weights(create_from_preset(get_preset("tiny_student_mpii")), tmp_path / "imagenet.pth")
    expected = torch.load(backbone, weights_only=True)
    seen: dict[str, torch.Tensor] = {}
    real_epoch = loop.train_one_epoch

    def first_epoch(model: torch.nn.Module, *args: object, **kwargs: object) -> object:
        if not seen:  # the student's weights as the first step sees them
            seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_epoch(model, *args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", first_epoch)
    loop.train(tiny_recipe(synthetic_mpii, tmp_path / "run", student_backbone=str(backbone), optim={"epochs": 1}))
    assert seen.keys() == expected.keys()
    assert all(torch.equal(seen[k], expected[k]) for k in expected)


def test_student_init_and_backbone_are_exclusive(synthetic_mpii: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="student_init and student_backbone"):
        tiny_recipe(synthetic_mpii, tmp_path, student_init="a.pt", student_backbone="b.pth")
