"""Affine geometry of person crops: one 2x3 matrix family for images, joints and heatmaps.

Conventions (HRNet's, so published weights see the crops they were trained on):

* a matrix maps *source* pixel coordinates to *destination* pixel coordinates, pixel centres on
  integers (OpenCV's ``warpAffine`` convention);
* the crop of ``(center, scale, rotation)`` to ``output_size`` is a similarity: the box width
  ``scale[0] * 200`` maps onto the output width, the box centre onto the output centre
  ``(w / 2, h / 2)``; the box height is not used (boxes are made to the input aspect ratio first);
* the matrix at heatmap resolution is the same crop with ``output_size`` the heatmap size, which equals
  the input-resolution matrix scaled by ``1 / stride``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from pipeline.records import PIXEL_STD

Size = tuple[int, int]
"""(width, height) in pixels."""


def crop_matrix(
    center: Sequence[float],
    scale: Sequence[float],
    rotation: float,
    output_size: Size,
    shift: Sequence[float] = (0.0, 0.0),
    inverse: bool = False,
) -> np.ndarray:
    """The 2x3 matrix that maps image pixels into the crop (or back, with ``inverse``).

    Closed form of HRNet's ``get_affine_transform``: a rotation by ``-rotation`` degrees and a uniform
    zoom ``output_w / (scale_w * 200)`` about the box centre, which lands on the output centre.

    Args:
        center: box centre (x, y) in image pixels.
        scale: box size (w, h) in units of 200 pixels; only w is used.
        rotation: degrees, counter-clockwise in the image as HRNet draws it.
        output_size: (width, height) of the crop.
        shift: centre shift as a fraction of the box size (HRNet's ``shift``).
        inverse: return the crop-to-image matrix instead.

    Returns:
        (2, 3) float64 matrix.
    """
    src_w = float(scale[0]) * PIXEL_STD
    zoom = output_size[0] / src_w
    theta = np.deg2rad(rotation)
    cs, sn = np.cos(theta), np.sin(theta)
    linear = zoom * np.array([[cs, sn], [-sn, cs]])  # zoom * R(-theta)
    src_center = np.asarray(center, dtype=np.float64) + np.asarray(scale, dtype=np.float64) * PIXEL_STD * np.asarray(
        shift, dtype=np.float64
    )
    dst_center = np.array([output_size[0] * 0.5, output_size[1] * 0.5])
    matrix = np.concatenate([linear, (dst_center - linear @ src_center)[:, None]], axis=1)
    return invert_affine(matrix) if inverse else matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix."""
    linear_inv = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear_inv, (-linear_inv @ matrix[:, 2])[:, None]], axis=1)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The matrix of ``outer(inner(p))``."""
    return to_homogeneous(outer)[:2] @ to_homogeneous(inner)


def to_homogeneous(matrix: np.ndarray) -> np.ndarray:
    """(2, 3) -> (3, 3) with the row [0, 0, 1]."""
    return np.concatenate([matrix, np.array([[0.0, 0.0, 1.0]])], axis=0)


def scale_matrix(factor_x: float, factor_y: float | None = None) -> np.ndarray:
    """Matrix that scales coordinates about the origin (e.g. input to heatmap resolution: ``1 / stride``)."""
    return np.array([[factor_x, 0.0, 0.0], [0.0, factor_x if factor_y is None else factor_y, 0.0]])


def hflip_matrix(width: int) -> np.ndarray:
    """Horizontal flip of an image ``width`` pixels wide, in pixel-centre coordinates (x -> width - 1 - x)."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) matrix to points of shape (..., 2)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_image(image: Image.Image, matrix: np.ndarray, output_size: Size, fill: int = 0) -> Image.Image:
    """Warp a PIL image with an image-to-output matrix, bilinear, as ``cv2.warpAffine`` would.

    Pillow samples output pixel (x, y) at input ``A @ (x + 0.5, y + 0.5) + t - 0.5`` (pixel corners on
    integers); the translation is corrected so that the result matches OpenCV's pixel-centre convention.
    """
    inv = invert_affine(matrix)
    linear, t = inv[:, :2], inv[:, 2]
    t_pil = t - linear @ np.array([0.5, 0.5]) + 0.5
    coeffs = (linear[0, 0], linear[0, 1], t_pil[0], linear[1, 0], linear[1, 1], t_pil[1])
    fillcolor = fill if image.mode in ("L", "F", "I") else (fill,) * len(image.getbands())
    return image.transform(output_size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=fillcolor)


def warp_array(image: np.ndarray, matrix: np.ndarray, output_size: Size, fill: int = 0) -> np.ndarray:
    """Warp an (H, W, C) array with an image-to-output matrix: ``cv2.warpAffine``, bilinear, ``fill`` outside.

    The matrices' convention is OpenCV's, so the crop is HRNet's own (its ``JointsDataset`` crops with this call).
    It differs from :func:`warp_image` by OpenCV's 1/32-pixel interpolation weights inside the image and on the
    one-pixel band along the image border, which OpenCV blends towards ``fill`` and Pillow does not
    (docs/training.md gives the measured difference).
    """
    return cv2.warpAffine(image, matrix, output_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(fill,) * 4)  # fmt: skip


BOX_PADDING = 1.25
"""HRNet pads every COCO person box (ground truth or detector) by this before cropping (``_xywh2cs``)."""


def box_to_center_scale(
    x: float, y: float, w: float, h: float, aspect_ratio: float, padding: float = BOX_PADDING
) -> tuple[tuple[float, float], tuple[float, float]]:
    """COCO box (x, y, w, h) to HRNet centre/scale, widened to ``aspect_ratio`` (w / h) and padded.

    Matches HRNet's ``_xywh2cs``: the centre is ``x + w / 2`` (no half-pixel term), the shorter side is grown
    to the aspect ratio, and both sides are multiplied by ``padding``.
    """
    center = (x + w * 0.5, y + h * 0.5)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    return center, (w / PIXEL_STD * padding, h / PIXEL_STD * padding)
