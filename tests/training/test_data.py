"""Heatmap warp and DistillDataset: image, GT targets and cached teacher heatmaps stay aligned under augmentation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from models.joints import MPII
from pipeline.augment import AugmentConfig, CropParams, sample_crop, transform_joints
from pipeline.codec import HeatmapCodec
from pipeline.geometry import apply_affine, crop_matrix
from pipeline.records import SampleRecord
from pipeline.training.data import CachedTarget, DistillDataset, warp_heatmaps


def _gaussian(size: tuple[int, int], centre: tuple[float, float], sigma: float = 1.5) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(size[0]), np.arange(size[1]))
    return np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def _centroid(heatmap: np.ndarray) -> np.ndarray:
    """Sub-pixel peak: intensity centroid of the 9x9 window around the argmax (unbiased for a whole Gaussian)."""
    y, x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    h, w = heatmap.shape
    ys, xs = np.mgrid[max(y - 4, 0) : min(y + 5, h), max(x - 4, 0) : min(x + 5, w)]
    w = heatmap[ys, xs]
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


@pytest.mark.parametrize("rotation,zoom,flip", [(0.0, 1.0, False), (30.0, 1.3, False), (-40.0, 0.8, True)])
def test_warp_puts_the_peak_where_the_joint_goes(rotation: float, zoom: float, flip: bool) -> None:
    joint = (13.3, 18.6)
    heatmap = torch.from_numpy(_gaussian((32, 32), joint))[None]
    matrix = crop_matrix((16.0, 16.0), (32 / 200 / zoom, 32 / 200 / zoom), rotation, (24, 32))
    if flip:
        matrix = np.array([[-1.0, 0.0, 23.0], [0.0, 1.0, 0.0]]) @ np.vstack([matrix, [0, 0, 1]])
    warped = warp_heatmaps(heatmap, matrix, (24, 32))[0].numpy()
    expected = apply_affine(np.array(joint), matrix)
    assert warped.shape == (32, 24)
    np.testing.assert_allclose(_centroid(warped), expected, atol=0.15)
    # the same result as OpenCV's warpAffine (pixel centres on integers, zeros outside)
    reference = cv2.warpAffine(heatmap[0].numpy(), matrix, (24, 32), flags=cv2.INTER_LINEAR, borderValue=0)
    np.testing.assert_allclose(warped, reference, atol=2e-2)


def test_identity_warp_is_exact_and_batched_matrices_apply_per_sample() -> None:
    heatmaps = torch.rand(2, 3, 8, 6)
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(warp_heatmaps(heatmaps, identity, (6, 8)), heatmaps, atol=1e-6, rtol=0)
    shift = np.stack([identity, identity + np.array([[0, 0, 1.0], [0, 0, 0]])])
    out = warp_heatmaps(heatmaps, shift, (6, 8))
    torch.testing.assert_close(out[1, :, :, 1:], heatmaps[1, :, :, :-1], atol=1e-6, rtol=0)
    assert out[1, :, :, 0].abs().max() < 1e-6  # zeros outside


INPUT, HEATMAP = (128, 128), (32, 32)


@pytest.fixture()
def person(tmp_path: Path) -> SampleRecord:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    joints = rng.uniform([40, 20], [80, 70], size=(16, 2)).astype(np.float32)
    return SampleRecord(source="mpii/train", root=tmp_path, image="p.png", center=(60.0, 45.0), scale=(0.4, 0.4),
                        instance_id="0", joints=joints, visibility=np.ones(16, dtype=np.float32))


def _exact_teacher(record: SampleRecord):
    """A 'teacher' whose cached heatmaps are exact Gaussians on the joints of the unaugmented crop."""
    heatmaps = np.zeros((16, HEATMAP[1], HEATMAP[0]), dtype=np.float32)
    if record.labelled:
        matrix = crop_matrix(record.center, record.scale, record.rotation, HEATMAP)
        heatmaps = np.stack([_gaussian(HEATMAP, xy, sigma=1.0) for xy in apply_affine(record.joints, matrix)])
    cached = CachedTarget(heatmaps=heatmaps, center=record.center, scale=record.scale)
    return lambda r: cached


def _dataset(record: SampleRecord, augment: AugmentConfig | None) -> DistillDataset:
    codec = HeatmapCodec(INPUT, HEATMAP)
    return DistillDataset([record], joint_set=MPII, input_size=INPUT, heatmap_size=HEATMAP, color_order="RGB",
                          codec=codec, teacher=_exact_teacher(record), augment=augment, seed=3)


def test_without_augmentation_the_cached_heatmaps_are_used_as_is(person: SampleRecord) -> None:
    dataset = _dataset(person, None)
    item = dataset[0]
    np.testing.assert_array_equal(item["teacher"].numpy(), dataset.teacher(person).heatmaps)
    assert item["image"].shape == (3, 128, 128) and item["labelled"] is True


def test_augmented_teacher_heatmaps_follow_the_ground_truth(person: SampleRecord) -> None:
    # Strong rotation/scale and always flip: the warped 'teacher' must peak where the GT targets peak, channel
    # by channel (a flip without the left/right swap would put the peaks on the mirrored joints).
    augment = AugmentConfig(scale_factor=0.3, rotation_factor=40.0, rotation_prob=1.0, flip_prob=1.0,
                            half_body_prob=0.0)
    dataset = _dataset(person, augment)
    codec = HeatmapCodec(INPUT, HEATMAP)
    checked = 0
    for epoch in range(3):
        dataset.set_epoch(epoch)
        item = dataset[0]
        # the crop the dataset drew, redrawn from the same (seed, epoch, index) stream
        params = sample_crop(person, augment, np.random.default_rng([3, epoch, 0]), 120, MPII, INPUT)
        assert params.flip
        exact, vis = transform_joints(person.joints, person.visibility, params, HEATMAP, 120, MPII)
        inside = (vis > 0) & np.all((exact > 5) & (exact < HEATMAP[0] - 6), axis=1)
        for k in np.flatnonzero(inside):
            np.testing.assert_allclose(_centroid(item["teacher"][k].numpy()), exact[k], atol=0.2)
        gt_xy, _ = codec.decode(item["target"][None])
        # the GT Gaussian sits on the nearest heatmap pixel (HRNet's rule): within half a pixel per axis
        np.testing.assert_array_less(np.abs(gt_xy[0].numpy() - exact)[inside], 0.51)
        checked += int(inside.sum())
    assert checked > 20


def test_teacher_seen_marks_the_part_of_the_augmented_crop_the_teacher_saw(person: SampleRecord) -> None:
    assert torch.equal(_dataset(person, None)[0]["teacher_seen"], torch.ones(1, HEATMAP[1], HEATMAP[0]))
    # Zoomed out and rotated: the augmented crop's corners lie outside the cached crop.
    augment = AugmentConfig(scale_factor=0.3, rotation_factor=40.0, rotation_prob=1.0, flip_prob=0.0,
                            half_body_prob=0.0)  # fmt: skip
    dataset = _dataset(person, augment)
    seen_somewhere_unseen = False
    for epoch in range(4):
        dataset.set_epoch(epoch)
        item = dataset[0]
        params = sample_crop(person, augment, np.random.default_rng([3, epoch, 0]), 120, MPII, INPUT)
        # Where each augmented heatmap pixel comes from in the cached heatmap: inside [0, 32) or not.
        aug = np.vstack([crop_matrix(params.center, params.scale, params.rotation, HEATMAP), [0, 0, 1]])
        cached = np.vstack([crop_matrix(person.center, person.scale, 0.0, HEATMAP), [0, 0, 1]])
        ys, xs = np.mgrid[0 : HEATMAP[1], 0 : HEATMAP[0]]
        source = apply_affine(np.stack([xs.ravel(), ys.ravel()], axis=1).astype(float),
                              (cached @ np.linalg.inv(aug))[:2]).reshape(HEATMAP[1], HEATMAP[0], 2)  # fmt: skip
        inside = np.all((source > 0.5) & (source < np.array(HEATMAP) - 1.5), axis=2)
        outside = np.any((source < -1.0) | (source > np.array(HEATMAP)), axis=2)
        seen = item["teacher_seen"][0].numpy()
        assert np.all(seen[inside] > 0.999) and np.all(seen[outside] == 0)
        if outside.any():
            assert item["teacher"][:, outside].abs().max() == 0  # the warped maps are zero there
            seen_somewhere_unseen = True
    assert seen_somewhere_unseen


def test_augmentation_is_a_function_of_seed_epoch_and_index(person: SampleRecord) -> None:
    dataset = _dataset(person, AugmentConfig())
    first, again = dataset[0], dataset[0]
    torch.testing.assert_close(first["image"], again["image"], rtol=0, atol=0)
    dataset.set_epoch(1)
    assert not torch.equal(first["image"], dataset[0]["image"])


def test_unlabeled_records_have_zero_targets(person: SampleRecord) -> None:
    unlabeled = SampleRecord(source="folder/x", root=person.root, image=person.image, center=person.center,
                              scale=person.scale, instance_id="0")
    item = _dataset(unlabeled, None)[0]
    assert item["labelled"] is False
    assert item["target"].abs().sum() == 0 and item["target_weight"].sum() == 0
    assert item["teacher"].shape == (16, 32, 32)


def test_crop_params_of_record_match_cache_crop(person: SampleRecord) -> None:
    assert CropParams.from_record(person).center == person.center
