"""HeatmapCodec against plain re-statements of HRNet's target/decoding code and MMPose's DARK refinement."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from pipeline.codec import HeatmapCodec, dark_kernel_size, default_sigma


def hrnet_generate_target(joints, vis, sigma, image_size, heatmap_size):
    """HRNet JointsDataset.generate_target (gaussian), one joint at a time, float32 window as HRNet builds it."""
    num_joints = joints.shape[0]
    width, height = heatmap_size
    weight = vis.astype(np.float32).copy()
    target = np.zeros((num_joints, height, width), dtype=np.float32)
    tmp_size = sigma * 3
    stride = np.array(image_size) / np.array(heatmap_size)
    for j in range(num_joints):
        mu_x = int(joints[j][0] / stride[0] + 0.5)
        mu_y = int(joints[j][1] / stride[1] + 0.5)
        ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
        br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
        if ul[0] >= width or ul[1] >= height or br[0] < 0 or br[1] < 0:
            weight[j] = 0
            continue
        size = 2 * tmp_size + 1
        x = np.arange(0, size, 1, np.float32)
        y = x[:, np.newaxis]
        x0 = y0 = size // 2
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
        g_x = max(0, -ul[0]), min(br[0], width) - ul[0]
        g_y = max(0, -ul[1]), min(br[1], height) - ul[1]
        img_x = max(0, ul[0]), min(br[0], width)
        img_y = max(0, ul[1]), min(br[1], height)
        if weight[j] > 0.5:
            target[j][img_y[0] : img_y[1], img_x[0] : img_x[1]] = g[g_y[0] : g_y[1], g_x[0] : g_x[1]]
    return target, weight


def hrnet_final_preds(heatmaps):
    """HRNet get_max_preds + the quarter-offset post-processing of get_final_preds (heatmap pixels)."""
    n, k, height, width = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    idx = np.argmax(flat, 2).reshape(n, k, 1)
    maxvals = np.amax(flat, 2).reshape(n, k, 1)
    preds = np.tile(idx, (1, 1, 2)).astype(np.float32)
    preds[:, :, 0] = preds[:, :, 0] % width
    preds[:, :, 1] = np.floor(preds[:, :, 1] / width)
    mask = np.tile(np.greater(maxvals, 0.0), (1, 1, 2)).astype(np.float32)
    preds *= mask
    for i in range(n):
        for j in range(k):
            hm = heatmaps[i][j]
            px = math.floor(preds[i][j][0] + 0.5)
            py = math.floor(preds[i][j][1] + 0.5)
            if 1 < px < width - 1 and 1 < py < height - 1:
                diff = np.array([hm[py][px + 1] - hm[py][px - 1], hm[py + 1][px] - hm[py - 1][px]])
                preds[i][j] += np.sign(diff) * 0.25
    return preds, maxvals[..., 0]


def mmpose_dark(heatmaps, kernel):
    """MMPose get_heatmap_maximum + gaussian_blur + refine_keypoints_dark for one (K, H, W) instance."""
    num, height, width = heatmaps.shape
    flat = heatmaps.reshape(num, -1)
    idx = flat.argmax(1)
    vals = flat.max(1)
    locs = np.stack([idx % width, idx // width], -1).astype(np.float32)
    locs[vals <= 0] = -1
    border = (kernel - 1) // 2
    blurred = heatmaps.copy()
    for k in range(num):
        origin_max = np.max(blurred[k])
        dr = np.zeros((height + 2 * border, width + 2 * border), dtype=np.float32)
        dr[border:-border, border:-border] = blurred[k].copy()
        dr = cv2.GaussianBlur(dr, (kernel, kernel), 0)
        blurred[k] = dr[border:-border, border:-border].copy()
        with np.errstate(invalid="ignore"):  # MMPose divides 0 by 0 on an empty map
            blurred[k] *= origin_max / np.max(blurred[k])
    logmap = np.log(np.maximum(blurred, 1e-10))
    for k in range(num):
        x, y = locs[k].astype(int)
        hm = logmap[k]
        if 1 < x < width - 2 and 1 < y < height - 2:
            dx = 0.5 * (hm[y, x + 1] - hm[y, x - 1])
            dy = 0.5 * (hm[y + 1, x] - hm[y - 1, x])
            dxx = 0.25 * (hm[y, x + 2] - 2 * hm[y, x] + hm[y, x - 2])
            dxy = 0.25 * (hm[y + 1, x + 1] - hm[y - 1, x + 1] - hm[y + 1, x - 1] + hm[y - 1, x - 1])
            dyy = 0.25 * (hm[y + 2, x] - 2 * hm[y, x] + hm[y - 2, x])
            if dxx * dyy - dxy**2 != 0:
                hessian = np.array([[dxx, dxy], [dxy, dyy]])
                locs[k] += (-np.linalg.inv(hessian) @ np.array([dx, dy])).astype(np.float32)
    return locs, vals


def gaussian_map(width, height, x, y, sigma):
    """A continuous Gaussian sampled on integer pixel centres."""
    xs = np.arange(width)[None, :]
    ys = np.arange(height)[:, None]
    return np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)).astype(np.float32)


def smooth_random_heatmaps(rng, n, k, height, width):
    maps = np.zeros((n, k, height, width), dtype=np.float32)
    for i in range(n):
        for j in range(k):
            for _ in range(3):
                x, y = rng.uniform(-3, width + 3), rng.uniform(-3, height + 3)
                maps[i, j] += rng.uniform(0.2, 1.0) * gaussian_map(width, height, x, y, rng.uniform(1.0, 3.0))
            maps[i, j] += rng.normal(0, 0.01, (height, width)).astype(np.float32)
    return maps


def test_default_sigma_rule():
    assert default_sigma((48, 64)) == 2.0
    assert default_sigma((64, 64)) == 2.0
    assert default_sigma((72, 96)) == 3.0
    assert default_sigma((32, 24)) == 1.0 and default_sigma((32, 32)) == 1.0
    assert dark_kernel_size(2.0) == 11 and dark_kernel_size(3.0) == 17


@pytest.mark.parametrize(
    ("input_size", "heatmap_size", "sigma"), [((192, 256), (48, 64), 2.0), ((128, 128), (32, 32), 1)]
)
def test_encode_matches_hrnet_generate_target(input_size, heatmap_size, sigma):
    rng = np.random.default_rng(0)
    n, k = 3, 17
    joints = rng.uniform(-40, max(input_size) + 40, (n, k, 2))
    joints[0, :3] = [[input_size[0] - 1, 10], [-2 * sigma * 4, 30], [-100, -100]]  # edge, tail inside, far out
    vis = (rng.random((n, k)) > 0.2).astype(np.float32)
    targets, weights = HeatmapCodec(input_size, heatmap_size, sigma).encode(joints, vis)
    assert targets.shape == (n, k, heatmap_size[1], heatmap_size[0]) and targets.dtype == np.float32
    for i in range(n):
        ref_t, ref_w = hrnet_generate_target(joints[i], vis[i], sigma, input_size, heatmap_size)
        np.testing.assert_allclose(targets[i], ref_t, atol=1e-6)
        np.testing.assert_array_equal(weights[i], ref_w)
    assert weights[0, 2] == 0  # far outside: no window overlap
    assert (weights == 0).sum() > (vis == 0).sum()  # out-of-heatmap joints were dropped too


def test_encode_single_sample_shape():
    codec = HeatmapCodec((128, 96), (32, 24))
    targets, weights = codec.encode(np.array([[64.0, 48.0]]), np.array([1.0]))
    assert targets.shape == (1, 24, 32) and weights.shape == (1,)
    assert targets[0, 12, 16] == 1.0


def test_round_trip_encode_decode_is_exact_on_the_grid():
    codec = HeatmapCodec((192, 256), (48, 64))
    grid = np.array([[[12.0 * i + 32, 16.0 * i + 40] for i in range(10)]])  # multiples of the stride 4
    targets, _ = codec.encode(grid, np.ones((1, 10)))
    coords, maxvals = codec.decode(torch.from_numpy(targets), "hrnet")
    np.testing.assert_array_equal(coords.numpy() * 4, grid)
    np.testing.assert_array_equal(maxvals.numpy(), 1.0)
    # DARK sees HRNet's Gaussian cut at 3 sigma: still within 0.01 heatmap px of the joint.
    coords, _ = codec.decode(torch.from_numpy(targets), "dark")
    np.testing.assert_allclose(coords.numpy() * 4, grid, atol=0.04)


def test_subpixel_gaussian_recovered_within_rule_error():
    rng = np.random.default_rng(1)
    width, height = 48, 64
    truth = np.stack([rng.uniform(8, width - 8, 40), rng.uniform(8, height - 8, 40)], -1)
    maps = np.stack([gaussian_map(width, height, x, y, 2.0) for x, y in truth])[None]
    codec = HeatmapCodec((192, 256), (width, height))
    hrnet, _ = codec.decode(maps, "hrnet")
    dark, _ = codec.decode(maps, "dark")
    hrnet_err = np.abs(hrnet[0].numpy() - truth)
    dark_err = np.linalg.norm(dark[0].numpy() - truth, axis=-1)
    assert hrnet_err.max() <= 0.25 + 1e-6  # quarter step from the nearest pixel: at most 0.25 per axis
    assert hrnet_err.max() > 0.1  # and the rule really is that coarse
    assert dark_err.max() < 0.05
    assert dark_err.mean() < hrnet_err.mean()


def test_hrnet_decode_matches_numpy_reference():
    rng = np.random.default_rng(2)
    maps = smooth_random_heatmaps(rng, 2, 5, 16, 12)
    maps[1, 2] = -np.abs(maps[1, 2])  # all non-positive: coords (0, 0)
    maps[0, 3, 5, 0] = 5.0  # maximum on the left border: no quarter step
    coords, maxvals = HeatmapCodec((48, 64), (12, 16)).decode(torch.from_numpy(maps), "hrnet")
    ref_coords, ref_maxvals = hrnet_final_preds(maps)
    np.testing.assert_array_equal(coords.numpy(), ref_coords)
    np.testing.assert_array_equal(maxvals.numpy(), ref_maxvals)
    assert coords[1, 2].tolist() == [0.0, 0.0]


def test_dark_decode_matches_mmpose_reference():
    rng = np.random.default_rng(3)
    maps = smooth_random_heatmaps(rng, 2, 6, 64, 48)
    maps[1, 4] = 0.0  # an empty map stays unrefined
    coords, maxvals = HeatmapCodec((192, 256), (48, 64)).decode(maps, "dark")
    for i in range(2):
        ref_locs, ref_vals = mmpose_dark(maps[i], 11)
        usable = ref_vals > 0
        np.testing.assert_allclose(coords[i].numpy()[usable], ref_locs[usable], atol=2e-4)
        np.testing.assert_allclose(maxvals[i].numpy(), ref_vals)
    assert coords[1, 4].tolist() == [0.0, 0.0]


def test_decode_rejects_bad_input():
    codec = HeatmapCodec((64, 64), (16, 16))
    with pytest.raises(ValueError, match="unknown decode method"):
        codec.decode(torch.zeros(1, 1, 16, 16), "argmax")
    with pytest.raises(ValueError, match=r"\(N, K, H, W\)"):
        codec.decode(torch.zeros(1, 16, 16))


def hrnet_inverse_transform(center, scale, output_size):
    """HRNet get_affine_transform(center, scale, 0, output_size, inv=1): the three-point construction."""
    src_w = scale[0] * 200.0
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + np.array([0, src_w * -0.5])
    dst[0] = [output_size[0] * 0.5, output_size[1] * 0.5]
    dst[1] = dst[0] + np.array([0, output_size[0] * -0.5])
    src[2] = src[1] + np.array([-(src[0] - src[1])[1], (src[0] - src[1])[0]])
    dst[2] = dst[1] + np.array([-(dst[0] - dst[1])[1], (dst[0] - dst[1])[0]])
    return cv2.getAffineTransform(dst, src)


def test_to_image_matches_hrnet_transform_preds():
    rng = np.random.default_rng(4)
    codec = HeatmapCodec((192, 256), (48, 64))
    coords = rng.uniform(0, 48, (3, 17, 2))
    centers = rng.uniform(100, 500, (3, 2))
    scales = rng.uniform(0.5, 3.0, (3, 2))
    out = codec.to_image(torch.from_numpy(coords).float(), centers, scales)
    for i in range(3):
        trans = hrnet_inverse_transform(centers[i], scales[i], (48, 64))
        ref = coords[i].astype(np.float32) @ trans[:, :2].T + trans[:, 2]
        np.testing.assert_allclose(out[i], ref, atol=2e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decode_on_cuda_matches_cpu():
    maps = torch.from_numpy(smooth_random_heatmaps(np.random.default_rng(5), 2, 4, 64, 48))
    codec = HeatmapCodec((192, 256), (48, 64))
    for method in ("hrnet", "dark"):
        cpu, _ = codec.decode(maps, method)
        gpu, _ = codec.decode(maps.cuda(), method)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
