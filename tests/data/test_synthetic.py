import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from pycocotools.coco import COCO as CocoApi
from pycocotools.cocoeval import COCOeval

from models.joints import MPII
from pipeline.data.coco import load_coco
from pipeline.data.figures import BODY_POINTS, render_scene
from pipeline.data.mpii import load_mpii
from pipeline.data.synthetic import SyntheticConfig, generate_all, generate_dataset, generate_unlabeled_folder

CONFIG = SyntheticConfig(num_train=6, num_val=8, seed=3)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_all(out, CONFIG, unlabeled_folders=2, per_folder=3)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_determinism(synth: Path, tmp_path: Path) -> None:
    assert (synth / "mpii" / "annot" / "gt_valid.mat").is_file()
    assert len(list((synth / "coco" / "images" / "val2017").glob("*.jpg"))) == 8
    assert sorted(p.name for p in (synth / "unlabeled").iterdir()) == ["folder_0", "folder_1"]
    again = tmp_path / "again"
    generate_all(again, CONFIG, unlabeled_folders=2, per_folder=3)
    assert _files(again) == _files(synth)
    # Asking for more images keeps the first ones; another seed gives other images.
    generate_dataset(tmp_path / "more", "coco", SyntheticConfig(num_train=7, num_val=8, seed=3))
    first = "images/train2017/000000000001.jpg"
    assert (tmp_path / "more" / first).read_bytes() == (synth / "coco" / first).read_bytes()
    generate_dataset(tmp_path / "other", "coco", SyntheticConfig(num_train=1, num_val=0, seed=4))
    assert (tmp_path / "other" / first).read_bytes() != (synth / "coco" / first).read_bytes()
    with pytest.raises(ValueError, match="unknown synthetic format"):
        generate_dataset(tmp_path / "x", "lsp")


def test_mpii_files_load_and_agree(synth: Path) -> None:
    train = load_mpii(synth / "mpii", "train")
    valid = load_mpii(synth / "mpii", "valid")
    assert len(train) >= 6 and len(valid) >= 8
    gt = scipy.io.loadmat(synth / "mpii" / "annot" / "gt_valid.mat")
    assert [str(n[0]) for n in gt["dataset_joints"][0]][:3] == ["rank", "rkne", "rhip"]
    missing = gt["jnt_missing"].T.astype(bool)
    np.testing.assert_array_equal(missing, np.stack([r.visibility for r in valid]) == 0)
    pos = gt["pos_gt_src"].transpose(2, 0, 1)
    joints = np.stack([r.joints for r in valid])
    np.testing.assert_allclose(pos[~missing] - 1.0, joints[~missing], atol=1e-3)
    for record in train + valid:
        with Image.open(record.path) as image:
            width, height = image.size
        assert 192 <= width <= 320 and 192 <= height <= 320
        seen = record.joints[record.visibility > 0]
        assert (seen >= 0).all() and (seen[:, 0] <= width - 1).all() and (seen[:, 1] <= height - 1).all()
        # After HRNet's centre / scale convention the square crop holds every labelled joint.
        half = record.scale[0] * 100.0
        assert (np.abs(seen - np.asarray(record.center)) <= half).all()


def test_mpii_head_boxes_are_plausible(synth: Path) -> None:
    gt = scipy.io.loadmat(synth / "mpii" / "annot" / "gt_valid.mat")
    heads = gt["headboxes_src"].transpose(2, 0, 1)  # (N, 2 corners, xy)
    pos = gt["pos_gt_src"].transpose(2, 0, 1)
    head_size = 0.6 * np.linalg.norm(heads[:, 1] - heads[:, 0], axis=1)
    top, neck = MPII.names.index("head_top"), MPII.names.index("upper_neck")
    length = np.linalg.norm(pos[:, top] - pos[:, neck], axis=1)
    # MPII's real boxes: 0.6 * diagonal is about 0.75 of the neck-to-head-top distance.
    assert np.all((head_size / length > 0.6) & (head_size / length < 1.0))
    for corner in (pos[:, top], pos[:, neck]):
        assert np.all((corner >= heads[:, 0] - 1.0) & (corner <= heads[:, 1] + 1.0))


