"""The FPD loss: ``alpha * L_teacher + (1 - alpha) * L_groundtruth`` on heatmaps, in HRNet's JointsMSELoss form.

Per sample ``i`` and joint ``k`` a term is ``0.5 * w_ik * mean_pixels((pred_ik - target_ik) ** 2)`` averaged over
the ``K`` joints (HRNet multiplies prediction and target by the weight before squaring, i.e. ``w ** 2``; the two
agree for the 0/1 ground-truth weights, and a linear weight keeps confidence weighting proportional).

How a batch that mixes labelled and unlabeled samples is normalised (``N`` samples, ``kept`` = samples not
dropped by ``min_teacher_confidence``)::

    l_i   = alpha * T_i + (1 - alpha) * G_i    labelled sample, use_ground_truth
    l_i   = T_i                                unlabeled sample (or use_ground_truth=False): teacher term alone
    l_i   = G_i                                no teacher at all (training a teacher on ground truth)
    total = sum_{i kept} l_i / max(#kept, 1)   summed over hourglass stacks

So an all-labelled batch gives exactly ``alpha * JointsMSE(pred, teacher) + (1 - alpha) * JointsMSE(pred, gt)``,
and every sample weighs the same whichever terms it has. Teacher-term joint weights are the ground-truth target
weights for labelled samples (as the FPD code does) and 1 for unlabeled ones, times the clipped teacher maxval
when ``confidence_weighting`` is on. Nothing here reads a value back to the host: no GPU sync per step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class LossTerms(NamedTuple):
    """Scalar tensors (summed over stacks): the loss to back-propagate and its two batch-mean terms for logging."""

    total: Tensor
    teacher: Tensor
    ground_truth: Tensor


class FPDLoss(nn.Module):
    """Fast Pose Distillation loss over a batch of heatmaps.

    Args:
        alpha: weight of the teacher term (0.5 as in the paper); 0 trains on ground truth alone.
        use_ground_truth: add the GT term for labelled samples; False distils from the teacher alone.
        confidence_weighting: weight each joint's teacher term by the teacher's heatmap maximum, clipped to
            ``confidence_clip`` (off by default: the paper weighs all joints alike).
        confidence_clip: (low, high) clip of that weight; default (0, 1).
        min_teacher_confidence: drop unlabeled samples whose mean (over joints) teacher maximum is below this
            (default 0: keep everything). Labelled samples are never dropped.
        teacher_seen_only: the teacher term counts only the pixels the teacher saw (``teacher_seen`` of the cached
            targets): where the augmentation zoomed out or rotated beyond the cached crop, the warped map is zero
            because nothing was inferred there, not because the teacher saw no joint.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        use_ground_truth: bool = True,
        confidence_weighting: bool = False,
        confidence_clip: tuple[float, float] = (0.0, 1.0),
        min_teacher_confidence: float = 0.0,
        teacher_seen_only: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.use_ground_truth = use_ground_truth
        self.confidence_weighting = confidence_weighting
        self.confidence_clip = confidence_clip
        self.min_teacher_confidence = min_teacher_confidence
        self.teacher_seen_only = teacher_seen_only

    def forward(
        self,
        output: Tensor | list[Tensor],
        teacher: Tensor | None,
        target: Tensor,
        target_weight: Tensor,
        labelled: Tensor,
        teacher_seen: Tensor | None = None,
    ) -> LossTerms:
        """Loss of the student output against teacher and ground-truth heatmaps.

        Args:
            output: student heatmaps (N, K, H, W), or a list of them (hourglass: every stack is supervised).
            teacher: teacher heatmaps (N, K, H, W) (the teacher's final stack), or None without a teacher.
            target: ground-truth Gaussian heatmaps (N, K, H, W); ignored for unlabeled samples.
            target_weight: (N, K) ground-truth joint weights (0: missing, or its Gaussian window misses the heatmap).
            labelled: (N,) bool, which samples carry ground truth.
            teacher_seen: (N, 1, H, W) share of each pixel inside the crop the teacher saw (cached targets), used
                with ``teacher_seen_only``; None: everywhere.

        Returns:
            :class:`LossTerms` of scalar tensors.
        """
        outputs = output if isinstance(output, list | tuple) else [output]
        labelled = labelled.to(device=target.device, dtype=torch.bool)
        gt_weight = target_weight.to(target.dtype)
        use_gt = labelled & self.use_ground_truth
        keep = torch.ones_like(labelled)
        if teacher is not None:
            teacher = teacher.to(target.dtype)
            maxvals = teacher.amax(dim=(2, 3))  # (N, K)
            teacher_weight = torch.where(labelled[:, None], gt_weight, torch.ones_like(gt_weight))
            if self.confidence_weighting:
                teacher_weight = teacher_weight * maxvals.clamp(*self.confidence_clip)
            if self.min_teacher_confidence > 0:
                keep = labelled | (maxvals.mean(dim=1) >= self.min_teacher_confidence)
            has_teacher_term = torch.ones_like(labelled)
        else:
            has_teacher_term = torch.zeros_like(labelled)
            keep = labelled  # without a teacher, unlabeled samples carry no signal
        alpha_i = torch.where(use_gt, self.alpha, 1.0) * has_teacher_term  # (N,) teacher-term factor
        gt_i = torch.where(use_gt, 1.0 - alpha_i, 0.0) if teacher is not None else use_gt.to(target.dtype)
        kept = keep.to(target.dtype)
        seen = teacher_seen.to(target.dtype) if self.teacher_seen_only and teacher_seen is not None else None
        denominator = kept.sum().clamp(min=1.0)

        total = target.new_zeros(())
        teacher_sum = target.new_zeros(())
        gt_sum = target.new_zeros(())
        for stack in outputs:
            stack = stack.to(target.dtype)
            gt_term = _joints_mse(stack, target, gt_weight)  # (N,)
            t_term = (torch.zeros_like(gt_term) if teacher is None
                      else _joints_mse(stack, teacher, teacher_weight, seen))  # fmt: skip
            per_sample = alpha_i * t_term + gt_i * gt_term
            total = total + (kept * per_sample).sum() / denominator
            teacher_sum = teacher_sum + (kept * t_term).sum() / denominator
            labelled_kept = kept * use_gt.to(target.dtype)
            gt_sum = gt_sum + (labelled_kept * gt_term).sum() / labelled_kept.sum().clamp(min=1.0)
        return LossTerms(total, teacher_sum.detach(), gt_sum.detach())


def _joints_mse(pred: Tensor, target: Tensor, weight: Tensor, pixel_weight: Tensor | None = None) -> Tensor:
    """Per-sample JointsMSE: ``0.5 * mean_k(w_k * mean_pixels(p * (pred - target) ** 2))``, shape (N,); the pixel
    weight ``p`` (N, 1, H, W) is 1 everywhere when None (HRNet's loss)."""
    squared = (pred - target).pow(2)
    if pixel_weight is not None:
        squared = squared * pixel_weight
    squared = squared.mean(dim=(2, 3))  # (N, K)
    return 0.5 * (weight * squared).mean(dim=1)
