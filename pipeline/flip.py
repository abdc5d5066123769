"""Flip test: average a network's heatmaps over the image and its mirror image (HRNet's validate step).

Used by the teacher cache and by evaluation; both must produce the same heatmaps for the same crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def final_heatmaps(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The heatmaps to use from a model's output: the last stack of a list (hourglass), else the tensor itself."""
    if isinstance(output, (list, tuple)):
        return output[-1]
    return output


def flip_heatmaps(heatmaps: torch.Tensor, flip_permutation: Sequence[int]) -> torch.Tensor:
    """Mirror heatmaps of a flipped image back: flip the width axis and swap left/right channels.

    Args:
        heatmaps: (N, K, H, W) heatmaps predicted on horizontally flipped images.
        flip_permutation: channel order after a flip (``JointSet.flip_permutation()``).

    Returns:
        (N, K, H, W) heatmaps in the frame and joint order of the unflipped image.
    """
    index = torch.as_tensor(list(flip_permutation), dtype=torch.long, device=heatmaps.device)
    return heatmaps.flip(-1).index_select(1, index)


def flip_test(
    model: nn.Module, images: torch.Tensor, flip_permutation: Sequence[int], shift: bool = True
) -> torch.Tensor:
    """Heatmaps averaged over the images and their mirror images, with one forward pass of the doubled batch.

    The flipped half is mirrored back (``flip_heatmaps``) and, with ``shift``, moved right by one pixel as
    HRNet does (``out[..., 1:] = out[..., :-1]``; column 0 keeps its value), which compensates for the
    half-pixel misalignment of a stride-4 output under a flip. The caller chooses the grad mode
    (``torch.inference_mode()`` for inference) and the model's train/eval mode.

    Args:
        model: returns (2N, K, H, W) heatmaps, or a list of them (the last is used).
        images: (N, 3, H_in, W_in) normalised input crops.
        flip_permutation: channel order after a flip (``JointSet.flip_permutation()``).
        shift: apply HRNet's one-pixel shift to the flipped-back heatmaps.

    Returns:
        (N, K, H, W) averaged heatmaps.
    """
    count = images.shape[0]
    output = final_heatmaps(model(torch.cat([images, images.flip(-1)], dim=0)))
    direct, flipped = output[:count], output[count:]
    back = flip_heatmaps(flipped, flip_permutation)
    if shift:
        back = torch.cat([back[..., :1], back[..., :-1]], dim=-1)
    return (direct + back) * 0.5
