"""Training samples: one random crop applied alike to the image, the GT joints and the cached teacher heatmaps.

The teacher cache holds, for each record, the flip-tested heatmaps of the *unaugmented* crop
``M_cached = crop_matrix(center, scale, rotation, heatmap_size)``. A training sample draws one augmentation
(``pipeline.augment.sample_crop``) whose matrix at heatmap resolution is ``M_aug``; the cached heatmaps move
with the affine ``A = M_aug @ inverse(M_cached)`` (cached heatmap pixels -> augmented heatmap pixels), and a
flip also swaps left/right channels. Without augmentation ``A`` is the identity and the cached array is used
as is (bit-exact).

A training image that cannot be decoded must not stop a run (nor kill a DataLoader worker): the sample is
logged, naming the file and the cause, and the next record's sample takes its place (up to
``MAX_SUBSTITUTES`` in a row; more means the data is broken, and that raises).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

from models.joints import JointSet
from pipeline.augment import AugmentConfig, CropParams, crop_params_matrix, sample_crop, transform_joints
from pipeline.codec import HeatmapCodec
from pipeline.data.images import ImageDecodeError, load_image, to_tensor
from pipeline.geometry import Size, compose_affine, crop_matrix, invert_affine, warp_image
from pipeline.records import SampleRecord

logger = logging.getLogger(__name__)

MAX_SUBSTITUTES = 16
"""Undecodable images in a row that a sample may skip over before the dataset gives up."""


@dataclass(frozen=True)
class CachedTarget:
    """Teacher heatmaps of one record and the crop they were computed on.

    Attributes:
        heatmaps: (K, h, w) float32, the teacher's flip-tested output on the unaugmented crop.
        center, scale, rotation: that crop (the cached record's box).
    """

    heatmaps: np.ndarray
    center: tuple[float, float]
    scale: tuple[float, float]
    rotation: float = 0.0


class TeacherTargets(Protocol):
    """Where cached teacher heatmaps come from (``storage.cache``), looked up by record."""

    def __call__(self, record: SampleRecord) -> CachedTarget: ...


def heatmap_normalizer(size: Size) -> np.ndarray:
    """(3, 3) matrix from pixel-centre coordinates to ``grid_sample``'s [-1, 1] with ``align_corners=False``.

    With ``align_corners=False`` -1 and +1 are the outer *edges* of the border pixels, i.e. pixel coordinates
    -0.5 and ``size - 0.5``, so ``x_norm = (2 * x + 1) / size - 1``.
    """
    w, h = size
    return np.array([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]])


def warp_heatmaps(heatmaps: Tensor, matrix: np.ndarray | Tensor, output_size: Size) -> Tensor:
    """Warp heatmaps with a source-to-destination affine, bilinear, zeros outside (``cv2.warpAffine``'s result).

    Args:
        heatmaps: (N, K, H, W) or (K, H, W) float tensor.
        matrix: (2, 3) or (N, 2, 3) affine from source heatmap pixels to output pixels (pixel centres on integers).
        output_size: (width, height) of the result.

    Returns:
        Tensor (N, K, h, w) (or (K, h, w) for an unbatched input) of ``heatmaps.dtype``.
    """
    unbatched = heatmaps.dim() == 3
    batch = heatmaps[None] if unbatched else heatmaps
    n, _, in_h, in_w = batch.shape
    mats = np.asarray(matrix.detach().cpu() if isinstance(matrix, Tensor) else matrix, dtype=np.float64)
    mats = np.broadcast_to(mats.reshape(-1, 2, 3), (n, 2, 3))
    # affine_grid wants output-normalised -> input-normalised coordinates: N_in @ inverse(A) @ inverse(N_out).
    norm_in = heatmap_normalizer((in_w, in_h))
    norm_out_inv = np.linalg.inv(heatmap_normalizer(output_size))
    thetas = np.stack([(norm_in @ _homogeneous(invert_affine(m)) @ norm_out_inv)[:2] for m in mats])
    theta = torch.as_tensor(thetas, dtype=batch.dtype if batch.is_floating_point() else torch.float32)
    theta = theta.to(batch.device)
    grid = F.affine_grid(theta, [n, batch.shape[1], output_size[1], output_size[0]], align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0] if unbatched else out


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    return np.concatenate([matrix, [[0.0, 0.0, 1.0]]], axis=0)


def cached_to_augmented(cached: CachedTarget, aug_matrix: np.ndarray, cached_size: Size) -> np.ndarray:
    """``A = M_aug @ inverse(M_cached)``: cached heatmap pixels -> augmented heatmap pixels (2, 3)."""
    m_cached = crop_matrix(cached.center, cached.scale, cached.rotation, cached_size)
    return compose_affine(aug_matrix, invert_affine(m_cached))


class DistillDataset(Dataset):
    """Training samples for FPD: augmented crop, GT Gaussian targets and matching teacher heatmaps.

    Each item draws its augmentation from a generator seeded by ``(seed, epoch, index)``, so a sample is the
    same whichever worker or rank loads it and a resumed run sees the same crops (call :meth:`set_epoch`).

    Args:
        records: samples to train on (labelled or not).
        joint_set: joint names and flip pairs of the heatmap channels.
        input_size: student input (w, h).
        heatmap_size: student heatmap (w, h).
        color_order: ``"RGB"`` or ``"BGR"`` (the student preset's).
        codec: ``pipeline.codec.HeatmapCodec`` that encodes GT joints into Gaussian targets.
        teacher: cached teacher targets by record, or None (GT alone, or the teacher runs online).
        augment: ``pipeline.augment.AugmentConfig``; None crops the record's box as is.
        seed: base seed of the augmentation.

    Items are dicts: ``image`` (3, H_in, W_in) float32, ``target`` (K, h, w) float32 (zeros when unlabeled),
    ``target_weight`` (K,) float32, ``teacher`` (K, h, w) float32 (zeros without a cache), ``labelled`` bool,
    ``index`` int (the record the sample is of: the next decodable one when ``records[i]``'s image is not).
    """

    def __init__(
        self,
        records: Sequence[SampleRecord],
        *,
        joint_set: JointSet,
        input_size: Size,
        heatmap_size: Size,
        color_order: str,
        codec: HeatmapCodec,
        teacher: TeacherTargets | None = None,
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.records = list(records)
        self.joint_set = joint_set
        self.input_size = tuple(input_size)
        self.heatmap_size = tuple(heatmap_size)
        self.color_order = color_order
        self.codec = codec
        self.teacher = teacher
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._flip_perm = torch.as_tensor(joint_set.flip_permutation())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's augmentation draws (call before iterating, like ``DistributedSampler.set_epoch``)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Tensor | int | bool]:
        tries = min(MAX_SUBSTITUTES + 1, len(self.records))
        for offset in range(tries):
            candidate = (index + offset) % len(self.records)
            record = self.records[candidate]
            try:
                image = load_image(record.path, exif_orientation=record.apply_exif_orientation).image
            except ImageDecodeError as exc:
                logger.warning("training sample %d skipped, the next one takes its place: %s", candidate, exc)
                continue
            return self._sample(candidate, record, image)
        raise ImageDecodeError(f"{self.records[index].path} and the {tries - 1} training image(s) after it cannot "
                               "be decoded; check the data")  # fmt: skip

    def _sample(self, index: int, record: SampleRecord, image: Image.Image) -> dict[str, Tensor | int | bool]:
        """The sample of ``records[index]`` on its decoded ``image``; its draws depend on ``index`` alone."""
        if self.augment is None:
            params = CropParams.from_record(record)
        else:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            params = sample_crop(record, self.augment, rng, image.width, self.joint_set, self.input_size)
        crop = warp_image(image, crop_params_matrix(params, self.input_size, image.width), self.input_size)
        k = self.joint_set.num_joints
        hm_w, hm_h = self.heatmap_size
        sample: dict[str, Tensor | int | bool] = {"image": to_tensor(crop, self.color_order), "index": index}

        if record.labelled:
            joints, visibility = transform_joints(
                record.joints, record.visibility, params, self.input_size, image.width, self.joint_set
            )
            targets, weights = self.codec.encode(np.asarray(joints)[None], np.asarray(visibility)[None])
            sample["target"] = torch.from_numpy(np.ascontiguousarray(targets[0], dtype=np.float32))
            sample["target_weight"] = torch.from_numpy(np.ascontiguousarray(weights[0], dtype=np.float32))
        else:
            sample["target"] = torch.zeros(k, hm_h, hm_w)
            sample["target_weight"] = torch.zeros(k)
        sample["labelled"] = record.labelled

        if self.teacher is None:
            sample["teacher"] = torch.zeros(k, hm_h, hm_w)
            sample["teacher_seen"] = torch.ones(1, hm_h, hm_w)
        else:
            sample["teacher"], sample["teacher_seen"] = self._teacher_heatmaps(record, params, image.width)
        return sample

    def _teacher_heatmaps(self, record: SampleRecord, params: CropParams, image_width: int) -> tuple[Tensor, Tensor]:
        """The cached heatmaps warped to the augmented crop, and (1, h, w) the share of each pixel that the cached
        crop covers (1 inside, 0 where the augmentation zoomed out or rotated beyond what the teacher saw)."""
        cached = self.teacher(record)
        heatmaps = torch.from_numpy(np.ascontiguousarray(cached.heatmaps, dtype=np.float32))
        cached_size = (heatmaps.shape[-1], heatmaps.shape[-2])
        same_crop = (
            tuple(params.center) == tuple(cached.center)
            and tuple(params.scale) == tuple(cached.scale)
            and params.rotation == cached.rotation
            and not params.flip
        )
        if same_crop and cached_size == self.heatmap_size:
            # unaugmented: the cached array itself, bit-exact
            return heatmaps, torch.ones(1, self.heatmap_size[1], self.heatmap_size[0])
        aug_matrix = crop_params_matrix(params, self.heatmap_size, image_width)
        with_view = torch.cat([heatmaps, torch.ones_like(heatmaps[:1])])  # one warp for the maps and their view
        warped = warp_heatmaps(with_view, cached_to_augmented(cached, aug_matrix, cached_size), self.heatmap_size)
        warped, seen = warped[:-1], warped[-1:]
        # The matrix already mirrors the picture; the channels must follow (left wrist back on "left wrist").
        return (warped[self._flip_perm] if params.flip else warped), seen

