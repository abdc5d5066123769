"""The one heatmap codec: Gaussian targets in, joint coordinates out (HRNet rules, DARK as an option).

Target generation, the teacher cache and evaluation all build a ``HeatmapCodec`` from the model preset's
input and heatmap sizes, so that what a network is trained to produce and how it is read back never drift
apart (the idea of MMPose's ``MSRAHeatmap``).

Conventions (HRNet's, without UDP): a joint at input pixel ``x`` lands on heatmap pixel ``x / stride``;
heatmap pixel centres are on integers; decoded coordinates are in heatmap pixels and go back to the image
with the inverse crop matrix at heatmap resolution (HRNet's ``transform_preds``).

Default sigma: ``2 * max(heatmap_w, heatmap_h) / 64``. It gives HRNet's sigma 2 at both 64x48 (COCO 256x192) and
64x64 (MPII 256x256) and its sigma 3 at 96x72 (COCO 384x288); the tiny presets' 32x32 and 32x24 heatmaps get
sigma 1. (HRNet's window radius ``3 * sigma`` is then an integer, the only case its code draws symmetrically.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import geometry
from pipeline.geometry import Size

DECODE_METHODS = ("hrnet", "dark")


def default_sigma(heatmap_size: Size) -> float:
    """HRNet's Gaussian sigma for a heatmap of ``(w, h)`` pixels: ``2 * max(w, h) / 64`` (see the module docstring)."""
    return 2.0 * max(heatmap_size) / 64.0


def dark_kernel_size(sigma: float) -> int:
    """DARK's blur kernel for a target sigma: ``6 * sigma - 1`` made odd (11 at sigma 2, 17 at sigma 3).

    These are the kernels of DARK's and MMPose's configs (11 for 64x48, 17 for 96x72).
    """
    size = round(6.0 * sigma - 1.0)
    return max(3, size if size % 2 == 1 else size + 1)


