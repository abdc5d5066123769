"""Training samples: one random crop applied alike to the image, the GT joints and the cached teacher heatmaps.

The teacher cache holds, for each record, the flip-tested heatmaps of the *unaugmented* crop
``M_cached = crop_matrix(center, scale, rotation, heatmap_size)``. A training sample draws one augmentation
(``pipeline.augment.sample_crop``) whose matrix at heatmap resolution is ``M_aug``; the cached heatmaps move
with the affine ``A = M_aug @ inverse(M_cached)`` (cached heatmap pixels -> augmented heatmap pixels), and a
flip also swaps left/right channels. A sample carries the cached maps, ``A`` and the channel order; the training
step warps the whole batch at once on its device (:func:`teacher_on_crops`, one ``grid_sample``), instead of
each DataLoader worker warping its samples on the CPU. Without augmentation ``A`` is exactly the identity and
the cached array is used as is (bit-exact).

The image is decoded and cropped as HRNet does (OpenCV's decoder and ``warpAffine``) and handed over as uint8
pixels, a quarter of the float32 bytes through the worker queues; the step normalises the batch
(``pipeline.data.images.normalize_images``).

A training image that cannot be decoded must not stop a run (nor kill a DataLoader worker): the sample is
logged, naming the file and the cause, and the next record's sample takes its place (up to
``MAX_SUBSTITUTES`` in a row; more means the data is broken, and that raises).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

from models.joints import JointSet
from pipeline.augment import AugmentConfig, CropParams, crop_params_matrix, move_joints, sample_crop
from pipeline.codec import HeatmapCodec
from pipeline.data.images import ImageDecodeError, load_image_array, normalize_images
from pipeline.geometry import Size, compose_affine, crop_matrix, invert_affine, warp_array
from pipeline.records import SampleRecord

logger = logging.getLogger(__name__)

MAX_SUBSTITUTES = 16
"""Undecodable images in a row that a sample may skip over before the dataset gives up."""

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
"""The (2, 3) identity: the teacher matrix of a sample whose crop is the cached one."""


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

    A sample whose matrix is exactly the identity, at an unchanged size, is passed through bit-exact (and a batch
    of only such samples is not resampled at all).

    Args:
        heatmaps: (N, K, H, W) or (K, H, W) float tensor, on any device.
        matrix: (2, 3) or (N, 2, 3) affine from source heatmap pixels to output pixels (pixel centres on integers);
            an array or a CPU tensor (the sampling grids' matrices are computed on the host, float64).
        output_size: (width, height) of the result.

    Returns:
        Tensor (N, K, h, w) (or (K, h, w) for an unbatched input) of ``heatmaps.dtype``.
    """
    unbatched = heatmaps.dim() == 3
    batch = heatmaps[None] if unbatched else heatmaps
    n, k, in_h, in_w = batch.shape
    mats = np.asarray(matrix.detach().cpu() if isinstance(matrix, Tensor) else matrix, dtype=np.float64)
    mats = np.broadcast_to(mats.reshape(-1, 2, 3), (n, 2, 3))
    kept = np.all(mats == IDENTITY, axis=(1, 2)) & ((in_w, in_h) == tuple(output_size))
    if kept.all():
        return heatmaps
    dtype = batch.dtype if batch.is_floating_point() else torch.float32
    theta = _from_host(_grid_thetas(mats, (in_w, in_h), output_size), dtype, batch.device)
    grid = F.affine_grid(theta, [n, k, output_size[1], output_size[0]], align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if kept.any():
        out = torch.where(_from_host(kept, torch.bool, batch.device)[:, None, None, None], batch, out)
    return out[0] if unbatched else out


def _grid_thetas(mats: np.ndarray, input_size: Size, output_size: Size) -> np.ndarray:
    """(N, 2, 3) ``affine_grid`` matrices (output-normalised -> input-normalised): ``N_in @ A^-1 @ N_out^-1``."""
    linear_inv = np.linalg.inv(mats[:, :, :2])
    inverse = np.zeros((len(mats), 3, 3))
    inverse[:, :2, :2] = linear_inv
    inverse[:, :2, 2] = -(linear_inv @ mats[:, :, 2:])[..., 0]
    inverse[:, 2, 2] = 1.0
    return (heatmap_normalizer(input_size) @ inverse @ np.linalg.inv(heatmap_normalizer(output_size)))[:, :2]


def _from_host(array: np.ndarray, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A host array on ``device``; on CUDA through pinned memory and an asynchronous copy, which (unlike a copy from
    pageable memory) does not wait for the GPU to finish the work already queued."""
    tensor = torch.as_tensor(array, dtype=dtype)
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor.to(device)


def teacher_on_crops(heatmaps: Tensor, matrices: Tensor, channels: Tensor, output_size: Size) -> tuple[Tensor, Tensor]:
    """A batch's cached teacher heatmaps on its augmented crops, and where the cached crops cover them.

    The training step's half of :class:`DistillDataset`'s teacher targets (``teacher``, ``teacher_matrix``,
    ``teacher_channels``): one ``grid_sample`` of the batch on its device, its view channel included.

    Args:
        heatmaps: (N, K, h_c, w_c) cached heatmaps, on the training device.
        matrices: (N, 2, 3) float64 CPU tensor, cached heatmap pixels -> augmented heatmap pixels.
        channels: (N, K) long, on ``heatmaps``' device: channel ``k`` of a result is warped channel
            ``channels[n, k]`` (the left/right swap of a flipped crop; ``arange(K)`` otherwise).
        output_size: (w, h) of the student's heatmaps.

    Returns:
        teacher (N, K, h, w), and seen (N, 1, h, w): the share of each pixel that the cached crop covers (1 inside,
        0 where the augmentation zoomed out or rotated beyond what the teacher saw).
    """
    n, k, in_h, in_w = heatmaps.shape
    with_view = torch.cat([heatmaps, heatmaps.new_ones(n, 1, in_h, in_w)], dim=1)
    warped = warp_heatmaps(with_view, matrices, output_size)
    teacher, seen = warped[:, :k], warped[:, k:]
    # The matrix already mirrors the picture; the channels must follow (left wrist back on "left wrist").
    return teacher.gather(1, channels[:, :, None, None].expand(-1, -1, *teacher.shape[2:])), seen


class StepInputs(NamedTuple):
    """A :class:`DistillDataset` batch made ready for the loss on the training device (:func:`step_inputs`).

    Attributes:
        images: (N, 3, H_in, W_in) float32, normalised.
        target: (N, K, h, w) float32 ground-truth Gaussians (zeros for unlabeled samples).
        target_weight: (N, K) float32.
        labelled: (N,) bool.
        teacher: (N, K, h, w) float32 cached teacher heatmaps on the augmented crops, or None.
        teacher_seen: (N, 1, h, w) float32, where the cached crops cover the augmented ones, or None.
    """

    images: Tensor
    target: Tensor
    target_weight: Tensor
    labelled: Tensor
    teacher: Tensor | None
    teacher_seen: Tensor | None


def step_inputs(
    batch: dict[str, Tensor], codec: HeatmapCodec, device: torch.device, *, cached_teacher: bool
) -> StepInputs:
    """The training step's half of a sample, for the whole batch on ``device``: normalise the uint8 crops, encode the
    joints into GT targets and (``cached_teacher``) warp the cached teacher heatmaps to the crops.

    Per sample in the DataLoader workers this was most of a sample's CPU time besides the decode; batched on the
    accelerator it is a few kernels. Nothing is read back to the host (no sync).

    Args:
        batch: a collated :class:`DistillDataset` batch (CPU, pinned by the DataLoader when training on CUDA).
        codec: the dataset's codec (student input and heatmap sizes, sigma).
        device: the training device.
        cached_teacher: warp ``batch["teacher"]``; False leaves ``teacher`` and ``teacher_seen`` None.
    """

    def put(name: str) -> Tensor:
        return batch[name].to(device, non_blocking=True)

    target, target_weight = codec.encode(put("joints"), put("visibility"))
    teacher = seen = None
    if cached_teacher:
        teacher, seen = teacher_on_crops(put("teacher"), batch["teacher_matrix"], put("teacher_channels"),
                                         codec.heatmap_size)  # fmt: skip
    return StepInputs(normalize_images(put("image")), target, target_weight, put("labelled"), teacher, seen)


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

    Items are dicts of what a worker does best, per sample on the CPU; :func:`step_inputs` completes a batch of them
    on the training device. ``image`` (H_in, W_in, 3) uint8 in ``color_order`` (normalised by the step),
    ``joints`` (K, 2) float32 in input-crop pixels and ``visibility`` (K,) float32 (zeros when unlabeled; the step
    encodes them into the GT targets), ``labelled`` bool, ``index`` int (the record the sample is of: the next
    decodable one when ``records[i]``'s image is not), and the teacher's targets, which the step warps:
    ``teacher`` (K, h_c, w_c) float32, the cached heatmaps as read (zeros of the student's size without a cache),
    ``teacher_matrix`` (2, 3) float64, cached heatmap pixels -> this sample's heatmap pixels (exactly the identity
    when the crop is the cached one, and without a cache), and ``teacher_channels`` (K,) int64, the channel order
    after the warp (the flip permutation on a flip).
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
        # In shared memory: persistent DataLoader workers keep the dataset they were started with, and a plain
        # attribute set in the main process never reached them (every epoch drew epoch 0's crops).
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._flip_order = np.asarray(joint_set.flip_permutation())
        self._flipped_channels = torch.from_numpy(self._flip_order.astype(np.int64))
        self._same_channels = torch.arange(joint_set.num_joints)

    @property
    def epoch(self) -> int:
        """The epoch whose augmentation draws the items use."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's augmentation draws (call before iterating, like ``DistributedSampler.set_epoch``); the
        DataLoader's workers, persistent ones included, see it."""
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Tensor | int | bool]:
        tries = min(MAX_SUBSTITUTES + 1, len(self.records))
        for offset in range(tries):
            candidate = (index + offset) % len(self.records)
            record = self.records[candidate]
            try:
                image = load_image_array(record.path, self.color_order, exif_orientation=record.apply_exif_orientation)
            except ImageDecodeError as exc:
                logger.warning("training sample %d skipped, the next one takes its place: %s", candidate, exc)
                continue
            return self._sample(candidate, record, image)
        raise ImageDecodeError(f"{self.records[index].path} and the {tries - 1} training image(s) after it cannot "
                               "be decoded; check the data")  # fmt: skip

    def _sample(self, index: int, record: SampleRecord, image: np.ndarray) -> dict[str, Tensor | int | bool]:
        """The sample of ``records[index]`` on its decoded (H, W, 3) ``image``; its draws depend on ``index`` alone."""
        width = image.shape[1]
        if self.augment is None:
            params = CropParams.from_record(record)
        else:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            params = sample_crop(record, self.augment, rng, width, self.joint_set, self.input_size)
        matrix = crop_params_matrix(params, self.input_size, width)
        crop = warp_array(image, matrix, self.input_size)
        k = self.joint_set.num_joints
        sample: dict[str, Tensor | int | bool] = {"image": torch.from_numpy(crop), "index": index}

        if record.labelled:
            # transform_joints, with the crop's matrix
            joints, visibility = move_joints(record.joints, record.visibility, matrix,
                                             self._flip_order if params.flip else None)  # fmt: skip
            sample["joints"], sample["visibility"] = torch.from_numpy(joints), torch.from_numpy(visibility)
        else:
            sample["joints"], sample["visibility"] = torch.zeros(k, 2), torch.zeros(k)
        sample["labelled"] = record.labelled

        if self.teacher is None:
            sample["teacher"] = torch.zeros(k, self.heatmap_size[1], self.heatmap_size[0])
            teacher_matrix = IDENTITY.copy()
        else:
            cached = self.teacher(record)
            sample["teacher"] = torch.from_numpy(np.ascontiguousarray(cached.heatmaps, dtype=np.float32))
            teacher_matrix = self._teacher_matrix(cached, params, width)
        sample["teacher_matrix"] = torch.from_numpy(teacher_matrix)
        sample["teacher_channels"] = self._flipped_channels if params.flip else self._same_channels
        return sample

    def _teacher_matrix(self, cached: CachedTarget, params: CropParams, image_width: int) -> np.ndarray:
        """(2, 3) cached heatmap pixels -> this crop's heatmap pixels; exactly the identity for the cached crop."""
        cached_size = (cached.heatmaps.shape[-1], cached.heatmaps.shape[-2])
        same_crop = (
            tuple(params.center) == tuple(cached.center)
            and tuple(params.scale) == tuple(cached.scale)
            and params.rotation == cached.rotation
            and not params.flip
        )
        if same_crop and cached_size == self.heatmap_size:
            return IDENTITY.copy()
        aug_matrix = crop_params_matrix(params, self.heatmap_size, image_width)
        return cached_to_augmented(cached, aug_matrix, cached_size)
