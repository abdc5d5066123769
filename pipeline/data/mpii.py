"""MPII Human Pose in HRNet's / MMPose's json layout.

Layout of an MPII root::

    images/<name>.jpg
    annot/<split>.json      list of {image, center, scale, joints (16 x [x, y], 1-based), joints_vis (16)}
    annot/gt_<split>.mat    evaluation ground truth (HRNet's gt_valid.mat; read by the PCKh evaluation)

Conventions, those of HRNet's ``mpii.py`` so that published checkpoints see the crops they were trained on:

* joints and centre are MATLAB 1-based in the json: subtract 1 from both (the centre after the adjustment below,
  as HRNet does, so ``center_0based = (cx - 1, cy + 15 * s - 1)``);
* a joint is missing when its ``joints_vis`` is 0 or it is written ``[-1, -1]``: visibility 0;
* the raw MPII centre sits high on the body and the scale is tight: ``center_y += 15 * s`` (x is kept), then
  ``s *= 1.25``, both skipped for HRNet's "no box" centre ``cx == -1`` (whose ``- 1`` still applies, as in
  HRNet); the box is square ``(s, s)``, widened to the model input aspect when that is not 1;
* a split without joints (``test.json``) gives unlabeled records.

Bad input, by level. File: an annotation file that is not json or not a list raises ``ValueError`` naming the
file. Entry: one that is not an object, lacks ``image``, ``center`` or ``scale``, whose ``image`` leaves the image
folder, whose ``center`` is not two finite numbers, whose ``scale`` is not a positive finite number (a zero
scale has no crop), or, in a file with joints, lacks ``joints`` or ``joints_vis`` or has other than 16 finite
joints and 16 flags. Given a ``skipped`` list, ``load_mpii`` leaves such entries out and appends ``(entry, reason)``
(the entry named by file, index and image, the reason naming the field); without one, as evaluation calls it
(its persons must match ``gt_<split>.mat`` one to one), the first refuses the file (``ValueError``).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import scipy.io

from models.joints import MPII
from pipeline.data.paths import check_relative
from pipeline.metrics.pckh import MpiiGroundTruth
from pipeline.records import SampleRecord
from storage.annotations import finite_numbers, is_file_name, raise_for_problems, read_gt_mat
from storage.atomic import atomic_write
from storage.jsonfiles import read_json

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("image", "center", "scale")
JOINT_KEYS = ("joints", "joints_vis")
MAT_JOINT_NAMES = ("rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
                   "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri")  # fmt: skip
"""``dataset_joints`` of HRNet's ``gt_valid.mat``."""


def annotation_path(root: Path, split: str) -> Path:
    """``root/annot/<split>.json``."""
    return Path(root) / "annot" / f"{split}.json"


def ground_truth_path(root: Path, split: str) -> Path:
    """``root/annot/gt_<split>.mat``, the PCKh ground truth of the split (``gt_valid.mat`` for ``valid``)."""
    return Path(root) / "annot" / f"gt_{split}.mat"


def fit_aspect(size: float, input_aspect: float) -> tuple[float, float]:
    """A square box of side ``size`` grown along one side to the ``input_aspect`` (w / h)."""
    return (size, size / input_aspect) if input_aspect <= 1.0 else (size * input_aspect, size)


def _read_entries(path: Path) -> list[dict]:
    entries = read_json(path, "MPII annotation file")
    if isinstance(entries, dict):
        hint = " (it looks like a COCO file)" if "annotations" in entries or "images" in entries else ""
        raise ValueError(f"{path}: expected the HRNet MPII json list of persons, got an object{hint}")
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected the HRNet MPII json list of persons, got {type(entries).__name__}")
    return entries


