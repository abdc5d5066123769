"""FPDLoss against hand-computed values on a fixed batch, and against HRNet's JointsMSELoss form."""

from __future__ import annotations

import pytest
import torch

from pipeline.training.loss import FPDLoss

# N=2 samples, K=2 joints, 1x2 heatmaps; the student predicts zeros, so each joint's mean squared error is the
# mean of the squared target values: teacher [[1, 2], [2, 1]], ground truth [[5, 0], [4, 2]].
PRED = torch.zeros(2, 2, 1, 2)
TEACHER = torch.tensor([[[[1.0, 1.0]], [[2.0, 0.0]]], [[[0.0, 2.0]], [[1.0, 1.0]]]])
TARGET = torch.tensor([[[[3.0, 1.0]], [[0.0, 0.0]]], [[[2.0, 2.0]], [[0.0, 2.0]]]])
WEIGHT = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
BOTH = torch.tensor([True, True])
MIXED = torch.tensor([True, False])


def test_all_labelled_is_alpha_mix_of_joints_mse() -> None:
    # T_0 = 0.5 * (1*1 + 0*2) / 2 = 0.25, T_1 = 0.5 * (2 + 1) / 2 = 0.75,
    # G_0 = 0.5 * (1*5 + 0*0) / 2 = 1.25, G_1 = 0.5 * (4 + 2) / 2 = 1.5
    terms = FPDLoss(alpha=0.5)(PRED, TEACHER, TARGET, WEIGHT, BOTH)
    assert terms.total.item() == pytest.approx((0.5 * 0.25 + 0.5 * 1.25 + 0.5 * 0.75 + 0.5 * 1.5) / 2)
    assert terms.teacher.item() == pytest.approx((0.25 + 0.75) / 2)
    assert terms.ground_truth.item() == pytest.approx((1.25 + 1.5) / 2)
    terms = FPDLoss(alpha=0.8)(PRED, TEACHER, TARGET, WEIGHT, BOTH)
    assert terms.total.item() == pytest.approx((0.8 * 0.25 + 0.2 * 1.25 + 0.8 * 0.75 + 0.2 * 1.5) / 2)


def test_mixed_batch_unlabeled_sample_uses_teacher_alone() -> None:
    # sample 1 is unlabeled: teacher term alone with joint weights 1 -> l_1 = T_1 = 0.75; l_0 = 0.75
    terms = FPDLoss(alpha=0.5)(PRED, TEACHER, TARGET, WEIGHT, MIXED)
    assert terms.total.item() == pytest.approx((0.75 + 0.75) / 2)
    assert terms.ground_truth.item() == pytest.approx(1.25)  # mean over the labelled sample only


def test_without_ground_truth_every_sample_is_teacher_only() -> None:
    terms = FPDLoss(alpha=0.5, use_ground_truth=False)(PRED, TEACHER, TARGET, WEIGHT, BOTH)
    assert terms.total.item() == pytest.approx((0.25 + 0.75) / 2)


def test_without_teacher_trains_on_ground_truth_alone() -> None:
    loss = FPDLoss(alpha=0.0)
    assert loss(PRED, None, TARGET, WEIGHT, BOTH).total.item() == pytest.approx((1.25 + 1.5) / 2)
    # an unlabeled sample has nothing to learn from and is left out of the mean
    assert loss(PRED, None, TARGET, WEIGHT, MIXED).total.item() == pytest.approx(1.25)


