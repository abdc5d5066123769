"""Recipe loading: typed sections, overrides, and clear errors on unknown keys and wrong types."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.training.config import ConfigError, TrainConfig, config_from_dict, config_to_dict, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

MINIMAL = {
    "student_preset": "tiny_student_mpii",
    "data": {"labelled": [{"format": "mpii", "root": "data/mpii", "split": "train"}], "teacher_cache": "cache"},
}


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_typed_sections_and_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL))
    assert isinstance(config, TrainConfig)
    assert config.data.labelled[0].format == "mpii" and config.data.labelled[0].split == "train"
    assert config.loss.alpha == 0.5 and config.optim.milestones == (170, 200)
    assert config_from_dict(config_to_dict(config)) == config  # plain-data round trip


def test_overrides_are_typed_like_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL)
    config = load_config(path, ["optim.lr=5e-4", "optim.milestones=[3, 4]", "loss.alpha=1", "eval.format=null"])
    assert config.optim.lr == 5e-4 and config.optim.milestones == (3, 4) and config.loss.alpha == 1.0
    with pytest.raises(ConfigError, match=r"optim\.epochs: expected int, got str"):
        load_config(path, ["optim.epochs=ten"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["optim.lr"])


def test_yaml_float_without_a_dot_is_accepted(tmp_path: Path) -> None:
    raw = {**MINIMAL, "optim": {"lr": "1e-3"}}  # PyYAML reads 1e-3 as a string
    assert load_config(_write(tmp_path, raw)).optim.lr == 1e-3


@pytest.mark.parametrize(
    "change,message",
    [
        ({"optim": {"lrr": 1.0}}, r"unknown key 'optim\.lrr' \(did you mean 'lr'\?\)"),
        ({"colour": 1}, r"unknown key 'colour'"),
        ({"optim": {"epochs": True}}, r"optim\.epochs: expected int, got bool"),
        ({"optim": {"milestones": 5}}, r"optim\.milestones: expected a list"),
        ({"amp": "fp8"}, r"amp: expected one of \['none', 'bf16', 'fp16'\]"),
        ({"loss": {"confidence_clip": [0.1]}}, r"loss\.confidence_clip: expected 2 values"),
        ({"data": {"labelled": [{"format": "lsp", "root": "r", "split": "s"}]}}, r"data\.labelled\[0\]\.format"),
        ({"loss": {"alpha": 1.5}}, r"alpha: must be in \[0, 1\]"),
        ({"data": {"labelled": [{"format": "mpii", "root": "r", "split": "s"}]}}, r"needs a teacher"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, change: dict, message: str) -> None:
    raw = {**MINIMAL, **change}
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, raw))


def test_missing_required_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="student_preset"):
        load_config(_write(tmp_path, {"data": MINIMAL["data"]}))


def test_ground_truth_only_recipe_needs_no_teacher(tmp_path: Path) -> None:
    raw = {"student_preset": "tiny_teacher_mpii", "loss": {"alpha": 0.0},
           "data": {"labelled": [{"format": "mpii", "root": "r", "split": "train"}]}}
    assert load_config(_write(tmp_path, raw)).data.teacher_cache is None


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_recipes_load(name: str) -> None:
    load_config(CONFIGS / name)