def test_coco_files_are_valid_keypoint_annotations(synth: Path) -> None:
    path = synth / "coco" / "annotations" / "person_keypoints_val2017.json"
    payload = json.loads(path.read_text())
    anns = payload["annotations"]
    assert payload["categories"][0]["keypoints"][0] == "nose" and len(payload["categories"][0]["skeleton"]) == 19
    vis = np.concatenate([np.asarray(a["keypoints"]).reshape(17, 3)[:, 2] for a in anns])
    assert {1, 2} <= set(vis.tolist())  # occluded and visible keypoints both occur
    for ann in anns:
        kp = np.asarray(ann["keypoints"], dtype=float).reshape(17, 3)
        x, y, w, h = ann["bbox"]
        assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum()) and ann["segmentation"] == []
        assert 0 < ann["area"] <= (w + 1) * (h + 1) and ann["iscrowd"] == 0
        labelled = kp[kp[:, 2] > 0, :2]
        assert ((labelled >= [x - 1, y - 1]) & (labelled <= [x + w + 1, y + h + 1])).all()
    assert len(load_coco(synth / "coco", "val2017")) == len(anns)
    # The ground truth scored against itself is perfect under pycocotools' keypoint evaluation.
    with contextlib.redirect_stdout(io.StringIO()):
        gt = CocoApi(str(path))
        results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
                   for a in anns]  # fmt: skip
        evaluator = COCOeval(gt, gt.loadRes(results), "keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_figures_face_the_camera_and_vary() -> None:
    scenes = [render_scene(np.random.default_rng([9, i]), (256, 256)) for i in range(20)]
    figures = [f for s in scenes for f in s.figures]
    r_hip, l_hip = BODY_POINTS.index("r_hip"), BODY_POINTS.index("l_hip")
    upright = [f for f in figures if abs(f.points[r_hip, 1] - f.points[l_hip, 1]) < 0.3 * abs(
        f.points[r_hip, 0] - f.points[l_hip, 0])]  # fmt: skip
    # Facing the camera: the person's right hip is on the image's left (what makes flips learnable).
    assert upright and all(f.points[r_hip, 0] < f.points[l_hip, 0] for f in upright)
    assert {len(s.figures) for s in scenes} == {1, 2, 3}
    heights = [f.height for f in figures]
    assert max(heights) > 1.5 * min(heights)


def test_unlabeled_folder(tmp_path: Path) -> None:
    paths = generate_unlabeled_folder(tmp_path / "cam", 3, seed=1)
    assert [p.name for p in paths] == ["img_00000.jpg", "img_00001.jpg", "img_00002.jpg"]
    assert all(Image.open(p).format == "JPEG" for p in paths)


def test_unlabeled_folder_with_detections_gives_one_record_per_person_box(tmp_path: Path) -> None:
    from pipeline.data.folders import scan_folder

    easy = SyntheticConfig(max_people=1, occluder_prob=0.0, size_range=(128, 160))
    folder = tmp_path / "street"
    paths = generate_unlabeled_folder(folder, 4, seed=1, config=easy, detections=True)
    boxes = json.loads((folder / "detections.json").read_text())
    assert {b["file_name"] for b in boxes} <= {p.name for p in paths} and len(boxes) >= 3
    for box in boxes:
        with Image.open(folder / box["file_name"]) as image:
            width, height = image.size
        x, y, w, h = box["bbox"]
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height and w > 0 and h > 0
    records = scan_folder(folder, input_aspect=1.0).records
    assert len(records) == len(boxes)  # the boxes, not the whole images, define the persons
    assert all(r.scale[0] * 200 < max(Image.open(r.path).size) for r in records)
