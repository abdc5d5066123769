"""Joint sets of the datasets we read: names, left/right flip pairs, skeleton edges, OKS sigmas.

Indices follow the HRNet / MMPose conventions so that published checkpoints and results files line up.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JointSet:
    """What a heatmap channel means for one dataset.

    Attributes:
        name: ``"mpii"`` or ``"coco"``.
        names: joint names, one per heatmap channel, in channel order.
        flip_pairs: (left, right) channel pairs swapped by a horizontal flip.
        skeleton: joint index pairs drawn as limbs.
        upper_body: joints used by the half-body augmentation's upper half.
        sigmas: COCO OKS per-keypoint sigmas (empty for MPII).
    """

    name: str
    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...]
    upper_body: tuple[int, ...]
    sigmas: tuple[float, ...] = ()

    @property
    def num_joints(self) -> int:
        return len(self.names)

    @property
    def lower_body(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_joints) if i not in self.upper_body)

    def flip_permutation(self) -> list[int]:
        """Channel order after a horizontal flip: ``flipped[:, perm]`` puts left joints back on the left."""
        perm = list(range(self.num_joints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm


MPII = JointSet(
    name="mpii",
    names=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
        "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    skeleton=(
        (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
        (10, 11), (11, 12), (12, 7), (7, 13), (13, 14), (14, 15),
    ),
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15),
)

COCO = JointSet(
    name="coco",
    names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
        (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    upper_body=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
    sigmas=(
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    ),
)

JOINT_SETS: dict[str, JointSet] = {"mpii": MPII, "coco": COCO}


def get_joint_set(name: str) -> JointSet:
    """Return the joint set called ``name`` (``"mpii"`` or ``"coco"``)."""
    try:
        return JOINT_SETS[name]
    except KeyError:
        raise ValueError(f"unknown joint set {name!r}; known: {sorted(JOINT_SETS)}") from None
