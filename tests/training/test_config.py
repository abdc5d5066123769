"""Recipe loading: typed sections, overrides, and clear errors (dotted keys) on unknown keys and wrong types."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pipeline.data.sources import SourceSpec
from pipeline.training.config import (
    ConfigError,
    DataConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

MINIMAL = {
    "student_preset": "tiny_student_mpii",
    "data": {"labelled": [{"kind": "mpii", "root": "data/mpii", "split": "train"}], "teacher_cache": "cache"},
}


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_typed_sections_and_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL))
    assert isinstance(config, TrainConfig)
    assert config.data.labelled == (SourceSpec("mpii", Path("data/mpii"), "train"),)  # the data layer's own type
    assert config.loss.alpha == 0.5 and config.optim.milestones == (170, 200) and config.progress
    plain = config_to_dict(config)
    assert plain["data"]["labelled"] == [{"kind": "mpii", "root": "data/mpii", "split": "train"}]
    assert plain["optim"]["milestones"] == [170, 200]  # lists and strings: YAML- and JSON-safe
    assert config_from_dict(plain) == config  # plain-data round trip
    assert hash(config) == hash(config_from_dict(plain))  # frozen all the way down, hence hashable
    with pytest.raises(ValidationError, match="frozen"):
        config.optim.lr = 1.0  # type: ignore[misc]
    assert config.model_copy(update={"output_dir": "elsewhere"}).output_dir == "elsewhere"


def test_overrides_are_typed_like_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL)
    config = load_config(path, ["optim.lr=5e-4", "optim.milestones=[3, 4]", "loss.alpha=1", "eval.dataset=null"])
    assert config.optim.lr == 5e-4 and config.optim.milestones == (3, 4) and config.loss.alpha == 1.0
    assert isinstance(config.loss.alpha, float)  # an int is accepted for a float, and stored as one
    with pytest.raises(ConfigError, match=r"recipe\.yaml: optim\.epochs: .*valid integer, got str 'ten'"):
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
        ({"colour": 1}, r"unknown key 'colour' \(known: student_preset, "),
        ({"optim": {"epochs": True}}, r"optim\.epochs: .*valid integer, got bool True"),
        ({"optim": {"epochs": 3.0}}, r"optim\.epochs: .*valid integer, got float"),
        ({"optim": {"lr": True}}, r"optim\.lr: expected a number, got bool True"),
        ({"optim": {"lr": "fast"}}, r"optim\.lr: .*valid number"),
        ({"loss": {"use_ground_truth": "yes"}}, r"loss\.use_ground_truth: .*valid boolean, got str"),
        ({"optim": {"milestones": 5}}, r"optim\.milestones: .*valid tuple, got int 5"),
        ({"optim": {"milestones": [3, True]}}, r"optim\.milestones\[1\]: .*valid integer"),
        ({"amp": "fp8"}, r"amp: Input should be 'none', 'bf16' or 'fp16', got str 'fp8'"),
        ({"loss": {"confidence_clip": [0.1]}}, r"loss\.confidence_clip\[1\]: required"),
        ({"data": {"labelled": [{"kind": "lsp", "root": "r", "split": "s"}]}},
         r"data\.labelled\[0\]: kind: expected one of \['mpii', 'coco'\], got 'lsp'"),
        ({"data": {"labelled": [{"format": "mpii", "root": "r", "split": "s"}], "teacher_cache": "c"}},
         r"unknown key 'data\.labelled\[0\]\.format' \(known: kind, root, split\)"),
        ({"data": {"labelled": [{"kind": "mpii", "root": "r"}], "teacher_cache": "c"}},
         r"data\.labelled\[0\]: split: required"),
        ({"data": 5}, r"data: .*valid dictionary"),
        ({"eval": {"dataset": "mpii"}}, r"eval\.root: required when eval\.dataset is set"),
        ({"loss": {"alpha": 1.5}}, r"alpha: must be in \[0, 1\]"),
        ({"data": {"labelled": [{"kind": "mpii", "root": "r", "split": "s"}]}}, r"needs a teacher"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, change: dict, message: str) -> None:
    raw = {**MINIMAL, **change}
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, raw))


def test_missing_required_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="student_preset: required"):
        load_config(_write(tmp_path, {"data": MINIMAL["data"]}))


def test_validation_error_becomes_one_config_error_naming_the_dotted_keys() -> None:
    raw = {**MINIMAL, "optim": {"lr": "fast", "epochs": True}, "eval": {"flipp": False}}
    with pytest.raises(ValidationError) as direct:  # what pydantic itself raises
        TrainConfig.model_validate(raw)
    assert direct.value.error_count() == 3
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw)
    assert not isinstance(caught.value, ValidationError) and isinstance(caught.value, ValueError)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no pydantic traceback below it
    message = str(caught.value)
    for part in ("optim.lr: ", "optim.epochs: ", "unknown key 'eval.flipp' (did you mean 'flip'?)"):
        assert part in message, message
    assert "Value error," not in message


def test_a_folder_is_not_a_labelled_source() -> None:
    raw = {**MINIMAL, "data": {**MINIMAL["data"], "labelled": [{"kind": "folder", "root": "images"}]}}
    with pytest.raises(ConfigError, match=r"data\.labelled\[0\]: kind: folder has no annotations; .*data\.unlabeled"):
        config_from_dict(raw)
    with pytest.raises(ValidationError, match="folder has no annotations"):  # built in Python, too
        DataConfig(labelled=(SourceSpec("folder", Path("images")),))


def test_source_spec_instances_are_validated_like_yaml() -> None:
    data = DataConfig(labelled=(SourceSpec("coco", "data/coco", "train2017"),))  # type: ignore[arg-type]
    assert data.labelled[0].root == Path("data/coco")  # the str root became a Path, as from YAML


def test_ground_truth_only_recipe_needs_no_teacher(tmp_path: Path) -> None:
    raw = {"student_preset": "tiny_teacher_mpii", "loss": {"alpha": 0.0},
           "data": {"labelled": [{"kind": "mpii", "root": "r", "split": "train"}]}}
    assert load_config(_write(tmp_path, raw)).data.teacher_cache is None


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_recipes_load(name: str) -> None:
    load_config(CONFIGS / name)


def test_cpu_threads_leave_a_core_to_each_loader_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from pipeline.runtime import cpu_threads_beside

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    assert [cpu_threads_beside(w) for w in (0, 2, 7, 8, 12)] == [8, 6, 1, 1, 1]
