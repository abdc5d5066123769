"""Files of ground truth and predictions for evaluation: MPII ``.mat``/``.npy``/``.json``, COCO keypoint json.

Every reader checks what it reads and raises ``ValueError`` (or ``FileNotFoundError``) naming the file and
what is wrong, so that ``fpd eval`` can print one clear line. The metrics themselves (``pipeline.metrics``)
never touch files.

A COCO keypoint annotation file is checked at two levels. The file is refused (``ValueError``) when it is not
json or its top level is not an object with ``images``, ``annotations`` and ``categories`` lists. Its entries
are checked one by one (:func:`read_coco_keypoint_file`): a malformed image or annotation is listed as a
problem naming the entry and the field, and the caller chooses: the data loaders leave such entries out and
report them, evaluation refuses the file (a metric over a silently smaller ground truth is wrong).

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
import numbers
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.io

from storage.atomic import atomic_write
from storage.jsonfiles import is_json_int, read_json

MPII_PREDICTION_SUFFIXES = (".mat", ".npy", ".json")
_GT_KEYS = ("dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src")
_RESULT_KEYS = ("image_id", "category_id", "keypoints", "score")
COCO_PERSON = 1
_JSON_NUMBERS = {int, float}
_MAX_FLOAT = sys.float_info.max
"""Category id of persons in COCO files: only their annotations carry keypoints to check."""
_COCO_LISTS = ("images", "annotations", "categories")


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")


def _load_mat(path: Path) -> dict:
    try:
        return scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types for a file that is not a MATLAB file
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({exc})") from None


def _joint_names(raw: np.ndarray, path: Path) -> tuple[str, ...]:
    """``dataset_joints`` (a 1xK cell of strings as scipy loads it) as plain strings."""
    cells = [np.asarray(cell).reshape(-1) for cell in np.asarray(raw, dtype=object).reshape(-1)]
    if any(cell.size == 0 for cell in cells):
        raise ValueError(f"{path}: dataset_joints has an empty cell; expected one joint name per cell")
    return tuple(str(cell[0]) for cell in cells)


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
    names = _joint_names(mat["dataset_joints"], path)
    pos, jnt_missing, heads = mat["pos_gt_src"], mat["jnt_missing"], mat["headboxes_src"]
    k, n = len(names), (pos.shape[-1] if pos.ndim == 3 else -1)
    if pos.shape != (k, 2, n) or jnt_missing.shape != (k, n) or heads.shape != (2, 2, n):
        raise ValueError(
            f"{path}: expected pos_gt_src ({k}, 2, N), jnt_missing ({k}, N), headboxes_src (2, 2, N); got "
            f"{pos.shape}, {jnt_missing.shape}, {heads.shape}"
        )
    for key, array in (("pos_gt_src", pos), ("jnt_missing", jnt_missing), ("headboxes_src", heads)):
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise ValueError(f"{path}: {key} is not numeric (dtype {array.dtype})")
    # A NaN would not fail the metric, it would quietly turn it into NaN: only missing joints may hold anything.
    labelled = ~jnt_missing.astype(bool)
    if not np.isfinite(np.transpose(pos, (0, 2, 1))[labelled]).all():
        raise ValueError(f"{path}: pos_gt_src of a labelled joint (jnt_missing 0) holds NaN or infinite values")
    if not np.isfinite(heads).all():
        raise ValueError(f"{path}: headboxes_src holds NaN or infinite values")
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
        except (ValueError, EOFError) as exc:  # EOFError: an empty or cut file
            raise ValueError(f"{path}: not a plain numeric .npy array ({exc or 'empty file'})") from None
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


class CocoKeypointFile(NamedTuple):
    """A COCO keypoint annotation file: ``dataset``, its object with only the well-formed ``images`` and
    ``annotations``, and ``problems``, ``(entry, reason)`` of each entry left out (images first, in file order),
    e.g. ``("<file> annotation 3 (id 17)", "field 'bbox': expected 4 finite numbers, got [0, 0, 'a', 1]")``."""

    dataset: dict[str, Any]
    problems: list[tuple[str, str]]


def read_coco_keypoint_file(path: str | Path, *, num_joints: int) -> CocoKeypointFile:
    """Read a COCO keypoint annotation file and check each image and annotation (levels: the module docstring).

    An image needs a unique integer ``id``, a ``file_name`` string and a positive ``width`` and ``height``. An
    annotation needs a unique integer ``id``, the ``image_id`` of a kept image, an integer ``category_id`` and
    ``iscrowd`` 0 or 1 (pycocotools indexes by all four); a person's also ``bbox`` [x, y, w, h] with w, h >= 0,
    ``area`` >= 0, ``keypoints`` of ``3 * num_joints`` numbers and an integer ``num_keypoints`` >= 0 (what the
    loaders and COCOeval read). All numbers finite.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not json, not an object with ``images``, ``annotations`` and ``categories`` lists, or a
            category without an integer ``id``; the message names the file and the field.
    """
    path = Path(path)
    dataset = read_json(path, "COCO annotation file")
    if not isinstance(dataset, dict):
        hint = " (it looks like an MPII/HRNet json list)" if isinstance(dataset, list) else ""
        raise ValueError(f"{path}: expected a COCO annotation object with images and annotations{hint}")
    missing = [key for key in _COCO_LISTS if key not in dataset]
    if missing:
        raise ValueError(f"{path}: not a COCO keypoint file, missing key(s) {', '.join(missing)}")
    for key in _COCO_LISTS:
        if not isinstance(dataset[key], list):
            raise ValueError(f"{path}: field '{key}' must be a list, got {type(dataset[key]).__name__}")
    for i, category in enumerate(dataset["categories"]):
        if not isinstance(category, dict) or not is_json_int(category.get("id")):
            raise ValueError(f"{path}: categories entry {i}: expected an object with an integer 'id'")
    problems: list[tuple[str, str]] = []
    images: dict[int, dict] = {}
    left_out: set[int] = set()
    for i, image in enumerate(dataset["images"]):
        reason = _image_problem(image, images)
        if reason is None:
            images[image["id"]] = image
            continue
        problems.append((f"{path} image {i}{_id_of(image)}", reason))
        if isinstance(image, dict) and is_json_int(image.get("id")) and image["id"] not in images:
            left_out.add(image["id"])
    annotations: dict[int, dict] = {}
    for i, ann in enumerate(dataset["annotations"]):
        reason = _annotation_problem(ann, images, left_out, annotations, num_joints)
        if reason is None:
            annotations[ann["id"]] = ann
        else:
            problems.append((f"{path} annotation {i}{_id_of(ann)}", reason))
    kept = {**dataset, "images": list(images.values()), "annotations": list(annotations.values())}
    return CocoKeypointFile(kept, problems)


def raise_for_problems(problems: Sequence[tuple[str, str]]) -> None:
    """Refuse a file with bad entries, as evaluation must: ``ValueError`` naming the first and counting the rest."""
    if problems:
        item, reason = problems[0]
        more = f" (and {len(problems) - 1} more bad entries)" if len(problems) > 1 else ""
        raise ValueError(f"{item}: {reason}{more}")


def finite_numbers(value: object, count: int, what: str) -> list[float]:
    """``value`` as ``count`` floats when it is a json list of that many finite numbers (booleans are no numbers).

    Raises:
        ValueError: ``"<what>: expected <count> finite numbers, got <value>"``.
    """
    # The type test runs in C first: a COCO train file has 7.6 million keypoint numbers to check.
    if isinstance(value, list | tuple) and len(value) == count and set(map(type, value)) <= _JSON_NUMBERS:
        floats = [float(v) if -_MAX_FLOAT <= v <= _MAX_FLOAT else math.nan for v in value]  # no int overflow
        if all(map(math.isfinite, floats)):
            return floats
    elif isinstance(value, list | tuple) and len(value) == count and all(map(_is_number, value)):
        return [float(v) for v in value]  # numpy numbers of a list made in code
    raise ValueError(f"{what}: expected {count} finite numbers, got {_short(value)}")


def is_file_name(value: object) -> bool:
    """Whether ``value`` is a non-empty string that can be stored as UTF-8: json's ``\\udcff`` escapes can give
    lone surrogates, the only characters UTF-8 cannot encode."""
    return isinstance(value, str) and value != "" and not any("\ud800" <= c <= "\udfff" for c in value)


def _image_problem(image: object, kept: dict[int, dict]) -> str | None:
    if not isinstance(image, dict):
        return f"expected an object, got {type(image).__name__}"
    if not is_json_int(image.get("id")):
        return f"field 'id': expected an integer, got {_shown(image, 'id')}"
    if image["id"] in kept:
        return f"field 'id': {image['id']} is the id of an earlier image"
    if not is_file_name(image.get("file_name")):
        return f"field 'file_name': expected a file name in UTF-8, got {_shown(image, 'file_name')}"
    for key in ("width", "height"):
        if not _is_number(image.get(key)) or image[key] <= 0:
            return f"field '{key}': expected a positive number, got {_shown(image, key)}"
    return None


def _annotation_problem(
    ann: object, images: dict[int, dict], left_out: set[int], kept: dict[int, dict], num_joints: int
) -> str | None:
    if not isinstance(ann, dict):
        return f"expected an object, got {type(ann).__name__}"
    for key in ("id", "image_id", "category_id"):
        if not is_json_int(ann.get(key)):
            return f"field '{key}': expected an integer, got {_shown(ann, key)}"
    if ann["id"] in kept:
        return f"field 'id': {ann['id']} is the id of an earlier annotation"
    if ann["image_id"] not in images:
        why = "was left out (see its entry)" if ann["image_id"] in left_out else "is not in the file's images"
        return f"field 'image_id': image {ann['image_id']} {why}"
    if ann.get("iscrowd") not in (0, 1):
        return f"field 'iscrowd': expected 0 or 1, got {_shown(ann, 'iscrowd')}"
    if ann["category_id"] != COCO_PERSON:
        return None
    try:
        _, _, w, h = finite_numbers(ann.get("bbox"), 4, "field 'bbox'")
        finite_numbers(ann.get("keypoints"), 3 * num_joints, "field 'keypoints'")
    except ValueError as exc:
        return str(exc)
    if w < 0 or h < 0:
        return f"field 'bbox': width and height must be >= 0, got {_short(ann['bbox'])}"
    if not _is_number(ann.get("area")) or ann["area"] < 0:
        return f"field 'area': expected a number >= 0, got {_shown(ann, 'area')}"
    if not is_json_int(ann.get("num_keypoints")) or ann["num_keypoints"] < 0:
        return f"field 'num_keypoints': expected an integer >= 0, got {_shown(ann, 'num_keypoints')}"
    return None


def _id_of(entry: object) -> str:
    return f" (id {_short(entry['id'])})" if isinstance(entry, dict) and "id" in entry else ""  # beside its index


def _shown(entry: dict, key: str) -> str:
    return _short(entry[key]) if key in entry else "nothing (no such key)"


def _is_number(value: object) -> bool:
    """A finite int or float (numpy's too), not a bool: json's ``true`` is no coordinate."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and -_MAX_FLOAT <= value <= _MAX_FLOAT


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_result(entry: object, num_joints: int, where: str) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
    missing = [key for key in _RESULT_KEYS if key not in entry]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
    for key in ("image_id", "category_id"):
        if not is_json_int(entry[key]):
            raise ValueError(f"{where}: {key} must be an integer, got {_short(entry[key])}")
    keypoints = entry["keypoints"]
    if not isinstance(keypoints, list) or len(keypoints) != 3 * num_joints:
        size = len(keypoints) if isinstance(keypoints, list) else type(keypoints).__name__
        raise ValueError(f"{where}: keypoints must be {3 * num_joints} numbers (x, y, score per joint), got {size}")
    if not all(_is_number(v) for v in [*keypoints, entry["score"]]):
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
