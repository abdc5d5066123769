import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.coco import image_dir, load_coco
from pipeline.geometry import box_to_center_scale

SUBSET = "annotations/person_keypoints_val2017_subset4.json"
DETECTIONS = "person_detection_results/COCO_val2017_detections_AP_H_56_person_subset4.json"


def _load_real(real_data: Path, **kwargs: object) -> list:
    root = real_data / "coco"
    return load_coco(root, "val2017", annotation_file=root / SUBSET, **kwargs)


def _write_coco(root: Path, split: str, annotations: list[dict], width: int = 100, height: int = 80) -> None:
    payload = {
        "images": [{"id": 7, "file_name": "x.jpg", "width": width, "height": height}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person"}],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(payload))


def _ann(ann_id: int, bbox: list[float], num_labelled: int = 17, **extra: object) -> dict:
    keypoints = []
    for k in range(17):
        keypoints += [10.0 + k, 20.0, 2] if k < num_labelled else [0, 0, 0]
    ann = {"id": ann_id, "image_id": 7, "category_id": 1, "bbox": bbox, "area": 100.0, "iscrowd": 0,
           "keypoints": keypoints, "num_keypoints": num_labelled}  # fmt: skip
    ann.update(extra)
    return ann


def test_real_ground_truth_follows_hrnet_rules(real_data: Path) -> None:
    records = _load_real(real_data)
    raw = json.loads((real_data / "coco" / SUBSET).read_text())
    # 14 persons, two of them without keypoints (HRNet drops those).
    assert len(raw["annotations"]) == 14 and len(records) == 12
    assert sum(int(r.visibility.sum()) for r in records) == 181
    first = records[0]
    ann = next(a for a in raw["annotations"] if a["id"] == int(first.instance_id))
    x, y, w, h = ann["bbox"]
    # Clipped as HRNet's _clean_box (x2 = x1 + w - 1 inside a 640 px image), then aspect fix and 1.25 padding.
    center, scale = box_to_center_scale(x, y, w - 1, h - 1, aspect_ratio=0.75, padding=1.25)
    assert first.center == pytest.approx(center) and first.scale == pytest.approx(scale)
    assert first.scale[0] / first.scale[1] == pytest.approx(0.75)
    keypoints = np.asarray(ann["keypoints"], dtype=np.float32).reshape(17, 3)
    np.testing.assert_array_equal(first.joints, keypoints[:, :2])
    np.testing.assert_array_equal(first.visibility, (keypoints[:, 2] > 0).astype(np.float32))
    assert first.image_id == ann["image_id"] and first.source == "coco/val2017" and first.path.is_file()
    assert all(r.path.is_file() for r in records)


def test_real_detections_become_unlabeled_records(real_data: Path) -> None:
    dets = json.loads((real_data / "coco" / DETECTIONS).read_text())
    records = _load_real(real_data, detections=real_data / "coco" / DETECTIONS)
    assert len(records) == 118 and not any(r.labelled for r in records)
    assert records[5].instance_id == "det5" and records[5].score == pytest.approx(dets[5]["score"])
    assert records[5].image_id == dets[5]["image_id"]
    strong = _load_real(real_data, detections=dets, score_threshold=0.5)
    assert 0 < len(strong) < 118
    assert len(strong) == sum(d["score"] >= 0.5 for d in dets)
    assert min(r.score for r in strong) >= 0.5


def test_clean_box_rules_and_min_keypoints(tmp_path: Path) -> None:
    anns = [
        _ann(1, [90.0, 70.0, 50.0, 40.0]),  # runs off the 100x80 image: clipped to x2 = 99, y2 = 79
        _ann(2, [10.0, 10.0, 20.0, 20.0], area=0.0),  # zero area: dropped
        _ann(3, [10.0, 10.0, 20.0, 20.0], num_labelled=0),  # no keypoints: dropped (kept with min_keypoints=0)
        _ann(4, [10.0, 10.0, 20.0, 20.0], category_id=2),  # not a person
        _ann(5, [10.0, 10.0, 20.0, 20.0], iscrowd=1),  # crowd regions are not persons to train on
    ]
    _write_coco(tmp_path, "train2017", anns)
    records = load_coco(tmp_path, "train2017", input_aspect=1.0)
    assert [r.instance_id for r in records] == ["1"]
    (clipped,) = records
    assert clipped.center == pytest.approx((94.5, 74.5))  # box (90, 70, 9, 9)
    assert clipped.scale == pytest.approx((9 / 200 * 1.25, 9 / 200 * 1.25))
    assert [r.instance_id for r in load_coco(tmp_path, "train2017", min_keypoints=0)] == ["1", "3"]


def test_image_folder_layouts(tmp_path: Path) -> None:
    (tmp_path / "val2017").mkdir()
    assert image_dir(tmp_path, "val2017") == tmp_path / "val2017"
    (tmp_path / "images" / "val2017").mkdir(parents=True)
    assert image_dir(tmp_path, "val2017") == tmp_path / "images" / "val2017"


def test_bad_annotation_files(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "person_keypoints_val2017.json"
    path.write_text(json.dumps([{"image": "a.jpg", "center": [1, 2], "scale": 1.0}]))
    with pytest.raises(ValueError, match="looks like an MPII"):
        load_coco(tmp_path, "val2017")
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match=r"missing key\(s\) annotations, categories"):
        load_coco(tmp_path, "val2017")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid json"):
        load_coco(tmp_path, "val2017")
    with pytest.raises(FileNotFoundError, match=r"person_keypoints_train2017\.json"):
        load_coco(tmp_path, "train2017")


def test_bad_detections(tmp_path: Path) -> None:
    _write_coco(tmp_path, "val2017", [_ann(1, [10.0, 10.0, 20.0, 20.0])])
    with pytest.raises(ValueError, match=r"detection 0: missing key\(s\) score"):
        load_coco(tmp_path, "val2017", detections=[{"image_id": 7, "bbox": [0, 0, 5, 5]}])
    with pytest.raises(FileNotFoundError, match=r"dets\.json"):
        load_coco(tmp_path, "val2017", detections=tmp_path / "dets.json")
    dets = [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9},
            {"image_id": 7, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.9},
            {"image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9}]  # fmt: skip
    assert [r.instance_id for r in load_coco(tmp_path, "val2017", detections=dets)] == ["det2"]
