"""Training-time crop augmentation: random scale, rotation, horizontal flip and half-body, as HRNet draws them.

One ``CropParams`` describes the crop of a sample. ``crop_params_matrix`` turns it into the 2x3 matrix for any
output resolution: at the input size it crops the image and the ground-truth joints, at the heatmap size it
warps cached teacher heatmaps, so image, joints and teacher targets stay aligned.

HRNet's ``JointsDataset.__getitem__`` flips the image array (``x -> width - 1 - x``), moves the centre to
``width - 1 - cx`` and then crops; ``crop_params_matrix`` folds the same flip into one matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.joints import JointSet
from pipeline import geometry
from pipeline.geometry import Size
from pipeline.records import PIXEL_STD, SampleRecord


@dataclass(frozen=True)
class AugmentConfig:
    """HRNet's training augmentation settings (defaults: its COCO configs; ``for_dataset("mpii")`` for MPII).

    Attributes:
        scale_factor: scale multiplier ``clip(1 + sf * randn, 1 - sf, 1 + sf)``.
        rotation_factor: rotation ``clip(rf * randn, -2 rf, 2 rf)`` degrees.
        rotation_prob: probability of rotating at all.
        flip: allow horizontal flips.
        flip_prob: probability of a flip when allowed.
        half_body_prob: probability of trying a half-body crop.
        half_body_num_joints: half-body is tried only with MORE than this many visible joints (HRNet's
            ``NUM_JOINTS_HALF_BODY`` test is a strict ``>``).
        half_body_padding: box enlargement of the half-body crop.
    """

    scale_factor: float = 0.35
    rotation_factor: float = 45.0
    rotation_prob: float = 0.6
    flip: bool = True
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_num_joints: int = 8
    half_body_padding: float = 1.5

    @classmethod
    def for_dataset(cls, name: str) -> AugmentConfig:
        """HRNet's configs for ``"coco"`` (scale 0.35, rotation 45, half-body 0.3) or ``"mpii"`` (scale 0.25,
        rotation 30, no half-body: its MPII configs and FPD's MPII scripts set ``PROB_HALF_BODY: -1``)."""
        if name == "coco":
            return cls()
        if name == "mpii":
            return cls(scale_factor=0.25, rotation_factor=30.0, half_body_prob=0.0)
        raise ValueError(f"no augmentation defaults for dataset {name!r}; known: coco, mpii")


@dataclass(frozen=True)
class CropParams:
    """One crop of an image: the box in unflipped image pixels, its rotation, and whether it is mirrored.

    Attributes:
        center: box centre (x, y) in pixels of the original (unflipped) image.
        scale: box size (w, h) in units of 200 pixels.
        rotation: degrees, counter-clockwise.
        flip: mirror the crop horizontally (left/right joints swap).
    """

    center: tuple[float, float]
    scale: tuple[float, float]
    rotation: float = 0.0
    flip: bool = False

    @classmethod
    def from_record(cls, record: SampleRecord) -> CropParams:
        """The un-augmented crop of a record (what evaluation and the teacher cache use)."""
        return cls(center=tuple(record.center), scale=tuple(record.scale), rotation=record.rotation, flip=False)


