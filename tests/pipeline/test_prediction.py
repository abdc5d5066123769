"""`fpd predict`: pictures, folders and videos -> person boxes -> poses, as evaluation computes them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from models.joints import COCO as COCO_JOINTS
from models.joints import MPII
from pipeline.cli import main
from pipeline.evaluation import evaluate_coco
from pipeline.prediction import file_boxes, list_pictures, predict_pictures, whole_picture_boxes
from pipeline.render import LEGEND_HEIGHT, POSE_PICTURE_WIDTH, SIDE_COLOURS, draw_pose, joint_sides
from pipeline.runtime import load_model
from tests.conftest import write_photos


@pytest.fixture()
def coco(real_data):
    root = real_data / "coco"
    return {
        "root": root,
        "images": root / "images" / "val2017",
        "gt": root / "annotations" / "person_keypoints_val2017_subset4.json",
        "detections": root / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person_subset4.json",
    }


def _same_poses(got: list[dict], want: list[dict]) -> bool:
    """The same poses per image up to float noise, matched one to one by nearest keypoints: the two paths batch the
    crops differently, a convolution's float32 result depends slightly on the batch shape (oneDNN picks its
    algorithm by it), and near-equal scores may then swap places in a sorted list."""
    if len(got) != len(want):
        return False
    left = list(want)
    for pose in got:
        same_image = [i for i, other in enumerate(left) if other["image_id"] == pose["image_id"]]
        if not same_image:
            return False
        nearest = min(same_image, key=lambda i: np.abs(np.subtract(left[i]["keypoints"], pose["keypoints"])).max())
        other = left.pop(nearest)
        if abs(other["score"] - pose["score"]) > 1e-6 or not np.allclose(other["keypoints"], pose["keypoints"],
                                                                           atol=1e-3):  # fmt: skip
            return False
    return True


def test_predict_on_detection_boxes_equals_the_coco_evaluation(coco, random_weights, tmp_path):
    preset, model = load_model("tiny_student_coco", random_weights("tiny_student_coco"))
    evaluate_coco(model, preset, coco["root"], "val2017", detections=coco["detections"], annotation_file=coco["gt"],
                  results_out=tmp_path / "eval.json")  # fmt: skip
    run = predict_pictures(model, preset, [coco["images"]], tmp_path / "out", file_boxes(coco["detections"]),
                           num_workers=0, render=False, progress=False)  # fmt: skip
    predicted = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    assert _same_poses(predicted, json.loads((tmp_path / "eval.json").read_text()))
    assert (run.pictures, run.persons, run.boxes) == (4, 118, "file") and run.poses == len(predicted)


def test_cli_writes_coco_results_pictures_and_skips_a_corrupt_file(coco, random_weights, tmp_path, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(coco["images"], photos)
    (photos / "000000999999.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    argv = ["predict", str(photos), "--preset", "tiny_student_coco", "--checkpoint",
            str(random_weights("tiny_student_coco")), "--out", str(out), "--boxes", str(coco["detections"]),
            "--workers", "0", "--no-progress", "--render-threshold", "0.9"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 pictures, 118 persons" in printed and "skipped photos/000000999999.jpg" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [name for name, _ in summary["failed"]] == ["photos/000000999999.jpg"]
    images = json.loads((out / "images.json").read_text())
    assert [(i["id"], i["width"], i["height"]) for i in images] == [
        (785, 640, 425), (40083, 500, 333), (196141, 640, 429), (197388, 640, 392)]  # fmt: skip
    results = COCO(str(coco["gt"])).loadRes(str(out / "keypoints.json"))  # pycocotools accepts the file
    assert len(results.getAnnIds()) == summary["poses"] > 0
    for image in images:
        picture = Image.open(out / "render" / f"photos__{image['file_name'].split('/')[1]}.png")
        factor = picture.size[0] // image["width"]  # narrow pictures are enlarged by a whole factor
        assert picture.size[0] == factor * image["width"] >= POSE_PICTURE_WIDTH
        assert picture.size[1] == factor * image["height"] + LEGEND_HEIGHT
    assert len(list((out / "render").iterdir())) == 4


def test_mpii_joints_have_no_nms_and_a_folder_boxes_file_is_keyed_by_relative_name(real_data, random_weights,
                                                                                    tmp_path):  # fmt: skip
    photos = tmp_path / "photos" / "sub"
    photos.mkdir(parents=True)
    shutil.copy(real_data / "mpii" / "images" / "004645041.jpg", photos / "a.jpg")
    boxes = [{"file_name": "sub/a.jpg", "bbox": [100, 50, 300, 400], "score": 0.9},
             {"file_name": "sub/a.jpg", "bbox": [104, 52, 300, 400], "score": 0.8}]  # fmt: skip
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    preset, model = load_model("tiny_student_mpii", random_weights("tiny_student_mpii"))
    run = predict_pictures(model, preset, [tmp_path / "photos"], tmp_path / "out", file_boxes(tmp_path / "boxes.json"),
                           num_workers=0, progress=False)  # fmt: skip
    results = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    assert run.persons == run.poses == 2  # two near-identical poses: OKS-NMS would merge them, MPII has no sigmas
    assert all(len(r["keypoints"]) == 3 * MPII.num_joints for r in results)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)


def test_detector_boxes_through_the_cli(person_detector, random_weights, tmp_path, capsys):
    write_photos(tmp_path / "photos", 2)
    argv = ["predict", str(tmp_path / "photos"), "--preset", "tiny_student_coco", "--checkpoint",
            str(random_weights("tiny_student_coco")), "--out", str(tmp_path / "out"), "--detector",
            person_detector["model"], "--detector-weights", person_detector["weights"], "--score-threshold", "0.3",
            "--workers", "0", "--no-progress", "--json"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["boxes"] == "detector" and summary["pictures"] == 2 and summary["persons"] >= 1
    assert {r["image_id"] for r in json.loads((tmp_path / "out" / "keypoints.json").read_text())} <= {1, 2}


def test_missing_detector_weights_is_one_line(random_weights, tmp_path, capsys):
    write_photos(tmp_path / "photos", 1)
    argv = ["predict", str(tmp_path / "photos"), "--preset", "tiny_student_coco", "--checkpoint",
            str(random_weights("tiny_student_coco")), "--out", str(tmp_path / "out"),
            "--detector-weights", str(tmp_path / "missing.pth")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "missing.pth" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def _write_video(av, path, frames: list[np.ndarray]) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for pixels in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())


def test_video_frames_equal_the_same_frames_as_images(real_data, random_weights, tmp_path):
    av = pytest.importorskip("av")
    image = Image.open(real_data / "coco" / "images" / "val2017" / "000000000785.jpg").convert("RGB")
    base = np.asarray(image.resize((320, 212)))
    _write_video(av, tmp_path / "clip.mp4", [np.roll(base, 8 * i, axis=1) for i in range(4)])
    preset, model = load_model("tiny_student_coco", random_weights("tiny_student_coco"))
    run = predict_pictures(model, preset, [tmp_path / "clip.mp4"], tmp_path / "video", whole_picture_boxes(),
                           num_workers=0, video_stride=2, max_frames=2, progress=False)  # fmt: skip
    images = json.loads((tmp_path / "video" / "images.json").read_text())
    assert run.pictures == 2 and [(i["id"], i["frame"], i["file_name"]) for i in images] == [
        (1, 0, "clip.mp4#000000"), (2, 2, "clip.mp4#000002")]  # fmt: skip
    # The decoded frames, saved losslessly, give the same poses as the video.
    with av.open(str(tmp_path / "clip.mp4")) as container:
        decoded = [f.to_image() for f in container.decode(video=0)]
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in (0, 2):
        decoded[i].save(frames / f"f{i}.png")
    predict_pictures(model, preset, [frames], tmp_path / "png", whole_picture_boxes(), num_workers=0, progress=False)
    video_poses = json.loads((tmp_path / "video" / "keypoints.json").read_text())
    png_poses = json.loads((tmp_path / "png" / "keypoints.json").read_text())
    np.testing.assert_allclose([p["keypoints"] for p in video_poses], [p["keypoints"] for p in png_poses], atol=1e-6)


def test_numeric_stems_are_coco_ids_else_input_order(tmp_path):
    write_photos(tmp_path / "a", 2)
    (tmp_path / "n").mkdir()
    for stem in ("000000000785", "000000000012"):
        shutil.copy(tmp_path / "a" / "p00.jpg", tmp_path / "n" / f"{stem}.jpg")
    assert [(p.name, p.image_id) for p in list_pictures([tmp_path / "n"])[0]] == [
        ("n/000000000012.jpg", 12), ("n/000000000785.jpg", 785)]  # fmt: skip
    assert [p.image_id for p in list_pictures([tmp_path / "n", tmp_path / "a"])[0]] == [1, 2, 3, 4]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_pictures([tmp_path / "nowhere"])
    with pytest.raises(ValueError, match=r"p00\.jpg"):
        list_pictures([tmp_path / "a" / "p00.jpg", tmp_path / "a" / "p00.jpg"])


def test_a_malformed_boxes_file_names_the_entry(tmp_path):
    (tmp_path / "b.json").write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, -3, 4]}]))
    with pytest.raises(ValueError, match=r"b.json entry 0 field 'bbox'"):
        file_boxes(tmp_path / "b.json")


def test_pose_drawing_colours_sides_and_rings_unsure_joints():
    assert joint_sides(MPII)[:7] == ["right", "right", "right", "left", "left", "left", "centre"]
    assert joint_sides(COCO_JOINTS)[:3] == ["centre", "left", "right"]
    canvas = Image.new("RGB", (200, 200))
    points = np.zeros((MPII.num_joints, 2))
    points[3], points[4] = (40, 100), (160, 100)  # l_hip -> l_knee: a left limb
    points[0] = (100, 30)  # r_ankle, unsure
    confidences = np.zeros(MPII.num_joints)
    confidences[[3, 4]], confidences[0] = 0.9, 0.1
    from PIL import ImageDraw

    draw_pose(ImageDraw.Draw(canvas), points, confidences, MPII, radius=5)
    assert canvas.getpixel((100, 100)) == SIDE_COLOURS["left"]  # mid-limb
    assert canvas.getpixel((100, 30)) == (0, 0, 0)  # a ring: the centre of an unsure joint is not filled
    assert canvas.getpixel((40, 100)) != (0, 0, 0)  # a sure joint is filled
