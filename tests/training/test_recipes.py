"""The shipped recipes equal the official runs they reproduce, field by field, once resolved for their world size.

``tests/fixtures/official_recipes.json`` holds facts read from the official repositories (HRNet
``leoxiaobin/deep-high-resolution-net.pytorch``, FPD ``ilovepose/fast-human-pose-estimation.pytorch``): for each
run its yacs defaults, yaml and launch-script overrides resolved (GPUS x BATCH_SIZE_PER_GPU, LR, LR_STEP, the
DATASET augmentation keys, IMAGE_SIZE, SIGMA, MODEL.PRETRAINED, TRAIN.CHECKPOINT, KD.ALPHA), and the two
probabilities ``JointsDataset`` hard-codes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.presets import get_preset
from pipeline.cli import main
from pipeline.codec import HeatmapCodec
from pipeline.training.config import ConfigError, load_config
from pipeline.training.recipe import resolve_recipe
from pipeline.training.state import BEST_NAME

REPO = Path(__file__).resolve().parents[2]
OFFICIAL = json.loads((REPO / "tests" / "fixtures" / "official_recipes.json").read_text())
CONSTANTS = OFFICIAL.pop("_joints_dataset_constants")
GROUND_TRUTH_OF = {"mpii_hg8_to_hg4": "mpii_hg4_gt", "coco_w48_to_w32": "coco_w32_gt"}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_shipped_recipe_equals_the_official_run(name: str) -> None:
    official = OFFICIAL[name]
    config = load_config(REPO / "configs" / f"{name}.yaml")
    recipe = resolve_recipe(config, world_size=official["gpus"])
    preset = get_preset(config.student_preset)

    assert (recipe.global_batch, recipe.per_process_batch) == (official["global_batch"], official["batch_per_gpu"])
    assert recipe.lr_note == "" and recipe.lr == official["lr"]
    optim = config.optim
    assert (optim.optimizer, optim.lr, list(optim.milestones), optim.gamma, optim.epochs) == (
        official["optimizer"], official["lr"], official["lr_step"], official["lr_factor"], official["end_epoch"])

    augment = recipe.augment
    assert augment is not None
    assert (augment.scale_factor, augment.rotation_factor, augment.flip) == (
        official["scale_factor"], official["rot_factor"], official["flip"])
    # HRNet draws ``np.random.rand() < PROB_HALF_BODY``: -1 (its "off") never passes, like 0.
    assert augment.half_body_prob == max(official["prob_half_body"], 0.0)
    assert augment.half_body_num_joints == official["num_joints_half_body"]
    assert (augment.rotation_prob, augment.flip_prob) == (CONSTANTS["rotation_prob"], CONSTANTS["flip_prob"])

    assert list(preset.input_size) == official["image_size"] and list(preset.heatmap_size) == official["heatmap_size"]
    assert preset.color_order == ("RGB" if official["color_rgb"] else "BGR")
    assert HeatmapCodec(preset.input_size, preset.heatmap_size).sigma == official["sigma"]
    if official.get("num_stacks"):
        options = dict(preset.arch_options)
        assert (options["num_stacks"], options["num_features"]) == (official["num_stacks"], official["num_features"])

    assert config.loss.alpha == (official["kd_alpha"] or 0.0)
    if official["checkpoint"]:  # FPD fine-tunes the ground-truth student (loaded after any ImageNet init)
        gt = load_config(REPO / "configs" / f"{GROUND_TRUTH_OF[name]}.yaml")
        assert gt.student_preset == config.student_preset
        assert config.student_init == str(Path(gt.output_dir) / BEST_NAME)
        assert recipe.init == f"checkpoint {config.student_init}"
    elif official["pretrained"]:
        assert Path(config.student_backbone).name == official["pretrained"]
        assert recipe.init.startswith("imagenet ")
    else:
        assert recipe.init == "scratch"


def test_global_batch_must_divide_among_processes() -> None:
    config = load_config(REPO / "configs" / "coco_w48_to_w32.yaml")
    assert resolve_recipe(config, world_size=8).per_process_batch == 12
    with pytest.raises(ConfigError, match="global batch 96 does not divide among 5 processes"):
        resolve_recipe(config, world_size=5)


def test_a_changed_global_batch_is_reported_and_scaled_only_on_request() -> None:
    path = REPO / "configs" / "mpii_hg8_to_hg4.yaml"
    kept = resolve_recipe(load_config(path, ["data.batch_size=32"]), world_size=4)
    assert kept.lr == 2.5e-4 and kept.per_process_batch == 8
    assert "global batch 32 instead of the recipe's 4: lr kept at 0.00025" in kept.lr_note
    assert "would give 0.002 (set optim.scale_lr: true)" in kept.lr_note
    scaled = resolve_recipe(load_config(path, ["data.batch_size=32", "optim.scale_lr=true"]), world_size=4)
    assert scaled.lr == pytest.approx(2e-3) and "scaled linearly 0.00025 -> 0.002" in scaled.lr_note
    assert scaled.lr_schedule == ((0, scaled.lr), (89, pytest.approx(2e-4)), (119, pytest.approx(2e-5)))


def test_augmentation_keys_override_the_dataset_defaults() -> None:
    path = REPO / "configs" / "coco_w48_to_w32.yaml"
    config = load_config(path, ["data.augment={half_body_prob: 0.5}"])
    assert config.data.augment.resolve("coco").half_body_prob == 0.5
    assert config.data.augment.resolve("coco").scale_factor == 0.35  # unset: HRNet's COCO value
    assert load_config(path, ["data.augment=false"]).data.augment.resolve("coco") is None
    with pytest.raises(ConfigError, match=r"unknown key 'data.augment.half_body'.*half_body_prob"):
        load_config(path, ["data.augment={half_body: 0.5}"])


def test_print_recipe_shows_what_each_process_trains(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--config", str(REPO / "configs" / "coco_w48_to_w32.yaml"), "--print-recipe", "--json"]
    assert main([*args, "--world-size", "4"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["batch"] == {"global": 96, "processes": 4, "per_process": 24, "note": None}
    assert shown["optim"]["lr_by_epoch"] == ["epochs 0-168: 0.001", "epochs 169-198: 0.0001", "epochs 199-209: 1e-05"]
    assert shown["student"]["init"] == "checkpoint runs/coco_w32_gt/best.pt"
    assert shown["augment"]["half_body_prob"] == 0.3 and shown["loss"]["alpha"] == 0.5
