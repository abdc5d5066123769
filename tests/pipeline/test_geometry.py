"""pipeline.geometry against HRNet's three-point affine construction and OpenCV's warpAffine."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline import geometry


def hrnet_get_affine_transform(center, scale, rot, output_size, shift=(0.0, 0.0), inv=False):
    """HRNet's get_affine_transform: three point pairs (centre, a point above it, a third at 90 degrees)."""
    center = np.asarray(center, np.float32)
    scale_tmp = np.asarray(scale, np.float32) * 200.0
    shift = np.asarray(shift, np.float32)
    src_w = scale_tmp[0]
    dst_w, dst_h = output_size
    rot_rad = np.pi * rot / 180
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    src_dir = np.array([0 * cs - (src_w * -0.5) * sn, 0 * sn + (src_w * -0.5) * cs])
    dst_dir = np.array([0, dst_w * -0.5], np.float32)

    def third(a, b):
        d = a - b
        return b + np.array([-d[1], d[0]], dtype=np.float32)

    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center + scale_tmp * shift
    src[1] = center + src_dir + scale_tmp * shift
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    src[2] = third(src[0], src[1])
    dst[2] = third(dst[0], dst[1])
    return cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize(
    ("center", "scale", "rot", "size", "shift"),
    [
        ((320.0, 240.0), (1.2, 1.6), 0.0, (192, 256), (0.0, 0.0)),
        ((101.5, 77.25), (0.8, 0.8), 30.0, (64, 64), (0.0, 0.0)),
        ((500.0, 90.0), (2.5, 3.3), -47.0, (48, 64), (0.1, -0.05)),
    ],
)
def test_crop_matrix_equals_hrnet_three_point_construction(center, scale, rot, size, shift, inverse):
    ours = geometry.crop_matrix(center, scale, rot, size, shift=shift, inverse=inverse)
    ref = hrnet_get_affine_transform(center, scale, rot, size, shift=shift, inv=inverse)
    # Compare where the matrices send points (HRNet builds them from float32 points).
    points = np.random.default_rng(0).uniform(-50, 600, (20, 2))
    np.testing.assert_allclose(geometry.apply_affine(points, ours), geometry.apply_affine(points, ref), atol=2e-3)


def test_invert_compose_and_homogeneous():
    m = geometry.crop_matrix((50.0, 60.0), (0.7, 0.9), 25.0, (64, 48))
    identity = geometry.compose_affine(m, geometry.invert_affine(m))
    np.testing.assert_allclose(identity, [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    p = np.array([[3.0, 4.0], [10.0, -2.0]])
    np.testing.assert_allclose(
        geometry.apply_affine(p, geometry.compose_affine(m, geometry.scale_matrix(2.0, 3.0))),
        geometry.apply_affine(p * [2.0, 3.0], m),
    )
    assert geometry.to_homogeneous(m).shape == (3, 3)


def test_hflip_matrix_maps_pixel_centres():
    flipped = geometry.apply_affine(np.array([[0.0, 5.0], [9.0, 1.0], [4.5, 0.0]]), geometry.hflip_matrix(10))
    np.testing.assert_array_equal(flipped, [[9.0, 5.0], [0.0, 1.0], [4.5, 0.0]])


@pytest.mark.parametrize(("mode", "rotation"), [("RGB", 0.0), ("RGB", 23.0), ("RGB", -41.0), ("L", 90.0)])
def test_warp_image_matches_cv2_warp_affine(mode, rotation):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)  # white noise: the hardest case for agreement
    if mode == "L":
        array = array[..., 0].copy()
    matrix = geometry.crop_matrix((60.0, 45.0), (0.3, 0.4), rotation, (64, 80))
    ours = np.asarray(geometry.warp_image(Image.fromarray(array), matrix, (64, 80))).astype(int)
    ref = cv2.warpAffine(array, matrix, (64, 80), flags=cv2.INTER_LINEAR, borderValue=0).astype(int)
    # Pixels whose source footprint touches the image border differ by the samplers' border rules: skip them.
    inv = geometry.invert_affine(matrix)
    ys, xs = np.mgrid[0:80, 0:64]
    src = geometry.apply_affine(np.stack([xs, ys], -1).astype(float), inv)
    interior = (src[..., 0] > 1) & (src[..., 0] < 118) & (src[..., 1] > 1) & (src[..., 1] < 88)
    assert interior.sum() > 1000
    assert np.abs(ours - ref)[interior].max() <= 1


def test_box_to_center_scale_matches_hrnet_xywh2cs():
    def xywh2cs(x, y, w, h, aspect_ratio):  # HRNet coco.py
        center = np.array([x + w * 0.5, y + h * 0.5])
        if w > aspect_ratio * h:
            h = w * 1.0 / aspect_ratio
        elif w < aspect_ratio * h:
            w = h * aspect_ratio
        scale = np.array([w * 1.0 / 200, h * 1.0 / 200]) * 1.25
        return center, scale

    for box in [(10.0, 20.0, 100.0, 50.0), (5.0, 6.0, 30.0, 200.0), (0.0, 0.0, 75.0, 100.0)]:
        center, scale = geometry.box_to_center_scale(*box, aspect_ratio=0.75)
        ref_c, ref_s = xywh2cs(*box, 0.75)
        np.testing.assert_allclose(center, ref_c)
        np.testing.assert_allclose(scale, ref_s)