def _parse_joints(entry: dict) -> tuple[np.ndarray, np.ndarray]:
    """0-based joints and 0/1 visibility of an entry with both ``joints`` and ``joints_vis``."""
    missing = [key for key in JOINT_KEYS if key not in entry]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)} (the file's other persons have joints)")
    raw = entry["joints"]
    if not isinstance(raw, list) or len(raw) != MPII.num_joints:
        got = f"{len(raw)} entries" if isinstance(raw, list) else repr(raw)[:60]
        raise ValueError(f"field 'joints': expected {MPII.num_joints} x [x, y], got {got}")
    xy = [finite_numbers(pair, 2, f"field 'joints' (joint {j})") for j, pair in enumerate(raw)]
    joints = np.asarray(xy, dtype=np.float32)
    flags = np.asarray(finite_numbers(entry["joints_vis"], MPII.num_joints, "field 'joints_vis'"), dtype=np.float32)
    unlabeled = np.all(joints == -1.0, axis=1)
    visibility = ((flags > 0) & ~unlabeled).astype(np.float32)
    return joints - 1.0, visibility


def _scale(value: object) -> float:
    """HRNet's ``scale``, a number (or a one-number list), positive and finite: a zero scale has no crop."""
    (s,) = finite_numbers(value if isinstance(value, list) else [value], 1, "field 'scale'")
    if s <= 0:
        raise ValueError(f"field 'scale': must be positive, got {value!r}")
    return s


def _person(
    entry: object, images_dir: Path, split: str, input_aspect: float, labelled: bool, per_image: dict[str, int]
) -> SampleRecord:
    """The record of one json entry.

    Raises:
        ValueError: the entry is malformed (the message names the field).
    """
    if not isinstance(entry, dict):
        raise ValueError(f"expected an object, got {type(entry).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in entry]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)} (keys: {sorted(entry)})")
    if not is_file_name(entry["image"]):
        raise ValueError(f"field 'image': expected a file name in UTF-8, got {entry['image']!r}")
    image = check_relative(entry["image"], images_dir)
    # Counted before the other checks: a bad person does not shift the ids (cache keys) of the image's next ones.
    k = per_image.get(image, 0)
    per_image[image] = k + 1
    s = _scale(entry["scale"])
    cx, cy = finite_numbers(entry["center"], 2, "field 'center'")
    if cx != -1:  # HRNet leaves the "no box" marker alone
        cy += 15.0 * s
        s *= 1.25
    # 1-based MATLAB pixels -> 0-based, like the joints; in HRNet's order (after the shift) so the floats match.
    cx, cy = cx - 1.0, cy - 1.0
    joints, visibility = _parse_joints(entry) if labelled else (None, None)
    return SampleRecord(
        source=f"mpii/{split}", root=images_dir, image=image, center=(cx, cy), scale=fit_aspect(s, input_aspect),
        instance_id=f"{image}#{k}", joints=joints, visibility=visibility,
    )  # fmt: skip


def load_mpii(
    root: str | Path, split: str, input_aspect: float = 1.0, *, skipped: list[tuple[str, str]] | None = None
) -> list[SampleRecord]:
    """Parse ``root/annot/<split>.json`` into records, in file order (the order of ``gt_<split>.mat``).

    Args:
        root: MPII root (``images/``, ``annot/``).
        split: ``train``, ``valid``, ``test`` or any ``annot/<split>.json``.
        input_aspect: model input width / height; MPII presets are square.
        skipped: where to list the bad entries, left out (see the module docstring); None (evaluation) refuses
            the file at the first.

    Returns:
        One record per person; ``instance_id`` is ``"<image>#<k>"``, the k-th person of that image in the file.
        The file is labelled when any entry has ``joints`` or ``joints_vis``; then every entry needs both.

    Raises:
        FileNotFoundError: no such annotation file.
        ValueError: the file is not an HRNet MPII json list, or (without ``skipped``) an entry is malformed.
    """
    root = Path(root)
    path = annotation_path(root, split)
    entries = _read_entries(path)
    images_dir = root / "images"
    labelled = any(isinstance(e, dict) and any(key in e for key in JOINT_KEYS) for e in entries)
    per_image: dict[str, int] = {}
    records = []
    problems: list[tuple[str, str]] = []
    for i, entry in enumerate(entries):
        try:
            records.append(_person(entry, images_dir, split, input_aspect, labelled, per_image))
        except ValueError as exc:
            image = f" (image {entry['image']!r})" if isinstance(entry, dict) and "image" in entry else ""
            problems.append((f"{path} entry {i}{image}", str(exc)))
    if skipped is None:
        raise_for_problems(problems)
    else:
        skipped.extend(problems)
    logger.info("mpii/%s: %d persons from %s (%d bad entries left out)", split, len(records), path, len(problems))
    return records


_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by fast-pose-distillation".ljust(116)


def write_mpii_gt_mat(path: Path, people: list[dict]) -> None:
    """Write HRNet's ``gt_valid.mat`` for HRNet json entries (same order), what the PCKh evaluation reads.

    Args:
        path: the .mat file to write.
        people: json entries (1-based ``joints``, ``joints_vis``) with a ``headbox`` [x1, y1, x2, y2] (1-based).
    """
    n = len(people)
    pos = np.zeros((16, 2, n))
    missing = np.ones((16, n), dtype=np.uint8)
    heads = np.zeros((2, 2, n))
    for j, person in enumerate(people):
        vis = np.asarray(person["joints_vis"], dtype=bool)
        pos[vis, :, j] = np.asarray(person["joints"])[vis]
        missing[vis, j] = 0
        heads[:, :, j] = np.asarray(person["headbox"]).reshape(2, 2)
    names = np.empty((1, 16), dtype=object)
    for k, name in enumerate(MAT_JOINT_NAMES):
        names[0, k] = np.array([name])
    buffer = io.BytesIO()
    arrays = {"dataset_joints": names, "jnt_missing": missing, "pos_gt_src": pos, "headboxes_src": heads}
    scipy.io.savemat(buffer, arrays)
    # The 116-byte text header holds the creation time; a fixed one keeps generated datasets byte-reproducible.
    data = _MAT_HEADER + buffer.getvalue()[len(_MAT_HEADER):]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        handle.write(data)


def load_mpii_gt(path: str | Path) -> MpiiGroundTruth:
    """HRNet's ``gt_valid.mat`` as evaluation ground truth, its joints checked to be MPII's, in MPII's order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a key is missing, the joint names are not MPII's order, or the shapes disagree.
    """
    mat = read_gt_mat(path)
    if mat.joint_names != MAT_JOINT_NAMES:
        raise ValueError(f"{path}: dataset_joints are {mat.joint_names}, expected MPII's order {MAT_JOINT_NAMES}")
    return MpiiGroundTruth(joints=mat.joints, missing=mat.missing, headboxes=mat.headboxes)
