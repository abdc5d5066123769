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
from storage.jsonfiles import read_json

logger = logging.getLogger(__name__)

PERSON_CATEGORY = 1


def annotation_path(root: Path, split: str) -> Path:
    """``root/annotations/person_keypoints_<split>.json``."""
    return Path(root) / "annotations" / f"person_keypoints_{split}.json"


def image_dir(root: Path, split: str) -> Path:
    """``root/images/<split>`` when it exists, else ``root/<split>`` (the layout of the official zips)."""
    nested = Path(root) / "images" / split
    return nested if nested.is_dir() else Path(root) / split


def read_coco(path: Path) -> CocoApi:
    """A pycocotools index of a keypoint annotation file, checked for the COCO structure.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a COCO annotation object (e.g. an MPII json list) or missing its keys.
    """
    path = Path(path)
    dataset = read_json(path, "COCO annotation file")
    if not isinstance(dataset, dict):
        hint = " (it looks like an MPII/HRNet json list)" if isinstance(dataset, list) else ""
        raise ValueError(f"{path}: expected a COCO annotation object with images and annotations{hint}")
    missing = [key for key in ("images", "annotations", "categories") if key not in dataset]
    if missing:
        raise ValueError(f"{path}: not a COCO keypoint file, missing key(s) {', '.join(missing)}")
    api = CocoApi()
    api.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on stdout
        api.createIndex()
    return api


def _clean_box(ann: dict, width: int, height: int) -> list[float] | None:
    """HRNet's box sanitising: clip to the image, drop empty boxes and zero areas."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if ann.get("area", 0) > 0 and x2 >= x1 and y2 >= y1:
        return [x1, y1, x2 - x1, y2 - y1]
    return None


def _ground_truth(
    api: CocoApi, source: str, images: Path, input_aspect: float, min_keypoints: int
) -> list[SampleRecord]:
    records = []
    for image_id in api.getImgIds():  # file order, as HRNet iterates
        info = api.imgs[image_id]
        name = check_relative(info["file_name"], images)
        for ann in api.loadAnns(api.getAnnIds(imgIds=image_id, iscrowd=False)):
            if ann.get("category_id") != PERSON_CATEGORY or "keypoints" not in ann:
                continue
            box = _clean_box(ann, info["width"], info["height"])
            keypoints = np.asarray(ann["keypoints"], dtype=np.float32).reshape(-1, 3)
            if box is None or int(np.count_nonzero(keypoints[:, 2] > 0)) < min_keypoints:
                continue
            if keypoints.shape[0] != COCO.num_joints:
                raise ValueError(f"{source} annotation {ann['id']}: {keypoints.shape[0]} keypoints, expected 17")
            center, scale = box_to_center_scale(*box, aspect_ratio=input_aspect, padding=1.25)
            records.append(
                SampleRecord(
                    source=source, root=images, image=name, center=center, scale=scale,
                    instance_id=str(ann["id"]), joints=keypoints[:, :2].copy(),
                    visibility=(keypoints[:, 2] > 0).astype(np.float32), image_id=int(image_id),
                )
            )  # fmt: skip
    return records


def _read_detections(detections: str | Path | Sequence[dict]) -> list[dict]:
    if isinstance(detections, (str, Path)):
        detections = read_json(detections, "detections file")
    if not isinstance(detections, list):
        raise ValueError("detections must be a list of {image_id, category_id, bbox, score}")
    return list(detections)


def _from_detections(
    api: CocoApi, source: str, images: Path, detections: list[dict], score_threshold: float, input_aspect: float
) -> list[SampleRecord]:
    records = []
    unknown = 0
    for i, det in enumerate(detections):
        missing = [key for key in ("image_id", "bbox", "score") if key not in det]
        if missing:
            raise ValueError(f"detection {i}: missing key(s) {', '.join(missing)}")
        if det.get("category_id", PERSON_CATEGORY) != PERSON_CATEGORY or det["score"] < score_threshold:
            continue
        info = api.imgs.get(det["image_id"])
        if info is None:
            unknown += 1
            continue
        center, scale = box_to_center_scale(*(float(v) for v in det["bbox"]), aspect_ratio=input_aspect, padding=1.25)
        records.append(
            SampleRecord(
                source=source, root=images, image=check_relative(info["file_name"], images), center=center,
                scale=scale, instance_id=f"det{i}", score=float(det["score"]), image_id=int(det["image_id"]),
            )
        )  # fmt: skip
    if unknown:
        logger.warning("%s: skipped %d detections whose image_id is not in the annotation file", source, unknown)
    return records


def load_coco(
    root: str | Path,
    split: str,
    *,
    detections: str | Path | Sequence[dict] | None = None,
    score_threshold: float = 0.0,
    input_aspect: float = 0.75,
    min_keypoints: int = 1,
    annotation_file: str | Path | None = None,
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

    Returns:
        Ground-truth records in the file's image then annotation order (crowd annotations excluded), or
        detection records in file order.

    Raises:
        FileNotFoundError: annotation or detections file missing.
        ValueError: malformed annotation or detections file.
    """
    root = Path(root)
    api = read_coco(Path(annotation_file) if annotation_file is not None else annotation_path(root, split))
    images = image_dir(root, split)
    source = f"coco/{split}"
    if detections is None:
        records = _ground_truth(api, source, images, input_aspect, min_keypoints)
    else:
        dets = _read_detections(detections)
        records = _from_detections(api, source, images, dets, score_threshold, input_aspect)
    logger.info("%s: %d persons (%s boxes)", source, len(records), "detected" if detections is not None else "GT")
    return records