def test_teacher_seen_only_drops_the_teacher_term_on_pixels_the_teacher_never_saw() -> None:
    # The teacher saw sample 0's left pixel only, both of sample 1's: joint 0 of sample 0 keeps the error of its
    # left pixel alone (mean over the 2 pixels 0.5 instead of 1; joint 1 has weight 0): T_0 = 0.5 * 0.5 / 2 = 0.125;
    # T_1 = 0.75 as before.
    seen = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])
    terms = FPDLoss(alpha=0.5, teacher_seen_only=True)(PRED, TEACHER, TARGET, WEIGHT, BOTH, seen)
    assert terms.teacher.item() == pytest.approx((0.125 + 0.75) / 2)
    assert terms.ground_truth.item() == pytest.approx((1.25 + 1.5) / 2)  # the GT term is untouched
    # Off (the default), or no view given: HRNet's loss over every pixel.
    assert FPDLoss(alpha=0.5)(PRED, TEACHER, TARGET, WEIGHT, BOTH, seen).teacher.item() == pytest.approx(0.5)
    assert FPDLoss(alpha=0.5, teacher_seen_only=True)(PRED, TEACHER, TARGET, WEIGHT, BOTH).teacher.item() == (
        pytest.approx(0.5))  # fmt: skip


def test_every_hourglass_stack_is_supervised() -> None:
    single = FPDLoss()(PRED, TEACHER, TARGET, WEIGHT, MIXED).total
    stacked = FPDLoss()([PRED, PRED + 0.0, PRED], TEACHER, TARGET, WEIGHT, MIXED).total
    assert stacked.item() == pytest.approx(3 * single.item())


def test_confidence_weighting_and_dropping() -> None:
    # teacher maxvals: sample 1 -> [2, 1]; clipped to 1.5 -> weights [1.5, 1]: T_1 = 0.5 * (1.5*2 + 1*1) / 2 = 1.0
    weighted = FPDLoss(confidence_weighting=True, confidence_clip=(0.0, 1.5))(PRED, TEACHER, TARGET, WEIGHT, MIXED)
    assert weighted.total.item() == pytest.approx((0.75 + 1.0) / 2)
    # sample 1's mean teacher maxval is 1.5: kept at a threshold of 1.5, dropped above it
    kept = FPDLoss(min_teacher_confidence=1.5)(PRED, TEACHER, TARGET, WEIGHT, MIXED)
    assert kept.total.item() == pytest.approx((0.75 + 0.75) / 2)
    dropped = FPDLoss(min_teacher_confidence=1.6)(PRED, TEACHER, TARGET, WEIGHT, MIXED)
    assert dropped.total.item() == pytest.approx(0.75)
    # labelled samples are never dropped
    both = FPDLoss(min_teacher_confidence=10.0)(PRED, TEACHER, TARGET, WEIGHT, BOTH)
    assert both.total.item() == pytest.approx(FPDLoss()(PRED, TEACHER, TARGET, WEIGHT, BOTH).total.item())


def _hrnet_joints_mse(pred: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """HRNet's JointsMSELoss(use_target_weight=True), written from its definition."""
    n, k = pred.shape[:2]
    pred, gt = pred.reshape(n, k, -1), gt.reshape(n, k, -1)
    loss = 0.0
    for j in range(k):
        w = weight[:, j, None]
        loss = loss + 0.5 * torch.nn.functional.mse_loss(pred[:, j] * w, gt[:, j] * w)
    return loss / k


def test_matches_hrnet_joints_mse_on_random_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    pred, teacher, gt = (torch.rand(4, 16, 8, 6, generator=gen) for _ in range(3))
    weight = (torch.rand(4, 16, generator=gen) > 0.3).float()
    labelled = torch.ones(4, dtype=torch.bool)
    expected = 0.5 * _hrnet_joints_mse(pred, teacher, weight) + 0.5 * _hrnet_joints_mse(pred, gt, weight)
    assert FPDLoss(alpha=0.5)(pred, teacher, gt, weight, labelled).total.item() == pytest.approx(expected.item())


def test_gradients_flow_to_the_student_only() -> None:
    pred = torch.zeros(2, 2, 1, 2, requires_grad=True)
    teacher = TEACHER.clone().requires_grad_(False)
    FPDLoss()(pred, teacher, TARGET, WEIGHT, MIXED).total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
