"""End-to-end evaluation on the real MPII / COCO samples with an oracle network and a tiny real one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from models.joints import get_joint_set
from models.presets import ModelPreset
from pipeline import geometry
from pipeline.codec import HeatmapCodec
from pipeline.data.coco import load_coco
from pipeline.data.crops import CropDataset
from pipeline.data.mpii import load_mpii
from pipeline.evaluation import evaluate_coco, evaluate_mpii, predict
from pipeline.flip import flip_heatmaps, flip_test
from storage.annotations import load_coco_results, load_mpii_predictions

MPII_PRESET = ModelPreset("oracle_mpii", "hourglass", (), "mpii", (256, 256), (64, 64), "RGB")
COCO_PRESET = ModelPreset("oracle_coco", "hourglass", (), "coco", (192, 256), (48, 64), "RGB")
COCO_ANN = "annotations/person_keypoints_val2017_subset4.json"


class Oracle(nn.Module):
    """Returns, batch after batch, Gaussians at each record's true joints (mirrored for a flip-test half)."""

    def __init__(self, heatmaps: torch.Tensor, flip_permutation: list[int] | None) -> None:
        super().__init__()
        self.heatmaps, self.flip_permutation, self.cursor = heatmaps, flip_permutation, 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        count = images.shape[0] // (2 if self.flip_permutation else 1)
        maps = self.heatmaps[self.cursor : self.cursor + count]
        self.cursor += count
        return torch.cat([maps, flip_heatmaps(maps, self.flip_permutation)]) if self.flip_permutation else maps


def oracle_heatmaps(records, preset: ModelPreset, sigma: float = 2.0) -> torch.Tensor:
    """Continuous Gaussians at the exact sub-pixel heatmap position of every joint (zero maps for missing ones)."""
    width, height = preset.heatmap_size
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    maps = np.zeros((len(records), preset.num_joints, height, width), dtype=np.float32)
    for i, record in enumerate(records):
        matrix = geometry.crop_matrix(record.center, record.scale, record.rotation, preset.heatmap_size)
        for k, (x, y) in enumerate(geometry.apply_affine(record.joints, matrix)):
            if record.visibility[k] > 0:
                maps[i, k] = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return torch.from_numpy(maps)


class TinyNet(nn.Module):
    def __init__(self, num_joints: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, num_joints, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.body(x)]


def test_oracle_predictions_land_on_the_ground_truth(real_data, tmp_path):
    root = real_data / "mpii"
    records = load_mpii(root, "valid_first5")
    model = Oracle(oracle_heatmaps(records, MPII_PRESET), None)
    preds = predict(model, records, MPII_PRESET, batch_size=2, flip=False, decode="dark")
    visible = np.stack([r.visibility for r in records]) > 0
    errors = np.linalg.norm(preds.coords - np.stack([r.joints for r in records]), axis=-1)[visible]
    assert errors.max() < 0.05  # image pixels (0.008 measured): crop, DARK decode and inverse crop agree
    assert preds.failed == ()
    model.cursor = 0
    table = evaluate_mpii(
        model, MPII_PRESET, root, split="valid_first5", flip=False, decode="dark", predictions_out=tmp_path / "p.npy"
    )
    assert all(value == 100.0 for value in table.values())
    np.testing.assert_allclose(load_mpii_predictions(tmp_path / "p.npy", num_joints=16), preds.coords)


def test_flip_predict_equals_manual_pipeline(real_data):
    records = load_mpii(real_data / "mpii", "valid_first5")
    preset = dataclasses.replace(MPII_PRESET, input_size=(64, 64), heatmap_size=(16, 16))
    torch.manual_seed(0)
    model = TinyNet(16)
    model.train()
    preds = predict(model, records, preset, batch_size=2, flip=True, decode="hrnet")
    assert model.training  # mode restored
    model.eval()
    images = torch.stack([CropDataset(records, (64, 64), "RGB", use_draft=False)[i]["image"] for i in range(5)])
    codec = HeatmapCodec((64, 64), (16, 16))
    with torch.no_grad():
        coords, maxvals = codec.decode(flip_test(model, images, get_joint_set("mpii").flip_permutation()))
    expected = codec.to_image(coords, [r.center for r in records], [r.scale for r in records])
    np.testing.assert_allclose(preds.coords, expected, atol=1e-4)
    np.testing.assert_allclose(preds.maxvals, maxvals.numpy(), atol=1e-6)


def test_oracle_coco_ap_is_one_with_flip_test(real_data, tmp_path):
    root = real_data / "coco"
    records = load_coco(root, "val2017", input_aspect=0.75, annotation_file=root / COCO_ANN)
    model = Oracle(oracle_heatmaps(records, COCO_PRESET), get_joint_set("coco").flip_permutation())
    stats = evaluate_coco(
        model, COCO_PRESET, root, "val2017", annotation_file=root / COCO_ANN, results_out=tmp_path / "r.json",
        decode="dark",
    )
    assert stats["AP"] == 1.0  # HRNet's one-pixel flip shift (half a heatmap px on average) costs nothing here
    results = load_coco_results(tmp_path / "r.json", num_joints=17)
    assert len(results) == len(records) and {r["image_id"] for r in results} <= {785, 40083, 196141, 197388}


def test_coco_with_detections_runs_a_real_network(real_data):
    root = real_data / "coco"
    preset = dataclasses.replace(COCO_PRESET, input_size=(48, 64), heatmap_size=(12, 16))
    stats = evaluate_coco(
        TinyNet(17), preset, root, "val2017", annotation_file=root / COCO_ANN, score_threshold=0.5,
        detections=root / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person_subset4.json",
    )
    assert set(stats) >= {"AP", "AR (L)"} and 0.0 <= stats["AP"] < 0.5  # an untrained net scores near zero


def test_unreadable_image_is_reported_not_raised(real_data, tmp_path):
    records = load_mpii(real_data / "mpii", "valid_first5")[:2]
    broken = dataclasses.replace(records[1], root=tmp_path)
    preset = dataclasses.replace(MPII_PRESET, input_size=(64, 64), heatmap_size=(16, 16))
    preds = predict(TinyNet(16), [records[0], broken], preset)
    assert preds.failed == (1,)
    assert not preds.coords[1].any() and not preds.maxvals[1].any() and preds.maxvals[0].any()


def test_mismatched_preset_is_refused(real_data):
    records = load_mpii(real_data / "mpii", "valid_first5")[:1]
    preset = dataclasses.replace(MPII_PRESET, input_size=(64, 64), heatmap_size=(32, 32))
    with pytest.raises(ValueError, match="does not match preset"):
        predict(TinyNet(16), records, preset)
    with pytest.raises(ValueError, match="MPII evaluation needs mpii"):
        evaluate_mpii(TinyNet(17), COCO_PRESET, real_data / "mpii", split="valid_first5")