class HeatmapCodec:
    """Encode joints as HRNet Gaussian heatmaps and decode heatmaps back to joints.

    Args:
        input_size: network input (w, h) in pixels.
        heatmap_size: network output (w, h) in pixels.
        sigma: Gaussian sigma in heatmap pixels; ``default_sigma(heatmap_size)`` when None.
    """

    def __init__(self, input_size: Size, heatmap_size: Size, sigma: float | None = None) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = float(default_sigma(self.heatmap_size) if sigma is None else sigma)
        self.stride = (self.input_size[0] / self.heatmap_size[0], self.input_size[1] / self.heatmap_size[1])
        self.dark_kernel = dark_kernel_size(self.sigma)

    def __repr__(self) -> str:
        return f"HeatmapCodec(input_size={self.input_size}, heatmap_size={self.heatmap_size}, sigma={self.sigma})"

    def encode(
        self, joints: torch.Tensor | np.ndarray, visibility: torch.Tensor | np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[np.ndarray, np.ndarray]:
        """HRNet's Gaussian targets (``JointsDataset.generate_target``), vectorised over samples and joints.

        The peak sits on the integer pixel ``int(x / stride + 0.5)``; the Gaussian is drawn inside HRNet's
        window ``[int(mu - 3 sigma), int(mu + 3 sigma + 1))`` and zero elsewhere. A joint gets weight 0 when
        it is invisible (visibility <= 0.5) or when that window misses the heatmap entirely; otherwise weight 1,
        even when the joint itself lies outside the crop (HRNet's rule: it still trains on the visible tail of
        its Gaussian). This is the only place the weight is decided: ``pipeline.augment.transform_joints``
        hands visibility over unchanged, so the training data's ``target_weight`` (GT and teacher term alike)
        is HRNet's ``target_weight``.

        Computed in float64 on the joints' device (the training step encodes its batch on the accelerator), the
        maps rounded to float32 once.

        Args:
            joints: (N, K, 2) or (K, 2) joint positions in input-crop pixels, tensor or array.
            visibility: (N, K) or (K,) visibility; > 0.5 means visible.

        Returns:
            targets (N, K, H, W) float32 and weights (N, K) float32 (no N axis for (K, 2) input), tensors on the
            joints' device for tensor input, arrays for array input.
        """
        as_array = not isinstance(joints, torch.Tensor)
        joints = torch.as_tensor(joints, dtype=torch.float64)
        visibility = torch.as_tensor(visibility, dtype=torch.float64, device=joints.device)
        single = joints.ndim == 2
        if single:
            joints, visibility = joints[None], visibility[None]
        if joints.shape[-1] != 2 or visibility.shape != joints.shape[:2]:
            raise ValueError(f"encode expects joints (N, K, 2) and visibility (N, K), got {tuple(joints.shape)}, "
                             f"{tuple(visibility.shape)}")
        width, height = self.heatmap_size
        radius = self.sigma * 3.0
        # trunc is Python's int(): HRNet rounds with int(x + 0.5) and builds the window with int() too.
        # Divided by Python scalars: a stride tensor would be a host-to-device copy, a sync of the training step.
        mu = torch.trunc(torch.stack([joints[..., 0] / self.stride[0], joints[..., 1] / self.stride[1]], -1) + 0.5)
        low = torch.trunc(mu - radius)
        high = torch.trunc(mu + radius + 1.0)
        outside = (low[..., 0] >= width) | (low[..., 1] >= height) | (high[..., 0] < 0) | (high[..., 1] < 0)
        weights = ((visibility > 0.5) & ~outside).to(torch.float64)

        def profile(axis: int, length: int) -> torch.Tensor:
            # One separable factor of the 2-D Gaussian, cut to the window: (N, K, length).
            pos = torch.arange(length, dtype=torch.float64, device=joints.device)
            centre, lo, hi = mu[..., axis, None], low[..., axis, None], high[..., axis, None]
            inside = (pos >= lo) & (pos < hi)
            return torch.where(inside, torch.exp(-((pos - centre) ** 2) / (2.0 * self.sigma**2)), 0.0)

        gx, gy = profile(0, width) * weights[..., None], profile(1, height)
        targets = (gy[..., :, None] * gx[..., None, :]).to(torch.float32)
        weights = weights.to(torch.float32)
        if single:
            targets, weights = targets[0], weights[0]
        return (targets.cpu().numpy(), weights.cpu().numpy()) if as_array else (targets, weights)

    def decode(self, heatmaps: torch.Tensor | np.ndarray, method: str = "hrnet") -> tuple[torch.Tensor, torch.Tensor]:
        """Joint positions in heatmap pixels and their scores, batched, on the heatmaps' device.

        ``"hrnet"`` is HRNet's ``get_final_preds`` with post-processing: argmax, then a quarter-pixel step
        towards the higher neighbour on each axis (only for ``1 < x < W - 1`` and ``1 < y < H - 1``); joints
        whose maximum is <= 0 are put at (0, 0) as HRNet's ``get_max_preds`` does.
        ``"dark"`` is DARK (Zhang et al., CVPR 2020) as in MMPose: the heatmap is blurred with a Gaussian
        (``self.dark_kernel``, zero padding, rescaled to keep its original maximum), its log is expanded to
        second order at the argmax, and the Newton step ``-H^-1 g`` is added (only for ``1 < x < W - 2`` and
        ``1 < y < H - 2`` and a non-singular Hessian).

        Args:
            heatmaps: (N, K, H, W) tensor or array.
            method: ``"hrnet"`` or ``"dark"``.

        Returns:
            coords (N, K, 2) float32 (x, y) in heatmap pixels and maxvals (N, K) float32 (the heatmap maxima).
        """
        if method not in DECODE_METHODS:
            raise ValueError(f"unknown decode method {method!r}; known: {DECODE_METHODS}")
        heatmaps = torch.as_tensor(heatmaps).float()
        if heatmaps.ndim != 4:
            raise ValueError(f"decode expects heatmaps (N, K, H, W), got shape {tuple(heatmaps.shape)}")
        coords, maxvals = _argmax(heatmaps)
        if method == "hrnet":
            coords = coords + _quarter_offset(heatmaps, coords)
        else:
            coords = coords + _dark_offset(_blur(heatmaps, self.dark_kernel), coords)
        return coords, maxvals

    def to_image(
        self, coords: torch.Tensor | np.ndarray, centers: Sequence | np.ndarray, scales: Sequence | np.ndarray
    ) -> np.ndarray:
        """Heatmap pixels to image pixels with each crop's inverse matrix (HRNet's ``transform_preds``).

        Args:
            coords: (N, K, 2) positions in heatmap pixels.
            centers: (N, 2) crop centres in image pixels.
            scales: (N, 2) crop scales in units of 200 pixels.

        Returns:
            (N, K, 2) float64 positions in 0-based image pixels.
        """
        coords = coords.detach().cpu().numpy() if isinstance(coords, torch.Tensor) else np.asarray(coords)
        centers, scales = np.asarray(centers, dtype=np.float64), np.asarray(scales, dtype=np.float64)
        out = np.empty(coords.shape, dtype=np.float64)
        for i in range(coords.shape[0]):
            inverse = geometry.crop_matrix(centers[i], scales[i], 0.0, self.heatmap_size, inverse=True)
            out[i] = geometry.apply_affine(coords[i], inverse)
        return out


def _argmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer argmax positions (N, K, 2) float and maxima (N, K); positions of maxima <= 0 are zeroed."""
    n, k, _, width = heatmaps.shape
    maxvals, index = heatmaps.reshape(n, k, -1).max(dim=-1)
    coords = torch.stack([index % width, torch.div(index, width, rounding_mode="floor")], dim=-1).float()
    return coords * (maxvals > 0).unsqueeze(-1), maxvals


def _sample(heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``heatmaps[n, k, y[n, k], x[n, k]]`` for integer (N, K) index tensors, clamped into the map."""
    _, _, height, width = heatmaps.shape
    flat = y.clamp(0, height - 1) * width + x.clamp(0, width - 1)
    return heatmaps.flatten(2).gather(2, flat.unsqueeze(-1)).squeeze(-1)


def _quarter_offset(heatmaps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """HRNet's post-processing step: 0.25 px towards the higher neighbour on each axis."""
    _, _, height, width = heatmaps.shape
    px = torch.floor(coords[..., 0] + 0.5).long()
    py = torch.floor(coords[..., 1] + 0.5).long()
    dx = _sample(heatmaps, px + 1, py) - _sample(heatmaps, px - 1, py)
    dy = _sample(heatmaps, px, py + 1) - _sample(heatmaps, px, py - 1)
    inside = (px > 1) & (px < width - 1) & (py > 1) & (py < height - 1)
    return torch.stack([dx.sign(), dy.sign()], dim=-1) * 0.25 * inside.unsqueeze(-1)


def _gaussian_kernel(size: int, device: torch.device) -> torch.Tensor:
    """1-D kernel of OpenCV's ``GaussianBlur(ksize=size, sigma=0)``: sigma = 0.3 * ((size - 1) / 2 - 1) + 0.8."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1.0) + 0.8
    pos = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    kernel = torch.exp(-(pos**2) / (2.0 * sigma**2))
    return (kernel / kernel.sum()).float()


def _blur(heatmaps: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """DARK's modulation: Gaussian blur with zero padding, each map rescaled to its original maximum."""
    n, k, height, width = heatmaps.shape
    kernel = _gaussian_kernel(kernel_size, heatmaps.device)
    pad = kernel_size // 2
    maps = heatmaps.reshape(n * k, 1, height, width)
    blurred = F.conv2d(F.pad(maps, (pad, pad, 0, 0)), kernel.view(1, 1, 1, -1))
    blurred = F.conv2d(F.pad(blurred, (0, 0, pad, pad)), kernel.view(1, 1, -1, 1))
    blurred = blurred.reshape(n, k, height, width)
    old_max = heatmaps.flatten(2).amax(-1)[..., None, None]
    new_max = blurred.flatten(2).amax(-1)[..., None, None]
    # A map of zeros stays zeros (MMPose would divide 0 by 0 here; its result is then clamped anyway).
    ratio = torch.where(new_max != 0, old_max / torch.where(new_max != 0, new_max, 1.0), 0.0)
    return blurred * ratio


def _dark_offset(blurred: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Newton step ``-H^-1 g`` of the log-heatmap at the integer argmax (MMPose's ``refine_keypoints_dark``)."""
    _, _, height, width = blurred.shape
    logmap = blurred.clamp_min(1e-10).log()
    x, y = coords[..., 0].long(), coords[..., 1].long()

    def at(ox: int, oy: int) -> torch.Tensor:
        return _sample(logmap, x + ox, y + oy)

    centre = at(0, 0)
    dx = 0.5 * (at(1, 0) - at(-1, 0))
    dy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = 0.25 * (at(2, 0) - 2 * centre + at(-2, 0))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    dyy = 0.25 * (at(0, 2) - 2 * centre + at(0, -2))
    det = dxx * dyy - dxy**2
    usable = (x > 1) & (x < width - 2) & (y > 1) & (y < height - 2) & (det != 0)
    safe_det = torch.where(usable, det, torch.ones_like(det))
    # Closed-form inverse of the symmetric 2x2 Hessian [[dxx, dxy], [dxy, dyy]].
    off_x = -(dyy * dx - dxy * dy) / safe_det
    off_y = -(-dxy * dx + dxx * dy) / safe_det
    return torch.stack([off_x, off_y], dim=-1) * usable.unsqueeze(-1)