def half_body_box(
    joints: np.ndarray, visibility: np.ndarray, joint_set: JointSet, aspect_ratio: float, rng: np.random.Generator,
    padding: float = 1.5,
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """HRNet's ``half_body_transform``: a box around the visible upper or lower body joints.

    The upper body is chosen when ``randn() < 0.5`` (HRNet draws a normal, not a uniform, so about 69 % of
    the time) and it has more than two visible joints; otherwise the lower body if it has more than two.

    Returns:
        (center, scale) of the padded box at ``aspect_ratio`` (w / h), or None with fewer than two joints.
    """
    visible = visibility > 0
    upper = np.zeros(joint_set.num_joints, dtype=bool)
    upper[list(joint_set.upper_body)] = True
    upper_joints, lower_joints = joints[visible & upper], joints[visible & ~upper]
    if rng.standard_normal() < 0.5 and len(upper_joints) > 2:
        selected = upper_joints
    else:
        selected = lower_joints if len(lower_joints) > 2 else upper_joints
    if len(selected) < 2:
        return None
    selected = selected.astype(np.float32)  # HRNet computes the box in float32
    center = selected.mean(axis=0)
    w, h = selected.max(axis=0) - selected.min(axis=0)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    return (float(center[0]), float(center[1])), (float(w / PIXEL_STD * padding), float(h / PIXEL_STD * padding))


def sample_crop(
    record: SampleRecord,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    image_width: int,
    joint_set: JointSet,
    input_size: Size,
) -> CropParams:
    """Draw one random training crop of ``record`` with HRNet's rules (half-body, scale, rotation, flip).

    Args:
        record: the sample; its joints and visibility drive the half-body crop (skipped when unlabeled).
        cfg: augmentation settings.
        rng: the random source (one per worker, seeded by the caller for reproducibility).
        image_width: width of the full image in pixels (kept for symmetry with ``crop_params_matrix``).
        joint_set: the record's joint set (upper body ids for half-body).
        input_size: network input (w, h); its aspect ratio shapes the half-body box.

    Returns:
        The crop parameters; apply them with ``crop_params_matrix``.
    """
    del image_width  # the flip is resolved in crop_params_matrix; the centre stays in unflipped pixels
    center, scale = tuple(record.center), tuple(record.scale)
    if (
        record.joints is not None
        and record.visibility is not None
        and np.sum(record.visibility > 0) > cfg.half_body_num_joints
        and rng.random() < cfg.half_body_prob
    ):
        box = half_body_box(
            np.asarray(record.joints), np.asarray(record.visibility), joint_set, input_size[0] / input_size[1], rng,
            cfg.half_body_padding,
        )
        if box is not None:
            center, scale = box
    sf, rf = cfg.scale_factor, cfg.rotation_factor
    # min/max: np.clip's values, without its dispatch on Python floats (a good share of a sample's Python time)
    zoom = min(max(float(rng.standard_normal()) * sf + 1.0, 1.0 - sf), 1.0 + sf)
    rotation = 0.0
    if rng.random() <= cfg.rotation_prob:
        rotation = min(max(float(rng.standard_normal()) * rf, -2.0 * rf), 2.0 * rf)
    flip = bool(cfg.flip and rng.random() <= cfg.flip_prob)
    return CropParams(
        center=(float(center[0]), float(center[1])),
        scale=(float(scale[0]) * zoom, float(scale[1]) * zoom),
        rotation=record.rotation + rotation,
        flip=flip,
    )


def crop_params_matrix(params: CropParams, output_size: Size, image_width: int) -> np.ndarray:
    """The (2, 3) image-to-crop matrix of ``params`` at ``output_size`` (input size, or heatmap size).

    With ``flip`` it is HRNet's flip-then-crop: mirror the image (``x -> width - 1 - x``), move the centre to
    ``width - 1 - cx``, then crop.

    Args:
        params: the crop.
        output_size: (w, h) of the destination (input crop or heatmap).
        image_width: width of the full image in pixels.
    """
    cx, cy = params.center
    if not params.flip:
        return geometry.crop_matrix((cx, cy), params.scale, params.rotation, output_size)
    crop = geometry.crop_matrix((image_width - 1.0 - cx, cy), params.scale, params.rotation, output_size)
    return geometry.compose_affine(crop, geometry.hflip_matrix(image_width))


def transform_joints(
    joints: np.ndarray,
    visibility: np.ndarray,
    params: CropParams,
    output_size: Size,
    image_width: int,
    joint_set: JointSet,
) -> tuple[np.ndarray, np.ndarray]:
    """Move image-pixel joints into the crop of ``params``; visibility is carried over, never recomputed.

    On a flip the left/right channels are swapped (so channel ``l_wrist`` holds the joint that now looks like
    a left wrist), visibility with them. A joint that lands outside ``[0, w) x [0, h)`` keeps its visibility,
    as in HRNet's ``JointsDataset.__getitem__``: whether it still trains is the codec's call
    (``HeatmapCodec.encode`` keeps weight 1 while its Gaussian window overlaps the heatmap). Callers that want
    "inside the crop" test the returned positions against ``output_size`` themselves.

    Args:
        joints: (K, 2) joint positions in image pixels.
        visibility: (K,) visibility.
        params: the crop.
        output_size: (w, h) of the destination (input crop or heatmap).
        image_width: width of the full image in pixels.
        joint_set: gives the flip permutation.

    Returns:
        joints (K, 2) float32 in destination pixels and visibility (K,) float32.
    """
    matrix = crop_params_matrix(params, output_size, image_width)
    return move_joints(joints, visibility, matrix, joint_set.flip_permutation() if params.flip else None)


def move_joints(
    joints: np.ndarray, visibility: np.ndarray, matrix: np.ndarray, flip_permutation: Sequence[int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`transform_joints` with the crop's matrix at hand (a training sample has it from its image warp).

    Args:
        joints: (K, 2) joint positions in image pixels.
        visibility: (K,) visibility.
        matrix: (2, 3) image-to-crop matrix (``crop_params_matrix``).
        flip_permutation: the channel order of a flipped crop (``JointSet.flip_permutation()``), None unflipped.

    Returns:
        joints (K, 2) float32 in crop pixels and visibility (K,) float32.
    """
    moved = geometry.apply_affine(np.asarray(joints, dtype=np.float64), matrix)
    vis = np.asarray(visibility, dtype=np.float32).copy()
    if flip_permutation is not None:
        moved, vis = moved[flip_permutation], vis[flip_permutation]
    return moved.astype(np.float32), vis
