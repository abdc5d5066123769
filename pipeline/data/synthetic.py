"""Synthetic pose datasets written in the genuine MPII / COCO layouts, and plain unlabeled image folders.

The images are articulated figures on clutter (``pipeline.data.figures``): small enough to be learned by a tiny
hourglass on a CPU in minutes, varied enough (pose, size, 1-3 people, occluders, truncation) that a bigger
network clearly does better. Everything is deterministic from ``seed``: image ``i`` of a split depends only on
``(seed, split, i)``, so asking for more images keeps the first ones.

Layouts (the same as the real datasets, so the real loaders and evaluators read them unchanged):

* ``mpii/``: ``images/*.jpg``, ``annot/train.json`` and ``annot/valid.json`` (HRNet json: 1-based joints, and the
  centre and scale as raw MPII writes them, 1-based and before HRNet's shift and padding; missing joints
  ``[-1, -1]`` with ``joints_vis`` 0), ``annot/gt_valid.mat`` (HRNet's ``dataset_joints``, ``jnt_missing``,
  ``pos_gt_src`` 1-based with 0 for missing, ``headboxes_src``).
* ``coco/``: ``annotations/person_keypoints_{train,val}2017.json`` and ``images/{train,val}2017/*.jpg``.
* ``unlabeled/<folder>/*.jpg``: images only.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from models.joints import COCO
from pipeline.data.figures import COCO_FROM_BODY, MPII_FROM_BODY, Figure, Scene, render_scene
from pipeline.data.mpii import write_mpii_gt_mat
from pipeline.records import PIXEL_STD
from storage.atomic import atomic_write

logger = logging.getLogger(__name__)

MIN_LABELLED_JOINTS = 4
"""People with fewer joints inside the image are not annotated (as MPII / COCO skip barely visible people)."""


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate.

    Attributes:
        num_train: training images per dataset.
        num_val: validation images per dataset.
        seed: the one seed everything derives from.
        size_range: (min, max) of image width and height in pixels, drawn independently per image.
        max_people: people per image, at most.
        jpeg_quality: JPEG quality of the written images.
        occluder_prob: chance that an image gets 1-2 occluding boxes or discs.
        clutter_shapes: (min, max) number of background stripes and blobs per image.
    """

    num_train: int = 64
    num_val: int = 16
    seed: int = 0
    size_range: tuple[int, int] = (192, 320)
    max_people: int = 3
    jpeg_quality: int = 92
    occluder_prob: float = 0.35
    clutter_shapes: tuple[int, int] = (2, 8)


def _scene(config: SyntheticConfig, stream: str, index: int) -> Scene:
    """The scene of image ``index`` of ``stream``; independent of how many images are asked for."""
    rng = np.random.default_rng([config.seed, zlib.crc32(stream.encode()), index])
    lo, hi = config.size_range
    size = (int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)))
    return render_scene(
        rng, size, config.max_people, occluder_prob=config.occluder_prob, clutter_shapes=config.clutter_shapes
    )


