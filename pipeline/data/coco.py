"""COCO person keypoints (via pycocotools), with ground-truth boxes or a person-detections file.

Layout of a COCO root::

    annotations/person_keypoints_<split>.json
    images/<split>/<file_name>        (or <split>/<file_name> directly under the root)

Ground-truth persons follow HRNet's ``coco.py``: category 1 only; boxes clipped to the image
(``x2 = min(width - 1, x1 + max(0, w - 1))``) and kept when ``area > 0`` and the clipped box is not empty;
persons with fewer than ``min_keypoints`` labelled keypoints dropped (HRNet drops those without any); box to
centre/scale with ``geometry.box_to_center_scale`` (aspect fix, 1.25 padding); visibility ``v > 0``.

Detections (``COCO_val2017_detections_AP_H_56_person.json`` format, a list of ``{image_id, category_id, bbox,
score}``): category 1 with ``score >= score_threshold`` become unlabeled records with ``score`` and ``image_id``
set and instance id ``"det<i>"``, ``i`` the position in the file.

Bad input, by level (``storage.annotations.read_coco_keypoint_file`` checks the annotation file's entries):

* file: an annotation or detections file that is not json or whose top level has the wrong shape (not an object
  with ``images``, ``annotations`` and ``categories`` lists; detections not a list), or a category without an
  integer id, raises ``ValueError`` naming the file and the field;
* item: a malformed image entry (``id``, ``file_name``, ``width``, ``height``) or annotation (``id``, an unknown
  ``image_id``, ``category_id``, ``iscrowd``, ``bbox``, ``area``, ``keypoints`` not 17 x 3, ``num_keypoints``), an
  image name leaving the image folder, a box empty after clipping, or a detection that is not an object with an
  ``image_id``, a ``bbox`` of positive finite width and height and a finite ``score``. Given a ``skipped`` list,
  the loaders leave such items out and append ``(item, reason)`` (the item names the file and the entry, the
  reason the field); without one, as evaluation calls them, the first refuses the file (``ValueError``).

Detections of images the annotation file does not have are no error (a full detections file over an annotation
subset is common): they are counted in one ``skipped`` line.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO as CocoApi

from models.joints import COCO
from pipeline.data.paths import check_relative
from pipeline.geometry import box_to_center_scale
from pipeline.records import SampleRecord
from storage.annotations import finite_numbers, raise_for_problems, read_coco_keypoint_file
from storage.jsonfiles import is_json_int, read_json

logger = logging.getLogger(__name__)

PERSON_CATEGORY = 1


def annotation_path(root: Path, split: str) -> Path:
    """``root/annotations/person_keypoints_<split>.json``."""
    return Path(root) / "annotations" / f"person_keypoints_{split}.json"


def image_dir(root: Path, split: str) -> Path:
    """``root/images/<split>`` when it exists, else ``root/<split>`` (the layout of the official zips)."""
    nested = Path(root) / "images" / split
    return nested if nested.is_dir() else Path(root) / split


def read_coco(path: Path, *, skipped: list[tuple[str, str]] | None = None) -> CocoApi:
    """A pycocotools index of a keypoint annotation file, its entries checked first (pycocotools trusts them).

    Args:
        path: the annotation file.
        skipped: where to list the malformed images and annotations, left out of the index; None refuses a file
            that has any (evaluation: a metric over a silently smaller ground truth is wrong).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a COCO annotation object (e.g. an MPII json list), or a malformed entry without ``skipped``.
    """
    checked = read_coco_keypoint_file(path, num_joints=COCO.num_joints)
    if skipped is None:
        raise_for_problems(checked.problems)
    else:
        skipped.extend(checked.problems)
    api = CocoApi()
    api.dataset = checked.dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on stdout
        api.createIndex()
    return api


def parse_box(value: object, what: str = "field 'bbox'") -> tuple[float, float, float, float]:
    """A detection box ``[x, y, w, h]`` of finite numbers with positive ``w`` and ``h``.

    A box of zero, negative or NaN size has no centre/scale a crop can use: it is refused here, where the file
    and entry are known, rather than in a DataLoader worker later.

    Raises:
        ValueError: naming ``what`` and the value.
    """
    x, y, w, h = finite_numbers(value, 4, what)
    if w <= 0 or h <= 0:
        raise ValueError(f"{what}: width and height must be positive, got {value!r}")
    return x, y, w, h


def _clean_box(ann: dict, width: float, height: float) -> list[float] | None:
    """HRNet's box sanitising: clip to the image, drop empty boxes and zero areas.

    Raises:
        ValueError: the clipped box has neither width nor height (HRNet keeps it; its crop has no size).
    """
    x, y, w, h = (float(v) for v in ann["bbox"])
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if not (ann["area"] > 0 and x2 >= x1 and y2 >= y1):
        return None
    if x2 == x1 and y2 == y1:
        raise ValueError(f"field 'bbox': {ann['bbox']!r} is empty once clipped to the {width:g}x{height:g} image")
    return [x1, y1, x2 - x1, y2 - y1]


def _person(
    ann: dict, info: dict, source: str, images: Path, input_aspect: float, min_keypoints: int
) -> SampleRecord | None:
    """The record of one person annotation (already checked by ``storage.annotations``), or None by HRNet's rules.

    Raises:
        ValueError: an image name leaving ``images``, or a box empty after clipping.
    """
    name = check_relative(info["file_name"], images)
    box = _clean_box(ann, info["width"], info["height"])
    keypoints = np.asarray(ann["keypoints"], dtype=np.float32).reshape(-1, 3)
    if box is None or int(np.count_nonzero(keypoints[:, 2] > 0)) < min_keypoints:
        return None
    center, scale = box_to_center_scale(*box, aspect_ratio=input_aspect)
    return SampleRecord(
        source=source, root=images, image=name, center=center, scale=scale, instance_id=str(ann["id"]),
        joints=keypoints[:, :2].copy(), visibility=(keypoints[:, 2] > 0).astype(np.float32),
        image_id=int(info["id"]),
    )  # fmt: skip


def _ground_truth(
    api: CocoApi, source: str, images: Path, input_aspect: float, min_keypoints: int, where: Path,
    problems: list[tuple[str, str]],
) -> list[SampleRecord]:  # fmt: skip
    records = []
    for image_id in api.getImgIds():  # file order, as HRNet iterates
        info = api.imgs[image_id]
        for ann in api.loadAnns(api.getAnnIds(imgIds=image_id, iscrowd=False)):
            if ann["category_id"] != PERSON_CATEGORY:
                continue
            try:
                record = _person(ann, info, source, images, input_aspect, min_keypoints)
            except ValueError as exc:
                problems.append((f"{where} annotation id {ann['id']} (image {image_id})", str(exc)))
                continue
            if record is not None:
                records.append(record)
    return records


def _read_detections(detections: str | Path | Sequence[dict]) -> tuple[list[object], str]:
    """The detections as a list and how to name them in messages (the file, or ``detections``)."""
    where = str(detections) if isinstance(detections, str | Path) else "detections"
    if isinstance(detections, str | Path):
        detections = read_json(detections, "detections file")
    if not isinstance(detections, list | tuple):
        raise ValueError(f"{where}: expected a list of {{image_id, category_id, bbox, score}}, "
                         f"got {type(detections).__name__}")  # fmt: skip
    return list(detections), where


def _detection(
    det: object, api: CocoApi, source: str, images: Path, index: int, score_threshold: float, input_aspect: float
) -> SampleRecord | None:
    """The record of one detection, None for another category, a low score or an image not in the file.

    Raises:
        ValueError: not an object, a missing key, a bad box or score, or an image name leaving ``images``.
    """
    if not isinstance(det, dict):
        raise ValueError(f"expected an object, got {type(det).__name__}")
    missing = [key for key in ("image_id", "bbox", "score") if key not in det]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    if not is_json_int(det["image_id"]):
        raise ValueError(f"field 'image_id': expected an integer, got {det['image_id']!r}")
    box = parse_box(det["bbox"])
    (score,) = finite_numbers([det["score"]], 1, "field 'score'")
    info = api.imgs.get(det["image_id"])
    if det.get("category_id", PERSON_CATEGORY) != PERSON_CATEGORY or score < score_threshold or info is None:
        return None
    center, scale = box_to_center_scale(*box, aspect_ratio=input_aspect)
    return SampleRecord(
        source=source, root=images, image=check_relative(info["file_name"], images), center=center, scale=scale,
        instance_id=f"det{index}", score=score, image_id=int(det["image_id"]),
    )  # fmt: skip


def _from_detections(
    api: CocoApi, source: str, images: Path, entries: list[object], where: str, score_threshold: float,
    input_aspect: float, problems: list[tuple[str, str]],
) -> tuple[list[SampleRecord], int]:  # fmt: skip
    """The records of the detections, and how many were of images the annotation file does not have."""
    records = []
    unknown = 0
    for i, det in enumerate(entries):
        try:
            record = _detection(det, api, source, images, i, score_threshold, input_aspect)
        except ValueError as exc:
            problems.append((f"{where} detection {i}", str(exc)))
            continue
        if record is not None:
            records.append(record)
        elif isinstance(det, dict) and det["image_id"] not in api.imgs:
            unknown += 1
    if unknown:
        logger.warning("%s: skipped %d detections whose image_id is not in the annotation file", source, unknown)
    return records, unknown


def load_coco(
    root: str | Path,
    split: str,
    *,
    detections: str | Path | Sequence[dict] | None = None,
    score_threshold: float = 0.0,
    input_aspect: float = 0.75,
    min_keypoints: int = 1,
    annotation_file: str | Path | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> list[SampleRecord]:
    """COCO persons of one split as records.

    Args:
        root: COCO root (see the module docstring for the layout).
        split: e.g. ``train2017``, ``val2017``; names the annotation file and the image folder.
        detections: person detections (file or parsed list); None for the ground-truth boxes.
        score_threshold: detections below this score are dropped.
        input_aspect: model input width / height (0.75 for 192x256).
        min_keypoints: ground-truth persons need this many labelled keypoints (HRNet: 1); 0 keeps all boxes.
        annotation_file: another annotation file than ``annotations/person_keypoints_<split>.json``.
        skipped: where to list the bad images, annotations and detections, left out (see the module docstring);
            None (evaluation) refuses the files at the first bad item.

    Returns:
        Ground-truth records in the file's image then annotation order (crowd annotations excluded), or
        detection records in file order.

    Raises:
        FileNotFoundError: annotation or detections file missing.
        ValueError: malformed annotation or detections file, or (without ``skipped``) a bad item.
    """
    root = Path(root)
    path = Path(annotation_file) if annotation_file is not None else annotation_path(root, split)
    problems: list[tuple[str, str]] = []
    api = read_coco(path, skipped=problems)
    images = image_dir(root, split)
    source = f"coco/{split}"
    unknown, where = 0, ""
    if detections is None:
        records = _ground_truth(api, source, images, input_aspect, min_keypoints, path, problems)
    else:
        entries, where = _read_detections(detections)
        records, unknown = _from_detections(
            api, source, images, entries, where, score_threshold, input_aspect, problems
        )
    if skipped is None:
        raise_for_problems(problems)
    else:
        skipped.extend(problems)
        if unknown:
            skipped.append((where, f"{unknown} detection(s) of images not in {path} (left out)"))
    logger.info("%s: %d persons (%s boxes)", source, len(records), "detected" if detections is not None else "GT")
    return records
