"""ImageNet backbone initialisation of a student (HRNet's MODEL.PRETRAINED): wired into training, exclusive."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pipeline.training.loop as loop
from models import create_from_preset, get_preset
from pipeline.training.config import ConfigError
from storage.checkpoints import read_weights_metadata
from tests.training.conftest import tiny_recipe


def test_student_backbone_weights_are_loaded_before_training(
    synthetic_mpii: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipe with ImageNet init (HRNet-W32 on MPII): the first step sees the file's backbone, a fresh head."""
    torch.manual_seed(123)
    donor = create_from_preset(get_preset("hrnet_w32_256x256"))
    layers = donor.backbone_layers
    imagenet = {k: v for k, v in donor.state_dict().items() if k.split(".")[0] in layers}
    imagenet["classifier.weight"] = torch.randn(1000, 2048)  # an ImageNet head: skipped
    torch.save(imagenet, tmp_path / "hrnet_w32-36af842e.pth")
    seen: dict[str, torch.Tensor] = {}

    def first_epoch(model: torch.nn.Module, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        # The student as the first step would see it; the 28M-parameter step itself is not needed here.
        seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {name: torch.zeros(1) for name in ("loss", "teacher", "ground_truth")}

    monkeypatch.setattr(loop, "train_one_epoch", first_epoch)
    recipe = tiny_recipe(synthetic_mpii, tmp_path / "run", student_preset="hrnet_w32_256x256",
                         student_backbone=str(tmp_path / "hrnet_w32-36af842e.pth"), optim={"epochs": 1})  # fmt: skip
    loop.train(recipe)
    assert all(torch.equal(seen[k], v) for k, v in imagenet.items() if k in seen)
    assert {k for k in seen if k.split(".")[0] in layers} == set(imagenet) - {"classifier.weight"}
    assert not torch.equal(seen["final_layer.weight"], donor.state_dict()["final_layer.weight"])
    metadata = read_weights_metadata(tmp_path / "run" / loop.WEIGHTS_NAME)
    assert metadata["init"] == f"imagenet {tmp_path / 'hrnet_w32-36af842e.pth'}"


def test_a_network_without_imagenet_backbone_is_refused(synthetic_mpii: Path, tmp_path: Path) -> None:
    torch.save({}, tmp_path / "resnet50.pth")
    recipe = tiny_recipe(synthetic_mpii, tmp_path / "run", student_backbone=str(tmp_path / "resnet50.pth"))
    with pytest.raises(ConfigError, match=r"tiny_student_mpii \(hourglass\) has no ImageNet backbone"):
        loop.train(recipe)


def test_student_init_and_backbone_are_exclusive(synthetic_mpii: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="student_init and student_backbone"):
        tiny_recipe(synthetic_mpii, tmp_path, student_init="a.pt", student_backbone="b.pth")
