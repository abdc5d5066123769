"""Convert the official MPII release (``mpii_human_pose_v1_u12_1.mat``) into HRNet's json layout.

Writes ``annot/train.json``, ``annot/valid.json`` (HRNet format: ``image``, ``center`` = ``objpos``, ``scale``,
16 ``joints`` 1-based as in the release, ``joints_vis`` 1 where annotated, missing joints ``[-1, -1]``) and
``annot/gt_valid.mat`` (HRNet's PCKh ground truth: ``pos_gt_src``, ``jnt_missing``, ``headboxes_src`` from the
annorect head rectangle ``x1, y1, x2, y2``, ``dataset_joints``).

The validation split, honestly: HRNet's ``valid.json`` is the 2958-person split of Tompson et al. (CVPR'15),
which the official .mat does not record. The release only flags ``img_train`` per image and ``single_person``
per image (the rectangles of sufficiently separated people). So:

* valid = the ``single_person`` rectangles, with joint annotations, of the ``img_train == 1`` images listed in
  ``valid_images`` (a text file, one image name per line: e.g. the image names of HRNet's ``valid.json``);
  without that file, of the images whose name hashes (blake2b) below ``valid_fraction``: deterministic, but
  **not** Tompson's split, so PCKh on it is not comparable with published numbers;
* train = every other annotated person of the ``img_train == 1`` images (valid images excluded entirely, so
  no person of a validation image is trained on).

The .mat is read with ``scipy.io.loadmat(struct_as_record=False, squeeze_me=True)``; squeezing turns one-element
arrays into scalars, so every field is normalised with ``_items`` before use.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from models.joints import MPII
from pipeline.data.mpii import write_mpii_gt_mat

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertSummary:
    """What ``convert_mpii_release`` wrote."""

    num_train: int
    num_valid: int
    split_rule: str


def _items(value: object) -> list:
    """A squeezed .mat field as a list: [] for empty arrays, [x] for a lone struct or scalar."""
    if isinstance(value, np.ndarray):
        return list(value.reshape(-1)) if value.size else []
    return [value]


def _hash_fraction(name: str) -> float:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") / 2.0**64


def _person(image: str, rect: object) -> dict | None:
    """HRNet entry of one annorect, or None when it has no usable joints, centre or scale."""
    points = _items(getattr(rect, "annopoints", None))
    objpos = getattr(rect, "objpos", None)
    scale = getattr(rect, "scale", None)
    if not points or objpos is None or isinstance(objpos, np.ndarray) or not np.isscalar(scale):
        return None
    joints = np.full((MPII.num_joints, 2), -1.0)
    vis = np.zeros(MPII.num_joints, dtype=int)
    for point in _items(getattr(points[0], "point", None)):
        j = int(point.id)
        if 0 <= j < MPII.num_joints:
            joints[j] = (float(point.x), float(point.y))
            vis[j] = 1
    if not vis.any():
        return None
    return {
        "image": image,
        "center": [float(objpos.x), float(objpos.y)],
        "scale": float(scale),
        "joints": joints.tolist(),
        "joints_vis": vis.tolist(),
        "headbox": [float(rect.x1), float(rect.y1), float(rect.x2), float(rect.y2)],
    }


def convert_mpii_release(
    mat_path: str | Path, out_dir: str | Path, *, valid_images: str | Path | None = None, valid_fraction: float = 0.1
) -> ConvertSummary:
    """Write ``out_dir/annot/{train,valid}.json`` and ``gt_valid.mat`` from the official release.

    Args:
        mat_path: ``mpii_human_pose_v1_u12_1.mat``.
        out_dir: MPII root to write ``annot/`` into.
        valid_images: text file of validation image names; None for the hashed split.
        valid_fraction: share of images in the hashed split.

    Raises:
        FileNotFoundError: missing .mat or image list.
        ValueError: the .mat lacks the release's ``RELEASE`` structure.
    """
    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise FileNotFoundError(f"MPII release file not found: {mat_path}")
    release = scipy.io.loadmat(mat_path, struct_as_record=False, squeeze_me=True).get("RELEASE")
    missing = [f for f in ("annolist", "img_train", "single_person") if not hasattr(release, f)]
    if release is None or missing:
        raise ValueError(f"{mat_path}: not the MPII release (no RELEASE struct with annolist/img_train/single_person)")
    if valid_images is not None:
        chosen = set(Path(valid_images).read_text().split())
        in_valid = chosen.__contains__
        rule = f"images listed in {valid_images}"
    else:
        in_valid = lambda name: _hash_fraction(name) < valid_fraction
        rule = f"deterministic hashed split, {valid_fraction:.0%} of images (not Tompson's split)"
    annolist = _items(release.annolist)
    img_train = _items(release.img_train)
    single = _items(release.single_person)
    train, valid = [], []
    for i, ann in enumerate(annolist):
        if int(img_train[i]) != 1:
            continue
        name = str(ann.image.name)
        rects = _items(getattr(ann, "annorect", None))
        singles = {int(r) - 1 for r in _items(single[i])}  # 1-based rectangle indices
        is_valid = in_valid(name)
        for r, rect in enumerate(rects):
            entry = _person(name, rect)
            if entry is None:
                continue
            if not is_valid:
                train.append(entry)
            elif r in singles:
                valid.append(entry)
    annot = Path(out_dir) / "annot"
    annot.mkdir(parents=True, exist_ok=True)
    for split, people in (("train", train), ("valid", valid)):
        entries = [{k: v for k, v in p.items() if k != "headbox"} for p in people]
        (annot / f"{split}.json").write_text(json.dumps(entries))
    write_mpii_gt_mat(annot / "gt_valid.mat", valid)
    logger.info("MPII release -> %s: %d train / %d valid persons (%s)", annot, len(train), len(valid), rule)
    return ConvertSummary(num_train=len(train), num_valid=len(valid), split_rule=rule)