def _save(scene: Scene, path: Path, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scene.image.save(path, quality=quality)


def _write_json(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as handle:
        handle.write(json.dumps(payload))


# ---------------------------------------------------------------------------------------------------------- MPII


def _mpii_person(scene: Scene, index: int, figure: Figure, rng: np.random.Generator, image_name: str) -> dict | None:
    """HRNet-json entry of one person, or None when too little of them is in the image."""
    joints = figure.points[list(MPII_FROM_BODY)]
    inside, _ = scene.visible(index, joints)
    if inside.sum() < MIN_LABELLED_JOINTS:
        return None
    # MPII's raw scale is about 1.2-1.5 body heights / 200 and its centre sits above the body's middle:
    # HRNet's loader moves it down by 15 * s and pads s by 1.25, and we want that to land on the body again.
    x1, y1, x2, y2 = figure.extent()
    s = max(y2 - y1, (x2 - x1) * 0.8) * rng.uniform(1.1, 1.35) / PIXEL_STD
    center = [(x1 + x2) * 0.5 + rng.normal(0, 0.03) * s * PIXEL_STD, (y1 + y2) * 0.5 - 15.0 * s]
    one_based = np.where(inside[:, None], joints + 1.0, -1.0)
    return {
        "image": image_name,
        "center": [round(float(c) + 1.0, 2) for c in center],  # 1-based like the joints: the loader subtracts 1
        "scale": round(float(s), 6),
        "joints": [[round(float(x), 4), round(float(y), 4)] for x, y in one_based],
        "joints_vis": [int(v) for v in inside],
        "headbox": [round(float(v) + 1.0, 4) for v in figure.head_box()],  # 1-based, only for gt_valid.mat
    }


def _mpii_split(config: SyntheticConfig, root: Path, split: str, count: int, start_index: int) -> list[dict]:
    people = []
    for i in range(count):
        scene = _scene(config, f"mpii/{split}", i)
        name = f"{start_index + i:09d}.jpg"
        _save(scene, root / "images" / name, config.jpeg_quality)
        rng = np.random.default_rng([config.seed, zlib.crc32(f"mpii/{split}/boxes".encode()), i])
        for k, figure in enumerate(scene.figures):
            entry = _mpii_person(scene, k, figure, rng, name)
            if entry is not None:
                people.append(entry)
    return people


def generate_mpii(out_dir: Path, config: SyntheticConfig) -> Path:
    """Write a synthetic MPII root at ``out_dir`` and return it."""
    out_dir = Path(out_dir)
    train = _mpii_split(config, out_dir, "train", config.num_train, 0)
    valid = _mpii_split(config, out_dir, "valid", config.num_val, 10_000_000)
    write_mpii_gt_mat(out_dir / "annot" / "gt_valid.mat", valid)
    for split, people in (("train", train), ("valid", valid)):
        entries = [{k: v for k, v in p.items() if k != "headbox"} for p in people]
        _write_json(out_dir / "annot" / f"{split}.json", entries)
    logger.info("synthetic MPII at %s: %d train / %d valid persons", out_dir, len(train), len(valid))
    return out_dir


# ---------------------------------------------------------------------------------------------------------- COCO


def _coco_annotation(scene: Scene, index: int, figure: Figure, image_id: int, ann_id: int) -> dict | None:
    joints = figure.points[list(COCO_FROM_BODY)]
    inside, own = scene.visible(index, joints)
    area = scene.area(index)
    # COCO: v=2 labelled and visible, v=1 labelled but occluded, v=0 not labelled (here: outside the image).
    v = np.where(own, 2, np.where(inside, 1, 0))
    if area == 0 or np.count_nonzero(v) < MIN_LABELLED_JOINTS:
        return None
    h, w = scene.owner.shape
    x1, y1, x2, y2 = figure.extent()
    x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, w - 1.0), min(y2, h - 1.0)
    keypoints = []
    for (x, y), vis in zip(joints, v, strict=True):
        keypoints += [round(float(x), 2), round(float(y), 2), int(vis)] if vis else [0, 0, 0]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": 0,
        "segmentation": [],
        "area": float(area),
        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
        "keypoints": keypoints,
        "num_keypoints": int(np.count_nonzero(v)),
    }


def generate_coco(out_dir: Path, config: SyntheticConfig) -> Path:
    """Write a synthetic COCO root at ``out_dir`` and return it."""
    out_dir = Path(out_dir)
    category = {
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": list(COCO.names),
        "skeleton": [[a + 1, b + 1] for a, b in COCO.skeleton],  # COCO's skeleton is 1-based
    }
    ann_id = 1
    for split, count, id_base in (("train2017", config.num_train, 1), ("val2017", config.num_val, 500_000)):
        images, annotations = [], []
        for i in range(count):
            scene = _scene(config, f"coco/{split}", i)
            image_id = id_base + i
            name = f"{image_id:012d}.jpg"
            _save(scene, out_dir / "images" / split / name, config.jpeg_quality)
            images.append({"id": image_id, "file_name": name, "width": scene.image.width,
                           "height": scene.image.height, "license": 0})  # fmt: skip
            for k, figure in enumerate(scene.figures):
                ann = _coco_annotation(scene, k, figure, image_id, ann_id)
                if ann is not None:
                    annotations.append(ann)
                    ann_id += 1
        payload = {
            "info": {"description": f"FPD synthetic figures, seed {config.seed}", "version": "1.0"},
            "licenses": [{"id": 0, "name": "generated", "url": ""}],
            "images": images,
            "annotations": annotations,
            "categories": [category],
        }
        _write_json(out_dir / "annotations" / f"person_keypoints_{split}.json", payload)
        logger.info("synthetic COCO %s at %s: %d images, %d persons", split, out_dir, count, len(annotations))
    return out_dir


