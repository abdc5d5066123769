"""Heatmap warp and DistillDataset: image, GT targets and cached teacher heatmaps stay aligned under augmentation.

The dataset hands over the cached maps with their matrix and channel order; ``teacher_on_crops`` warps a batch of
them as the training step does, and must give what the per-sample warp of the workers gave before."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import default_collate

from models.joints import MPII
from pipeline.augment import AugmentConfig, CropParams, crop_params_matrix, sample_crop, transform_joints
from pipeline.codec import HeatmapCodec
from pipeline.data.images import normalize_images, to_tensor
from pipeline.geometry import apply_affine, crop_matrix, invert_affine, to_homogeneous, warp_image
from pipeline.records import SampleRecord
from pipeline.training.data import (
    IDENTITY,
    CachedTarget,
    DistillDataset,
    heatmap_normalizer,
    step_inputs,
    teacher_on_crops,
    warp_heatmaps,
)


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
    assert torch.equal(warp_heatmaps(heatmaps, identity, (6, 8)), heatmaps)
    shift = np.stack([identity, identity + np.array([[0, 0, 1.0], [0, 0, 0]])])
    out = warp_heatmaps(heatmaps, shift, (6, 8))
    assert torch.equal(out[0], heatmaps[0])  # the identity sample of a mixed batch is passed through as is
    torch.testing.assert_close(out[1, :, :, 1:], heatmaps[1, :, :, :-1], atol=1e-6, rtol=0)
    assert out[1, :, :, 0].abs().max() < 1e-6  # zeros outside
    # the identity at another output size is a crop, not a pass-through
    assert warp_heatmaps(heatmaps, identity, (4, 8)).shape == (2, 3, 8, 4)


def _per_sample_warp(heatmaps: torch.Tensor, matrix: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """The workers' warp before it moved to the training step: one sample, its theta from the 3x3 products."""
    norm_in = heatmap_normalizer((heatmaps.shape[-1], heatmaps.shape[-2]))
    theta = (norm_in @ to_homogeneous(invert_affine(matrix)) @ np.linalg.inv(heatmap_normalizer(size)))[:2]
    grid = F.affine_grid(torch.as_tensor(theta[None], dtype=torch.float32), [1, heatmaps.shape[0], size[1], size[0]],
                         align_corners=False)  # fmt: skip
    return F.grid_sample(heatmaps[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


INPUT, HEATMAP = (128, 128), (32, 32)
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


def _on_crops(*items: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The items' teacher heatmaps and seen maps as the training step computes them from a collated batch."""
    batch = default_collate(list(items))
    return teacher_on_crops(batch["teacher"], batch["teacher_matrix"], batch["teacher_channels"], HEATMAP)


def test_without_augmentation_the_cached_heatmaps_are_used_as_is(person: SampleRecord) -> None:
    dataset = _dataset(person, None)
    item = dataset[0]
    np.testing.assert_array_equal(item["teacher"].numpy(), dataset.teacher(person).heatmaps)
    assert torch.equal(item["teacher_matrix"], torch.from_numpy(IDENTITY))
    teacher, seen = _on_crops(item)
    assert torch.equal(teacher[0], item["teacher"]) and torch.equal(seen, torch.ones(1, 1, HEATMAP[1], HEATMAP[0]))
    assert item["image"].shape == (128, 128, 3) and item["image"].dtype == torch.uint8 and item["labelled"] is True


STRONG = AugmentConfig(scale_factor=0.3, rotation_factor=40.0, rotation_prob=1.0, flip_prob=0.5, half_body_prob=0.0)
"""Strong rotation and scale, flips half of the time."""


def _augmented_items(person: SampleRecord, epochs: int = 6) -> list[dict]:
    """``epochs`` samples of ``person`` under :data:`STRONG`, one per epoch."""
    dataset = _dataset(person, STRONG)
    items = []
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        items.append(dataset[0])
    return items


def test_batched_teacher_warp_equals_the_per_sample_warp(person: SampleRecord) -> None:
    # Strong augmentations, flips included: the batch's one grid_sample must give each sample's own warp, its
    # left/right swap and its view channel, as the per-sample warp in the workers did.
    items = _augmented_items(person, epochs=8)
    flips = [bool((item["teacher_channels"] != torch.arange(16)).any()) for item in items]
    assert any(flips) and not all(flips)
    teacher, seen = _on_crops(*items)
    for i, item in enumerate(items):
        with_view = torch.cat([item["teacher"], torch.ones(1, HEATMAP[1], HEATMAP[0])])
        expected = _per_sample_warp(with_view, item["teacher_matrix"].numpy(), HEATMAP)
        maps = expected[:-1][torch.as_tensor(MPII.flip_permutation())] if flips[i] else expected[:-1]
        torch.testing.assert_close(teacher[i], maps, rtol=0, atol=1e-6)
        torch.testing.assert_close(seen[i], expected[-1:], rtol=0, atol=1e-6)


def test_step_inputs_complete_the_samples_as_the_workers_did(person: SampleRecord) -> None:
    items = _augmented_items(person)
    codec = HeatmapCodec(INPUT, HEATMAP)
    inputs = step_inputs(default_collate(items), codec, torch.device("cpu"), cached_teacher=True)
    teacher, seen = _on_crops(*items)
    assert torch.equal(inputs.teacher, teacher) and torch.equal(inputs.teacher_seen, seen)
    for i, item in enumerate(items):
        # the network input of the uint8 crop, and HRNet's targets of the joints the crop's draws put there
        assert torch.equal(inputs.images[i], to_tensor(Image.fromarray(item["image"].numpy()), "RGB"))
        params = sample_crop(person, STRONG, np.random.default_rng([3, i, 0]), 120, MPII, INPUT)
        target, weight = codec.encode(*transform_joints(person.joints, person.visibility, params, INPUT, 120, MPII))
        np.testing.assert_array_equal(inputs.target[i].numpy(), target)
        np.testing.assert_array_equal(inputs.target_weight[i].numpy(), weight)
    assert inputs.labelled.all()
    gt_only = step_inputs(default_collate(items), codec, torch.device("cpu"), cached_teacher=False)
    assert gt_only.teacher is None and gt_only.teacher_seen is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_step_inputs_on_cuda_equal_the_cpu_ones_without_a_sync(person: SampleRecord) -> None:
    batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v
             for k, v in default_collate(_augmented_items(person)).items()}  # fmt: skip
    codec = HeatmapCodec(INPUT, HEATMAP)
    cpu = step_inputs(batch, codec, torch.device("cpu"), cached_teacher=True)
    step_inputs(batch, codec, torch.device("cuda"), cached_teacher=True)  # pinned-memory buffers, kernels loaded
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host-device sync in the step raises
    try:
        gpu = step_inputs(batch, codec, torch.device("cuda"), cached_teacher=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for name, value in cpu._asdict().items():
        torch.testing.assert_close(getattr(gpu, name).cpu(), value, rtol=0, atol=1e-5, msg=name)


def test_sample_image_is_opencv_crop_of_the_decoded_image(person: SampleRecord) -> None:
    augment = AugmentConfig(rotation_prob=1.0, flip_prob=1.0, half_body_prob=0.0)
    dataset = _dataset(person, augment)
    picture = np.asarray(Image.open(person.path).convert("RGB"))
    params = sample_crop(person, augment, np.random.default_rng([3, 0, 0]), 120, MPII, INPUT)
    matrix = crop_params_matrix(params, INPUT, 120)
    expected = cv2.warpAffine(picture, matrix, INPUT, flags=cv2.INTER_LINEAR, borderValue=0)
    np.testing.assert_array_equal(dataset[0]["image"].numpy(), expected)
    # Against Pillow's crop of the same matrix (teacher and evaluation crops): the interior agrees to one grey
    # level, the one-pixel band along the image border does not (OpenCV blends it towards black, Pillow keeps it).
    pil = np.asarray(warp_image(Image.fromarray(picture), matrix, INPUT)).astype(int)
    source = apply_affine(np.stack(np.meshgrid(np.arange(128), np.arange(128)), -1).reshape(-1, 2).astype(float),
                          invert_affine(matrix)).reshape(128, 128, 2)  # fmt: skip
    interior = np.all((source >= 0.5) & (source <= np.array([120, 90]) - 1.5), axis=2)
    assert 0 < np.abs(pil - expected)[interior].max() <= 1
    normalised = normalize_images(dataset[0]["image"])
    torch.testing.assert_close(normalised, to_tensor(Image.fromarray(expected), "RGB"), rtol=0, atol=0)


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
        teacher, _ = _on_crops(item)
        for k in np.flatnonzero(inside):
            np.testing.assert_allclose(_centroid(teacher[0, k].numpy()), exact[k], atol=0.2)
        gt_xy, _ = codec.decode(codec.encode(item["joints"][None], item["visibility"][None])[0])
        # the GT Gaussian sits on the nearest heatmap pixel (HRNet's rule): within half a pixel per axis
        np.testing.assert_array_less(np.abs(gt_xy[0].numpy() - exact)[inside], 0.51)
        checked += int(inside.sum())
    assert checked > 20


def test_teacher_seen_marks_the_part_of_the_augmented_crop_the_teacher_saw(person: SampleRecord) -> None:
    assert torch.equal(_on_crops(_dataset(person, None)[0])[1], torch.ones(1, 1, HEATMAP[1], HEATMAP[0]))
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
        teacher, seen = (x[0] for x in _on_crops(item))
        assert np.all(seen[0].numpy()[inside] > 0.999) and np.all(seen[0].numpy()[outside] == 0)
        if outside.any():
            assert teacher[:, outside].abs().max() == 0  # the warped maps are zero there
            seen_somewhere_unseen = True
    assert seen_somewhere_unseen


def test_augmentation_is_a_function_of_seed_epoch_and_index(person: SampleRecord) -> None:
    dataset = _dataset(person, AugmentConfig())
    first, again = dataset[0], dataset[0]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["teacher_matrix"], again["teacher_matrix"])
    dataset.set_epoch(1)
    assert not torch.equal(first["image"], dataset[0]["image"])


def test_persistent_workers_draw_each_epochs_crops(person: SampleRecord) -> None:
    dataset = _dataset(person, STRONG)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1, persistent_workers=True)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        (item,) = list(loader)  # the worker started at epoch 0 and was kept
        assert torch.equal(item["image"], dataset[0]["image"]), f"epoch {epoch}"
        assert torch.equal(item["teacher_matrix"], dataset[0]["teacher_matrix"])
    assert dataset.epoch == 2 and not torch.equal(item["image"], _dataset(person, STRONG)[0]["image"])


def test_unlabeled_records_have_zero_targets(person: SampleRecord) -> None:
    unlabeled = SampleRecord(source="folder/x", root=person.root, image=person.image, center=person.center,
                              scale=person.scale, instance_id="0")
    item = _dataset(unlabeled, None)[0]
    assert item["labelled"] is False
    target, target_weight = HeatmapCodec(INPUT, HEATMAP).encode(item["joints"], item["visibility"])
    assert target.abs().sum() == 0 and target_weight.sum() == 0
    assert item["teacher"].shape == (16, 32, 32)


def test_crop_params_of_record_match_cache_crop(person: SampleRecord) -> None:
    assert CropParams.from_record(person).center == person.center
