"""Flip test: flip-back algebra, HRNet's one-pixel shift, one forward of the doubled batch."""

from __future__ import annotations

import torch
from torch import nn

from models.joints import COCO, MPII
from pipeline.flip import final_heatmaps, flip_heatmaps, flip_test


class TinyNet(nn.Module):
    """Stride-4 conv net with K outputs; counts forward calls and can return a hourglass-style list."""

    def __init__(self, num_joints: int, as_list: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, num_joints, 3, 2, 1))
        self.as_list = as_list
        self.calls = 0

    def forward(self, x: torch.Tensor):
        self.calls += 1
        out = self.body(x)
        return [out * 0.0, out] if self.as_list else out


def test_flip_heatmaps_twice_is_identity_and_swaps_channels():
    maps = torch.randn(2, 16, 8, 6)
    perm = MPII.flip_permutation()
    torch.testing.assert_close(flip_heatmaps(flip_heatmaps(maps, perm), perm), maps, rtol=0, atol=0)
    flipped = flip_heatmaps(maps, perm)
    # channel r_ankle (0) of the result is l_ankle (5) mirrored
    torch.testing.assert_close(flipped[:, 0], maps[:, 5].flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(flipped[:, 6], maps[:, 6].flip(-1), rtol=0, atol=0)  # pelvis has no pair


def test_flip_back_of_flipped_image_output_is_identity_up_to_shift():
    """A model that is exactly flip-equivariant in pixel space: flip_test == its direct output, shifted."""
    maps = torch.rand(1, 17, 8, 6)
    perm = COCO.flip_permutation()

    def equivariant(images: torch.Tensor) -> torch.Tensor:
        # first image -> maps, its mirror -> the mirrored maps with swapped channels
        return torch.cat([maps, flip_heatmaps(maps, perm)])

    no_shift = flip_test(equivariant, torch.zeros(1, 3, 32, 24), perm, shift=False)
    torch.testing.assert_close(no_shift, maps, rtol=0, atol=1e-7)
    shifted = flip_test(equivariant, torch.zeros(1, 3, 32, 24), perm, shift=True)
    expected_back = torch.cat([maps[..., :1], maps[..., :-1]], dim=-1)
    torch.testing.assert_close(shifted, (maps + expected_back) * 0.5, rtol=0, atol=1e-7)


def test_flip_test_equals_two_passes_by_hand_with_one_forward():
    torch.manual_seed(0)
    model = TinyNet(17).eval()
    images = torch.randn(3, 3, 32, 24)
    perm = COCO.flip_permutation()
    with torch.no_grad():
        direct = model(images)
        mirrored = model(images.flip(3)).flip(3)[:, perm]
        mirrored_shifted = mirrored.clone()
        mirrored_shifted[:, :, :, 1:] = mirrored[:, :, :, :-1]  # HRNet's statement
        expected = (direct + mirrored_shifted) / 2
        model.calls = 0
        out = flip_test(model, images, perm)
    assert model.calls == 1
    assert out.shape == (3, 17, 8, 6)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(out, direct, atol=1e-3)  # the flipped pass really contributes


def test_flip_test_uses_last_stack_of_list_output():
    torch.manual_seed(1)
    model = TinyNet(16, as_list=True).eval()
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = flip_test(model, images, MPII.flip_permutation(), shift=False)
        last = model(images)[-1]
    assert out.abs().sum() > 0  # the first (zero) stack was not used
    assert final_heatmaps([torch.zeros(1), last]) is last
    assert final_heatmaps(last) is last
    torch.testing.assert_close(out, (last + flip_heatmaps(model(images.flip(3))[-1], MPII.flip_permutation())) / 2)
