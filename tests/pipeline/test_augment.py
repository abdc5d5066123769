"""Augmentation: HRNet's flip-then-crop, joints follow the image, random draws stay in HRNet's ranges."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.joints import COCO, MPII
from pipeline import geometry
from pipeline.augment import AugmentConfig, CropParams, crop_params_matrix, sample_crop, transform_joints
from pipeline.codec import HeatmapCodec
from pipeline.records import SampleRecord

WIDTH = 80


def make_record(joints=None, visibility=None, center=(40.0, 30.0), scale=(0.3, 0.4)) -> SampleRecord:
    return SampleRecord(
        source="mpii/valid", root=Path("."), image="a.jpg", center=center, scale=scale, instance_id="0",
        joints=joints, visibility=visibility,
    )


def test_config_defaults_are_hrnets():
    coco, mpii = AugmentConfig.for_dataset("coco"), AugmentConfig.for_dataset("mpii")
    assert (coco.scale_factor, coco.rotation_factor) == (0.35, 45.0)
    assert (mpii.scale_factor, mpii.rotation_factor, mpii.half_body_prob) == (0.25, 30.0, 0.0)  # PROB_HALF_BODY -1
    assert (coco.rotation_prob, coco.half_body_prob, coco.half_body_num_joints, coco.flip) == (0.6, 0.3, 8, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        coco.flip = False
    with pytest.raises(ValueError, match="no augmentation defaults"):
        AugmentConfig.for_dataset("lsp")


def test_unflipped_matrix_is_the_crop_matrix():
    params = CropParams((40.0, 30.0), (0.3, 0.4), 17.0, False)
    np.testing.assert_array_equal(
        crop_params_matrix(params, (24, 32), WIDTH), geometry.crop_matrix((40.0, 30.0), (0.3, 0.4), 17.0, (24, 32))
    )


def test_flipped_crop_equals_hrnet_flip_then_crop():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, WIDTH, 3), dtype=np.uint8)
    params = CropParams((35.0, 28.0), (0.25, 0.33), 20.0, True)
    # HRNet: data_numpy[:, ::-1], c[0] = width - c[0] - 1, crop
    hrnet_matrix = geometry.crop_matrix((WIDTH - 1 - 35.0, 28.0), (0.25, 0.33), 20.0, (48, 64))
    reference = cv2.warpAffine(np.ascontiguousarray(image[:, ::-1]), hrnet_matrix, (48, 64), flags=cv2.INTER_LINEAR)
    ours = cv2.warpAffine(image, crop_params_matrix(params, (48, 64), WIDTH), (48, 64), flags=cv2.INTER_LINEAR)
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1


def test_flipped_joints_equal_hrnet_fliplr_joints_then_affine():
    rng = np.random.default_rng(1)
    joints = rng.uniform(25, 55, (16, 2))
    vis = np.ones(16, dtype=np.float32)
    params = CropParams((40.0, 30.0), (0.3, 0.3), -12.0, True)
    moved, moved_vis = transform_joints(joints, vis, params, (64, 64), WIDTH, MPII)
    # HRNet fliplr_joints: x -> width - x - 1, swap pairs; then affine with the flipped centre.
    ref = joints.copy()
    ref[:, 0] = WIDTH - ref[:, 0] - 1
    for a, b in MPII.flip_pairs:
        ref[[a, b]] = ref[[b, a]]
    ref = geometry.apply_affine(ref, geometry.crop_matrix((WIDTH - 1 - 40.0, 30.0), (0.3, 0.3), -12.0, (64, 64)))
    np.testing.assert_allclose(moved, ref, atol=1e-4)
    np.testing.assert_array_equal(moved_vis, vis)


def test_crop_then_inverse_maps_joints_back():
    rng = np.random.default_rng(2)
    joints = rng.uniform(0, WIDTH, (17, 2))
    for flip in (False, True):
        params = CropParams((41.5, 33.0), (0.5, 0.66), 33.0, flip)
        matrix = crop_params_matrix(params, (48, 64), WIDTH)
        back = geometry.apply_affine(geometry.apply_affine(joints, matrix), geometry.invert_affine(matrix))
        np.testing.assert_allclose(back, joints, atol=1e-4)


def test_heatmap_matrix_is_input_matrix_over_stride():
    params = CropParams((41.5, 33.0), (0.5, 0.66), 33.0, True)
    at_input = crop_params_matrix(params, (192, 256), WIDTH)
    at_heatmap = crop_params_matrix(params, (48, 64), WIDTH)
    np.testing.assert_allclose(at_heatmap, at_input / 4, atol=1e-12)


def test_joints_outside_crop_keep_visibility_and_the_codec_decides_their_weight():
    params = CropParams((40.0, 30.0), (0.3, 0.4), 0.0, True)
    size = (48, 64)
    joints = np.zeros((17, 2))
    joints[:] = (40.0, 30.0)
    joints[5] = (30.0, 30.0)  # left shoulder on the image's left
    joints[9] = (1000.0, 30.0)  # far outside
    # the left elbow lands 1.5 input px left of the crop (mirrored: in the right elbow channel)
    to_image = geometry.invert_affine(crop_params_matrix(params, size, WIDTH))
    joints[7] = geometry.apply_affine(np.array([-1.5, 20.0]), to_image)
    vis = np.ones(17, dtype=np.float32)
    vis[3] = 0
    moved, moved_vis = transform_joints(joints, vis, params, size, WIDTH, COCO)
    # visibility is only permuted by the flip, never cleared by the crop (HRNet's __getitem__)
    np.testing.assert_array_equal(moved_vis, vis[COCO.flip_permutation()])
    assert moved_vis[4] == 0 and moved_vis[3] == 1  # invisibility travels with the swap
    assert moved_vis[10] == 1 and moved[10, 0] < -500  # right wrist channel: the mirrored, far-away left wrist
    assert moved_vis[8] == 1 and moved[8, 0] == pytest.approx(-1.5, abs=1e-4) and moved[8, 1] == pytest.approx(20.0)
    assert moved[6, 0] > 24  # the left shoulder, mirrored, is now the right shoulder on the crop's right half
    # HRNet's generate_target rule: still trained while the Gaussian window touches the heatmap
    _, weights = HeatmapCodec(size, (12, 16), sigma=1.0).encode(moved, moved_vis)
    assert weights[8] == 1 and weights[10] == 0 and weights[4] == 0
    assert weights.sum() == 15


def test_sample_crop_draws_stay_in_hrnet_ranges():
    cfg = AugmentConfig.for_dataset("mpii")
    record = make_record()
    rng = np.random.default_rng(3)
    draws = [sample_crop(record, cfg, rng, WIDTH, MPII, (64, 64)) for _ in range(2000)]
    zoom = np.array([d.scale[0] / 0.3 for d in draws])
    rot = np.array([d.rotation for d in draws])
    flips = np.array([d.flip for d in draws])
    assert zoom.min() >= 0.75 - 1e-9 and zoom.max() <= 1.25 + 1e-9
    assert np.allclose([d.scale[1] / 0.4 for d in draws], zoom)
    assert np.abs(rot).max() <= 60.0 and np.abs(rot).max() > 45.0
    assert 0.55 < np.mean(rot != 0) < 0.65
    assert 0.45 < flips.mean() < 0.55
    assert all(d.center == record.center for d in draws)  # no half-body without joints
    assert sample_crop(record, cfg, np.random.default_rng(3), WIDTH, MPII, (64, 64)) == draws[0]  # seeded


def test_half_body_crop_needs_more_than_eight_visible_joints():
    rng = np.random.default_rng(4)
    joints = rng.uniform(20, 60, (16, 2)).astype(np.float32)
    cfg = dataclasses.replace(AugmentConfig.for_dataset("mpii"), half_body_prob=1.0)
    visible9 = np.array([1] * 9 + [0] * 7, dtype=np.float32)
    visible8 = np.array([1] * 8 + [0] * 8, dtype=np.float32)
    upper = np.array(MPII.upper_body)
    lower = np.array(MPII.lower_body)
    moved = 0
    for seed in range(50):
        crop = sample_crop(make_record(joints, visible9), cfg, np.random.default_rng(seed), WIDTH, MPII, (64, 64))
        if crop.center != (40.0, 30.0):
            moved += 1
            means = [joints[part][visible9[part] > 0].mean(0) for part in (upper, lower)]
            assert any(np.allclose(crop.center, m, atol=1e-4) for m in means)
        crop8 = sample_crop(make_record(joints, visible8), cfg, np.random.default_rng(seed), WIDTH, MPII, (64, 64))
        assert crop8.center == (40.0, 30.0)
    assert moved == 50
