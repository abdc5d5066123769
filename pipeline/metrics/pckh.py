"""MPII PCKh, computed exactly as HRNet's ``MPIIDataset.evaluate`` (pure arrays, no file IO).

Definitions (HRNet's, which follow the official MATLAB evaluation):

* predictions are 0-based pixels and are shifted by +1 to MPII's 1-based frame before comparing (the ground
  truth here is stored 0-based and shifted back by +1, which is exact for the pixel values MPII holds);
* head size = 0.6 x the length of the head box diagonal; a joint is correct when its error divided by the
  head size is <= the threshold; joints marked missing are not counted;
* the table's ``Mean`` is over the 14 joints without pelvis and thorax, each weighted by its number of
  visible annotations (HRNet's masked ``jnt_ratio`` mean).

``Mean@0.1``: HRNet reports ``pckAll[11]`` of its grid ``np.arange(0, 0.51, 0.01)``, which is the value at
threshold **0.11**, not 0.1. Here ``Mean@0.1`` is computed at the true threshold 0.1, so it can be lower than
HRNet's printed figure for the same predictions (see docs/metrics.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.joints import MPII

HEAD_SIZE_FACTOR = 0.6
"""HRNet's ``SC_BIAS``: head size = 0.6 x head box diagonal."""

TABLE_KEYS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1")
"""Column names of ``pckh_table``, in HRNet's order."""

_PAIRS = {
    "Shoulder": ("l_shoulder", "r_shoulder"),
    "Elbow": ("l_elbow", "r_elbow"),
    "Wrist": ("l_wrist", "r_wrist"),
    "Hip": ("l_hip", "r_hip"),
    "Knee": ("l_knee", "r_knee"),
    "Ankle": ("l_ankle", "r_ankle"),
}
_EXCLUDED_FROM_MEAN = ("pelvis", "thorax")


@dataclass(frozen=True, eq=False)
class MpiiGroundTruth:
    """MPII evaluation ground truth (the content of ``gt_valid.mat``), in our joint order.

    Attributes:
        joints: (N, 16, 2) joint positions, 0-based pixels (``pos_gt_src - 1``).
        missing: (N, 16) bool, True where the joint is not annotated (``jnt_missing``).
        headboxes: (N, 2, 2) head boxes ``[[x1, y1], [x2, y2]]`` (``headboxes_src``; only the diagonal matters).
    """

    joints: np.ndarray
    missing: np.ndarray
    headboxes: np.ndarray

    def __post_init__(self) -> None:
        n = self.joints.shape[0]
        if (
            self.joints.shape != (n, MPII.num_joints, 2)
            or self.missing.shape != (n, MPII.num_joints)
            or self.headboxes.shape != (n, 2, 2)
        ):
            raise ValueError(
                f"MpiiGroundTruth expects joints (N, 16, 2), missing (N, 16), headboxes (N, 2, 2); got "
                f"{self.joints.shape}, {self.missing.shape}, {self.headboxes.shape}"
            )

    def __len__(self) -> int:
        return self.joints.shape[0]


def scaled_errors(preds: np.ndarray, gt: MpiiGroundTruth) -> np.ndarray:
    """Joint errors in head-size units, (N, 16), 0 where the joint is missing (as HRNet multiplies them out).

    Args:
        preds: (N, 16, 2) predictions in 0-based image pixels.
        gt: the ground truth.
    """
    preds = np.asarray(preds, dtype=np.float64)
    if preds.shape != gt.joints.shape:
        raise ValueError(f"predictions have shape {preds.shape}, ground truth {gt.joints.shape}")
    visible = 1 - gt.missing.astype(np.float64)
    # Both sides in MPII's 1-based frame, as HRNet compares preds + 1 with pos_gt_src.
    errors = np.linalg.norm((preds + 1.0) - (gt.joints + 1.0), axis=-1)
    head_sizes = np.linalg.norm(gt.headboxes[:, 1, :] - gt.headboxes[:, 0, :], axis=-1) * HEAD_SIZE_FACTOR
    return errors / head_sizes[:, None] * visible


def pckh(preds: np.ndarray, gt: MpiiGroundTruth, threshold: float = 0.5) -> np.ndarray:
    """PCKh per joint in percent, (16,), at ``threshold`` (NaN for a joint with no annotation).

    Args:
        preds: (N, 16, 2) predictions in 0-based image pixels.
        gt: the ground truth.
        threshold: fraction of the head size.
    """
    visible = ~gt.missing.astype(bool)
    correct = (scaled_errors(preds, gt) <= threshold) & visible
    count = visible.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * correct.sum(axis=0) / count


def _weighted_mean(per_joint: np.ndarray, counts: np.ndarray, included: np.ndarray) -> float:
    """HRNet's ``sum(PCKh * jnt_ratio)`` over the included joints; a joint never annotated adds nothing."""
    weights = np.where(included, counts, 0).astype(np.float64)
    return float(np.sum(np.where(weights > 0, per_joint, 0.0) * weights) / weights.sum())


def pckh_table(preds: np.ndarray, gt: MpiiGroundTruth) -> dict[str, float]:
    """HRNet's PCKh table: Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle, Mean (@0.5) and Mean@0.1, percent.

    Args:
        preds: (N, 16, 2) predictions in 0-based image pixels.
        gt: the ground truth.

    Returns:
        dict with the keys of ``TABLE_KEYS``.
    """
    index = {name: i for i, name in enumerate(MPII.names)}
    at_half = pckh(preds, gt, 0.5)
    at_tenth = pckh(preds, gt, 0.1)
    counts = (~gt.missing.astype(bool)).sum(axis=0)
    included = np.ones(MPII.num_joints, dtype=bool)
    included[[index[name] for name in _EXCLUDED_FROM_MEAN]] = False
    table = {"Head": float(at_half[index["head_top"]])}
    for key, (left, right) in _PAIRS.items():
        table[key] = float(0.5 * (at_half[index[left]] + at_half[index[right]]))
    table["Mean"] = _weighted_mean(at_half, counts, included)
    table["Mean@0.1"] = _weighted_mean(at_tenth, counts, included)
    return table
