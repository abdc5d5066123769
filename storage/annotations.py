"""Files of ground truth and predictions for evaluation: MPII ``.mat``/``.npy``/``.json``, COCO results json.

Every reader checks what it reads and raises ``ValueError`` (or ``FileNotFoundError``) naming the file and
what is wrong, so that ``fpd eval`` can print one clear line. The metrics themselves (``pipeline.metrics``)
never touch files.

MPII prediction formats (K joints per person, 16 in MPII's order; the caller says K):

* ``.mat``: key ``pos_pred_src`` of shape (K, 2, N) (the layout of ``detections_our_format.mat``), or key
  ``preds`` of shape (N, K, 2) (HRNet's ``pred.mat``); both in MPII's **1-based** pixels.
* ``.npy``: an (N, K, 2) array, **0-based** pixels.
* ``.json``: a list of N persons, each a list of K ``[x, y]`` pairs, **0-based** pixels.

All readers return (N, K, 2) float64 in 0-based pixels. This module knows file layouts, not joints: what the
joint names mean is checked by ``pipeline.data.mpii.load_mpii_gt``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.io

from storage.atomic import atomic_write
from storage.jsonfiles import read_json

MPII_PREDICTION_SUFFIXES = (".mat", ".npy", ".json")
_GT_KEYS = ("dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src")
_RESULT_KEYS = ("image_id", "category_id", "keypoints", "score")


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")


def _load_mat(path: Path) -> dict:
    try:
        return scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types for a file that is not a MATLAB file
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({exc})") from None


def _joint_names(raw: np.ndarray) -> tuple[str, ...]:
    """``dataset_joints`` (a 1xK cell of strings as scipy loads it) as plain strings."""
    return tuple(str(np.asarray(cell).reshape(-1)[0]) for cell in np.asarray(raw, dtype=object).reshape(-1))


class GroundTruthMat(NamedTuple):
    """The arrays of an MPII ``gt_valid.mat``, moved to 0-based pixels and person-first axes (K joints, N persons).

    Attributes:
        joint_names: ``dataset_joints`` as plain strings (the file's joint order).
        joints: (N, K, 2) float64, 0-based pixels (``pos_gt_src - 1``).
        missing: (N, K) bool (``jnt_missing``).
        headboxes: (N, 2, 2) float64 (``headboxes_src``).
    """

    joint_names: tuple[str, ...]
    joints: np.ndarray
    missing: np.ndarray
    headboxes: np.ndarray


def read_gt_mat(path: str | Path) -> GroundTruthMat:
    """Read HRNet's ``gt_valid.mat`` (keys dataset_joints, jnt_missing, pos_gt_src, headboxes_src).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a key is missing, or the shapes disagree with each other or with the joint names.
    """
    path = Path(path)
    _require_file(path, "MPII ground-truth .mat")
    mat = _load_mat(path)
    missing_keys = [key for key in _GT_KEYS if key not in mat]
    if missing_keys:
        raise ValueError(f"{path}: not an MPII gt_valid.mat, missing key(s) {', '.join(missing_keys)}")
    names = _joint_names(mat["dataset_joints"])
    pos, jnt_missing, heads = mat["pos_gt_src"], mat["jnt_missing"], mat["headboxes_src"]
    k, n = len(names), (pos.shape[-1] if pos.ndim == 3 else -1)
    if pos.shape != (k, 2, n) or jnt_missing.shape != (k, n) or heads.shape != (2, 2, n):
        raise ValueError(
            f"{path}: expected pos_gt_src ({k}, 2, N), jnt_missing ({k}, N), headboxes_src (2, 2, N); got "
            f"{pos.shape}, {jnt_missing.shape}, {heads.shape}"
        )
    return GroundTruthMat(
        joint_names=names,
        joints=np.transpose(pos, (2, 0, 1)).astype(np.float64) - 1.0,  # MATLAB 1-based -> 0-based
        missing=np.transpose(jnt_missing, (1, 0)).astype(bool),
        headboxes=np.transpose(heads, (2, 0, 1)).astype(np.float64),
    )


def load_mpii_predictions(path: str | Path, *, num_joints: int, num_persons: int | None = None) -> np.ndarray:
    """Read MPII predictions from ``.mat``, ``.npy`` or ``.json`` (formats in the module docstring).

    Args:
        path: the predictions file.
        num_joints: K, the joints per person the file must hold (16 for MPII).
        num_persons: when given, the number of persons the file must hold (the ground truth's N).

    Returns:
        (N, K, 2) float64 predictions in 0-based pixels.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown suffix, missing key, wrong shape, non-finite values or the wrong number of persons.
    """
    path = Path(path)
    _require_file(path, "MPII predictions file")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        mat = _load_mat(path)
        if "pos_pred_src" in mat:
            shaped = _shaped(mat["pos_pred_src"], (num_joints, 2, None), path, "pos_pred_src")
            preds = np.transpose(shaped, (2, 0, 1)) - 1.0
        elif "preds" in mat:
            preds = _shaped(mat["preds"], (None, num_joints, 2), path, "preds") - 1.0
        else:
            raise ValueError(f"{path}: no key 'pos_pred_src' ({num_joints}x2xN) or 'preds' (Nx{num_joints}x2) in this "
                             ".mat file")
    elif suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{path}: not a plain numeric .npy array ({exc})") from None
        preds = _shaped(array, (None, num_joints, 2), path, "array")
    elif suffix == ".json":
        preds = _shaped(_read_json_array(path), (None, num_joints, 2), path, "json list")
    else:
        raise ValueError(f"{path}: unknown predictions format {suffix!r}; use one of {MPII_PREDICTION_SUFFIXES}")
    preds = preds.astype(np.float64)
    if not np.isfinite(preds).all():
        raise ValueError(f"{path}: predictions contain NaN or infinite values")
    if num_persons is not None and preds.shape[0] != num_persons:
        raise ValueError(f"{path}: {preds.shape[0]} persons predicted, the ground truth has {num_persons}")
    return preds


def save_mpii_predictions(path: str | Path, preds: np.ndarray) -> Path:
    """Write (N, K, 2) 0-based predictions as ``.npy``, ``.json`` or HRNet's ``pred.mat`` (1-based ``preds``)."""
    path = Path(path)
    preds = _shaped(np.asarray(preds, dtype=np.float64), (None, None, 2), path, "predictions")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with atomic_write(path) as handle:
            np.save(handle, preds)
    elif suffix == ".json":
        with atomic_write(path, "w") as handle:
            json.dump(preds.tolist(), handle)
    elif suffix == ".mat":
        with atomic_write(path) as handle:
            scipy.io.savemat(handle, {"preds": preds + 1.0})
    else:
        raise ValueError(f"{path}: unknown predictions format {suffix!r}; use one of {MPII_PREDICTION_SUFFIXES}")
    return path


def load_coco_results(path: str | Path, *, num_joints: int) -> list[dict]:
    """Read a COCO keypoint results json (a list of {image_id, category_id, keypoints, score, ...}).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a list, an entry lacks a key, or its keypoints are not ``3 * num_joints`` numbers.
    """
    path = Path(path)
    results = read_json(path, "COCO keypoint results file")
    if not isinstance(results, list):
        raise ValueError(f"{path}: expected a json list of keypoint results, got {type(results).__name__}")
    for i, entry in enumerate(results):
        _check_result(entry, num_joints, f"{path}: entry {i}")
    return results


def save_coco_results(path: str | Path, results: Sequence[dict]) -> Path:
    """Write keypoint results (HRNet's json format) atomically."""
    path = Path(path)
    with atomic_write(path, "w") as handle:
        json.dump(list(results), handle)
    return path


def _check_result(entry: object, num_joints: int, where: str) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
    missing = [key for key in _RESULT_KEYS if key not in entry]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
    keypoints = entry["keypoints"]
    if not isinstance(keypoints, list) or len(keypoints) != 3 * num_joints:
        size = len(keypoints) if isinstance(keypoints, list) else type(keypoints).__name__
        raise ValueError(f"{where}: keypoints must be {3 * num_joints} numbers (x, y, score per joint), got {size}")
    numbers = [*keypoints, entry["score"]]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        raise ValueError(f"{where}: keypoints and score must be finite numbers")


def _read_json_array(path: Path) -> np.ndarray:
    data = read_json(path, "predictions file")
    try:
        return np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: expected a list of persons, each a list of [x, y] pairs") from None


def _shaped(array: np.ndarray, shape: tuple[int | None, ...], path: Path, what: str) -> np.ndarray:
    """``array`` if its shape matches ``shape`` (None = any size), else a ValueError naming the file."""
    array = np.asarray(array)
    if array.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(array.shape, shape, strict=True)
    ):
        expected = "x".join("N" if want is None else str(want) for want in shape)
        raise ValueError(f"{path}: {what} has shape {array.shape}, expected {expected}")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path}: {what} is not numeric (dtype {array.dtype})")
    return array