# ---------------------------------------------------------------------------------------------------- unlabeled


def generate_dataset(out_dir: Path, fmt: str = "mpii", config: SyntheticConfig | None = None) -> Path:
    """Write one synthetic labelled dataset (``fmt`` ``"mpii"`` or ``"coco"``) at ``out_dir``."""
    config = config or SyntheticConfig()
    if fmt == "mpii":
        return generate_mpii(out_dir, config)
    if fmt == "coco":
        return generate_coco(out_dir, config)
    raise ValueError(f"unknown synthetic format {fmt!r}; expected 'mpii' or 'coco'")


def generate_unlabeled_folder(
    out_dir: Path,
    num_images: int,
    *,
    seed: int = 0,
    size_range: tuple[int, int] = (192, 320),
    config: SyntheticConfig | None = None,
    detections: bool = False,
) -> list[Path]:
    """Write ``num_images`` plain JPEGs (no annotation) into ``out_dir``; returns their paths.

    Args:
        out_dir: the folder.
        num_images: how many images.
        seed: the folder's seed (replaces ``config.seed``).
        size_range: image size range when no ``config`` is given.
        config: scene settings (people, occluders, clutter, sizes); default ``SyntheticConfig(size_range=...)``.
        detections: also write ``detections.json`` with a box per person (as a perfect person detector would), so
            that teacher inference crops people the way labelled crops are cut instead of taking the whole image.
    """
    out_dir = Path(out_dir)
    config = replace(config or SyntheticConfig(size_range=size_range), seed=seed)
    paths, boxes = [], []
    for i in range(num_images):
        path = out_dir / f"img_{i:05d}.jpg"
        scene = _scene(config, f"unlabeled/{out_dir.name}", i)
        _save(scene, path, config.jpeg_quality)
        paths.append(path)
        h, w = scene.owner.shape
        for k, figure in enumerate(scene.figures):
            inside, _ = scene.visible(k, figure.points)
            if inside.sum() < MIN_LABELLED_JOINTS:
                continue
            x1, y1, x2, y2 = figure.extent()
            x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, w - 1.0), min(y2, h - 1.0)
            box = [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]
            boxes.append({"file_name": path.name, "bbox": box, "score": 1.0})
    if detections:
        _write_json(out_dir / "detections.json", boxes)
    return paths


@dataclass(frozen=True)
class SyntheticLayout:
    """Where ``generate_all`` wrote things."""

    mpii: Path
    coco: Path
    unlabeled: Path
    folders: tuple[Path, ...]


def generate_all(
    out_dir: Path, config: SyntheticConfig | None = None, *, unlabeled_folders: int = 2, per_folder: int = 16
) -> SyntheticLayout:
    """``out_dir/mpii``, ``out_dir/coco`` and ``out_dir/unlabeled/folder_<i>`` (what ``fpd data synth`` writes)."""
    config = config or SyntheticConfig()
    out_dir = Path(out_dir)
    folders = tuple(out_dir / "unlabeled" / f"folder_{i}" for i in range(unlabeled_folders))
    for folder in folders:
        generate_unlabeled_folder(folder, per_folder, seed=config.seed, size_range=config.size_range)
    return SyntheticLayout(
        mpii=generate_mpii(out_dir / "mpii", config),
        coco=generate_coco(out_dir / "coco", config),
        unlabeled=out_dir / "unlabeled",
        folders=folders,
    )
