"""Issue 11, one bad file never stops a run: each bad image, name, box or annotation is skipped and named with
its file and field, the good items beside it all stay; a file that cannot be parsed is refused in one line."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from models import get_preset
from models.joints import MPII
from pipeline.codec import HeatmapCodec
from pipeline.data.coco import load_coco, read_coco
from pipeline.data.crops import CropDataset, crop_record
from pipeline.data.folders import scan_unlabeled_root
from pipeline.data.images import load_image, read_image_size, to_tensor
from pipeline.data.mpii import load_mpii
from pipeline.data.sources import SourceSpec, load_source_report
from pipeline.geometry import crop_matrix, warp_array, warp_image
from pipeline.records import SampleRecord
from pipeline.teacher.inference import teacher_provenance
from pipeline.training.data import DistillDataset
from storage.cache import CacheMismatchError, CacheProvenance, TeacherTargetCache

NAN = float("nan")
BAD_BOXES = [[0, 0, 0, 10], [0, 0, 10, 0], [0, 0, -5, 10], [0, 0, NAN, 10], ["a", 0, 1, 1], [1, 2, 3], "box", None]


def _image(path: Path, size: tuple[int, int] = (40, 30), exif: int | None = None, fmt: str | None = None) -> Path:
    """A gradient image (so that a turn or flip changes its pixels), optionally with an EXIF orientation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    image = Image.fromarray(np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], axis=-1).astype(np.uint8))
    extra = {}
    if exif is not None:
        tags = Image.Exif()
        tags[0x0112] = exif
        extra["exif"] = tags.tobytes()
    image.save(path, format=fmt, **extra)
    return path


# 1. Names that are not UTF-8 -----------------------------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_skipped_and_named(tmp_path: Path) -> None:
    folder = tmp_path / "phone"
    _image(folder / "good.jpg")
    _image(folder / "z.png", fmt="PNG")
    data = (folder / "good.jpg").read_bytes()
    fd = os.open(os.fsencode(folder) + b"/bad\xff.jpg", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, data)
    os.close(fd)
    os.mkdir(os.fsencode(folder) + b"/dir\xfe")
    os.link(folder / "good.jpg", os.fsencode(folder) + b"/dir\xfe/inner.jpg")
    records, skipped = load_source_report(SourceSpec("folder", folder), 0.75)
    assert [r.image for r in records] == ["good.jpg", "z.png"]  # no good image lost
    reasons = dict(skipped)
    assert sorted(reasons) == ["bad\\xff.jpg", "dir\\xfe"]  # printable, with the bytes shown
    assert "not valid UTF-8" in reasons["bad\\xff.jpg"] and "not valid UTF-8" in reasons["dir\\xfe"]
    "\n".join(f"{name}: {reason}" for name, reason in skipped).encode("utf-8")  # the report can be printed
    # A source folder with such a name is left out of an unlabeled root; the others are read.
    os.mkdir(os.fsencode(tmp_path) + b"/phone/cam\xff")
    scans = scan_unlabeled_root(tmp_path, input_aspect=0.75)
    assert list(scans) == ["folder/phone"] and [r.image for r in scans["folder/phone"]] == ["good.jpg", "z.png"]


# 2. Boxes of no size, negative, NaN or not numbers; an MPII scale of 0 -------------------------------------------


@pytest.mark.parametrize(
    ("entry", "field"),
    [*[({"file_name": "b.jpg", "bbox": box}, "'bbox'") for box in BAD_BOXES],
     ({"file_name": "b.jpg", "bbox": [0, 0, 5, 5], "score": "high"}, "'score'"),
     ({"file_name": "b.jpg", "bbox": [0, 0, 5, 5], "score": NAN}, "'score'"),
     ({"file_name": 3, "bbox": [0, 0, 5, 5]}, "'file_name'"),
     ({"file_name": "../b.jpg", "bbox": [0, 0, 5, 5]}, "not a plain relative path"),
     ({"file_name": "gone.jpg", "bbox": [0, 0, 5, 5]}, "no image 'gone.jpg'"),
     ({"bbox": [0, 0, 5, 5]}, "file_name"), ([0, 0, 5, 5], "expected an object")],
)  # fmt: skip
def test_bad_box_in_a_folder_detections_file_is_skipped(tmp_path: Path, entry: object, field: str) -> None:
    _image(tmp_path / "cam" / "a.jpg")
    _image(tmp_path / "cam" / "b.jpg")
    good = {"file_name": "a.jpg", "bbox": [1, 2, 10, 20]}
    (tmp_path / "cam" / "detections.json").write_text(json.dumps([good, entry, {**good, "file_name": "b.jpg"}]))
    records, skipped = load_source_report(SourceSpec("folder", tmp_path / "cam"), 0.75)
    assert [(r.image, r.instance_id) for r in records] == [("a.jpg", "det0"), ("b.jpg", "det2")]
    assert all(min(r.scale) > 0 for r in records)
    ((name, reason),) = skipped
    assert name == "detections.json entry 1" and field in reason


def _coco(root: Path, annotations: list[object] | None = None, images: list[object] | None = None) -> Path:
    """A COCO root: images 7 and 8 (x.jpg, y.jpg) with annotations 1 and 3 on image 7, 2 on image 8."""
    kps = [v for k in range(17) for v in (10.0 + k, 20.0, 2)]
    ann = {"image_id": 7, "category_id": 1, "bbox": [10.0, 10.0, 20.0, 30.0], "area": 600.0, "iscrowd": 0,
           "keypoints": kps, "num_keypoints": 17}  # fmt: skip
    payload = {
        "images": images or [{"id": 7, "file_name": "x.jpg", "width": 100, "height": 80},
                             {"id": 8, "file_name": "y.jpg", "width": 100, "height": 80}],
        "annotations": annotations or [{**ann, "id": 1}, {**ann, "id": 2, "image_id": 8}, {**ann, "id": 3}],
        "categories": [{"id": 1, "name": "person"}],
    }  # fmt: skip
    path = root / "annotations" / "person_keypoints_val2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return path


@pytest.mark.parametrize(
    ("det", "field"),
    [*[({"image_id": 7, "bbox": box, "score": 0.9}, "'bbox'") for box in BAD_BOXES],
     ({"image_id": 7, "bbox": [0, 0, 5, 5], "score": NAN}, "'score'"),
     ({"image_id": 7, "bbox": [0, 0, 5, 5], "score": "0.9"}, "'score'"),
     ({"image_id": "7", "bbox": [0, 0, 5, 5], "score": 0.9}, "'image_id'"),
     ({"image_id": 7, "bbox": [0, 0, 5, 5]}, "score"), ("det", "expected an object")],
)  # fmt: skip
def test_bad_box_in_a_coco_detections_file_is_skipped(tmp_path: Path, det: object, field: str) -> None:
    _coco(tmp_path)
    good = {"image_id": 7, "category_id": 1, "bbox": [1, 2, 10, 20], "score": 0.8}
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([good, det, good]))
    records, skipped = load_source_report(SourceSpec("coco", tmp_path, "val2017"), 0.75, detections=dets)
    assert [r.instance_id for r in records] == ["det0", "det2"] and all(min(r.scale) > 0 for r in records)
    ((name, reason),) = skipped
    assert name == f"{dets} detection 1" and field in reason
    with pytest.raises(ValueError, match=rf"dets\.json detection 1: .*{field}"):  # evaluation refuses the file
        load_coco(tmp_path, "val2017", detections=dets)


def _mpii(root: Path, middle: Callable[[dict], object]) -> Path:
    """An MPII root with three persons of a.jpg, b.jpg, c.jpg; ``middle`` makes the second one."""
    entries = [{"image": f"{name}.jpg", "center": [100.0, 80.0], "scale": 1.0, "joints_vis": [1] * 16,
                "joints": [[10.0 + j, 20.0 + j] for j in range(16)]} for name in "abc"]  # fmt: skip
    entries[1] = middle(entries[1])
    path = root / "annot" / "valid.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries))
    return path


def _check_mpii(tmp_path: Path, middle: Callable[[dict], object], field: str) -> None:
    path = _mpii(tmp_path, middle)
    records, skipped = load_source_report(SourceSpec("mpii", tmp_path, "valid"), 1.0)
    assert [r.image for r in records] == ["a.jpg", "c.jpg"] and all(min(r.scale) > 0 for r in records)
    ((name, reason),) = skipped
    assert name.startswith(f"{path} entry 1") and field in reason
    with pytest.raises(ValueError, match=rf"valid\.json entry 1.*{field}"):  # evaluation refuses the file
        load_mpii(tmp_path, "valid")


@pytest.mark.parametrize("scale", [0, 0.0, -1.0, NAN, "1", None, [], [0.0]])
def test_mpii_scale_of_zero_or_worse_is_skipped(tmp_path: Path, scale: object) -> None:
    _check_mpii(tmp_path, lambda e: {**e, "scale": scale}, "'scale'")
    _mpii(tmp_path, lambda e: {**e, "image": "c.jpg", "scale": scale})  # the first of two persons of c.jpg
    records, _ = load_source_report(SourceSpec("mpii", tmp_path, "valid"), 1.0)
    assert [r.instance_id for r in records] == ["a.jpg#0", "c.jpg#1"]  # the other's id (cache key) stays


# 3. Malformed COCO and MPII annotations; files that cannot be parsed at all ----------------------------------------


def _without(key: str) -> Callable[[dict], dict]:
    return lambda entry: {k: v for k, v in entry.items() if k != key}


def _with(**changes: object) -> Callable[[dict], dict]:
    return lambda entry: {**entry, **changes}


@pytest.mark.parametrize(
    ("change", "field"),
    [(_without("bbox"), "'bbox'"), (_without("image_id"), "'image_id'"), (_without("keypoints"), "'keypoints'"),
     (_without("num_keypoints"), "'num_keypoints'"), (_without("id"), "'id'"), (_without("iscrowd"), "'iscrowd'"),
     (_without("area"), "'area'"), (_with(keypoints=[1.0] * 50), "'keypoints'"), (_with(bbox=[1, 1, NAN, 5]), "'bbox'"),
     (_with(bbox=[1, 1, -4, 5]), "'bbox'"), (_with(image_id=99), "'image_id'"), (_with(id=1), "'id'"),
     (_with(num_keypoints="17"), "'num_keypoints'"), (_with(bbox=[10, 10, 0.5, 0.5]), "empty once clipped"),
     (lambda ann: [ann], "expected an object")],
)  # fmt: skip
def test_malformed_coco_annotation_is_skipped(tmp_path: Path, change: Callable[[dict], object], field: str) -> None:
    path = _coco(tmp_path)
    raw = json.loads(path.read_text())
    raw["annotations"][1] = change(raw["annotations"][1])  # annotation 2, the only one of image 8
    path.write_text(json.dumps(raw))
    records, skipped = load_source_report(SourceSpec("coco", tmp_path, "val2017"), 0.75)
    assert [r.instance_id for r in records] == ["1", "3"]
    ((name, reason),) = skipped
    assert name.startswith(f"{path} annotation") and field in reason
    with pytest.raises(ValueError, match=rf"person_keypoints_val2017\.json annotation .*{field}"):
        load_coco(tmp_path, "val2017")  # evaluation: ground truth is never silently smaller


@pytest.mark.parametrize(
    ("change", "field"),
    [(_without("width"), "'width'"), (_without("height"), "'height'"), (_without("file_name"), "'file_name'"),
     (_without("id"), "'id'"), (_with(width=0), "'width'"), (_with(height="80"), "'height'"),
     (_with(file_name="../../y.jpg"), "not a plain relative path"), (_with(id=7), "'id'"),
     (_with(file_name="y\udcff.jpg"), "'file_name'")],  # a json escape that is no UTF-8 text
)  # fmt: skip
def test_malformed_coco_image_skips_its_persons(tmp_path: Path, change: Callable[[dict], dict], field: str) -> None:
    path = _coco(tmp_path)
    raw = json.loads(path.read_text())
    raw["images"][1] = change(raw["images"][1])  # image 8, whose only person is annotation 2
    path.write_text(json.dumps(raw))
    records, skipped = load_source_report(SourceSpec("coco", tmp_path, "val2017"), 0.75)
    assert [r.instance_id for r in records] == ["1", "3"]
    assert any(field in reason for _, reason in skipped) and all(name.startswith(str(path)) for name, _ in skipped)
    with pytest.raises(ValueError, match=rf"person_keypoints_val2017\.json (image|annotation) .*{field}"):
        load_coco(tmp_path, "val2017")  # evaluation refuses the file
    if field != "not a plain relative path":  # the index evaluation scores against is checked the same way
        with pytest.raises(ValueError, match=rf"person_keypoints_val2017\.json image 1\b.*{field}"):
            read_coco(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid json"), ([{"image": "a.jpg"}], "looks like an MPII"),
     ({"images": [], "categories": []}, r"missing key\(s\) annotations"),
     ({"images": [], "annotations": {"1": {}}, "categories": []}, "field 'annotations' must be a list"),
     ({"images": {}, "annotations": [], "categories": []}, "field 'images' must be a list"),
     ({"images": [], "annotations": [], "categories": [{"name": "person"}]}, "categories entry 0")],
)  # fmt: skip
def test_unparsable_coco_file_is_refused_naming_it(tmp_path: Path, content: object, message: str) -> None:
    path = _coco(tmp_path)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ValueError, match=rf"person_keypoints_val2017\.json: .*{message}"):
        load_source_report(SourceSpec("coco", tmp_path, "val2017"), 0.75)
    _coco(tmp_path)
    (tmp_path / "dets.json").write_text(json.dumps({"image_id": 7}))
    with pytest.raises(ValueError, match=r"dets\.json: expected a list"):
        load_source_report(SourceSpec("coco", tmp_path, "val2017"), 0.75, detections=tmp_path / "dets.json")


@pytest.mark.parametrize(
    ("change", "field"),
    [(_with(center="abc"), "'center'"), (_with(center=[1.0]), "'center'"), (_with(center=[1, 2, 3]), "'center'"),
     (_with(center=[NAN, 1.0]), "'center'"), (_with(center={"x": 1, "y": 2}), "'center'"),
     (_without("joints"), "joints"), (_without("joints_vis"), "joints_vis"),
     (_with(joints=[[1.0, 2.0]] * 14), "'joints'"), (_with(joints_vis=[1] * 15), "'joints_vis'"),
     (_with(joints=[[1.0, NAN]] * 16), "'joints'"), (_with(joints=[[1.0]] * 16), "'joints'"),
     (_without("image"), "image"), (_with(image="../../etc/passwd"), "not a plain relative path"),
     (_with(image=5), "'image'"), (_with(image="b\udcff.jpg"), "'image'"), (_without("scale"), "scale"),
     (lambda e: [e], "expected an object")],
)  # fmt: skip
def test_malformed_mpii_entry_is_skipped(tmp_path: Path, change: Callable[[dict], object], field: str) -> None:
    _check_mpii(tmp_path, change, field)


@pytest.mark.parametrize(
    ("content", "message"),
    [("[{", "not valid json"), ({"images": [], "annotations": []}, "looks like a COCO file"), (3, "got int")],
)
def test_unparsable_mpii_file_is_refused_naming_it(tmp_path: Path, content: object, message: str) -> None:
    path = _mpii(tmp_path, lambda e: e)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ValueError, match=rf"valid\.json: .*{message}"):
        load_source_report(SourceSpec("mpii", tmp_path, "valid"), 1.0)


# 4. EXIF orientation: folder photos upright, annotated datasets raw ------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_pillows_and_the_header_size_agrees(tmp_path: Path, orientation: int, suffix: str) -> None:
    path = _image(tmp_path / f"o{suffix}", (40, 20), exif=orientation)
    with Image.open(path) as raw:
        upright = np.asarray(ImageOps.exif_transpose(raw).convert("RGB"))
    loaded = load_image(path, exif_orientation=True)
    np.testing.assert_array_equal(np.asarray(loaded.image), upright)
    assert read_image_size(path, exif_orientation=True) == loaded.image.size == loaded.original_size
    if suffix != ".tif":  # Pillow turns a TIFF itself: its raw grid is out of reach (no dataset ships TIFFs)
        assert read_image_size(path) == load_image(path).image.size == (40, 20)  # raw unless asked
    if suffix == ".jpg":
        drafted = load_image(path, exif_orientation=True, draft_scale=0.1)  # a turned image is decoded in full
        assert drafted.original_size == loaded.original_size
        assert drafted.draft_factor == (8 if orientation == 1 else 1)


def test_phone_photo_is_upright_in_a_folder_and_raw_as_coco_or_mpii(tmp_path: Path) -> None:
    photo = _image(tmp_path / "phone" / "x.jpg", (40, 20), exif=6)  # stored 40x20, seen 20x40
    with Image.open(photo) as image:
        raw = image.convert("RGB")
        upright = ImageOps.exif_transpose(image).convert("RGB")
    (folder_record,), _ = load_source_report(SourceSpec("folder", tmp_path / "phone"), 0.5)
    assert folder_record.apply_exif_orientation and folder_record.center == (9.5, 19.5)  # the 20x40 picture
    (coco_root := tmp_path / "coco" / "val2017").mkdir(parents=True)
    os.link(photo, coco_root / "x.jpg")
    _coco(tmp_path / "coco", images=[{"id": 7, "file_name": "x.jpg", "width": 40, "height": 20},
                                     {"id": 8, "file_name": "x.jpg", "width": 40, "height": 20}])  # fmt: skip
    coco_record = load_coco(tmp_path / "coco", "val2017")[0]
    (tmp_path / "mpii" / "images").mkdir(parents=True)
    os.link(photo, tmp_path / "mpii" / "images" / "a.jpg")
    _mpii(tmp_path / "mpii", lambda e: e)
    mpii_record = load_mpii(tmp_path / "mpii", "valid")[0]
    size = (16, 32)
    for record, picture, other in ((folder_record, upright, raw), (coco_record, raw, upright),
                                   (mpii_record, raw, upright)):  # fmt: skip
        expected = warp_image(picture, crop_matrix(record.center, record.scale, 0.0, size), size)
        wrong = warp_image(other, crop_matrix(record.center, record.scale, 0.0, size), size)
        assert not np.array_equal(np.asarray(expected), np.asarray(wrong))  # the check below can tell them apart
        _, crop = crop_record(record, size)  # teacher crops, and the overlays of pipeline.render
        np.testing.assert_array_equal(np.asarray(crop), np.asarray(expected))
        np.testing.assert_array_equal(CropDataset([record], size, "RGB")[0]["image"], to_tensor(expected, "RGB"))
        training = DistillDataset([record], joint_set=MPII, input_size=size, heatmap_size=(4, 8), color_order="RGB",
                                  codec=HeatmapCodec(size, (4, 8)))  # fmt: skip
        # training crops with OpenCV (the raw JPEG decoded by OpenCV, the upright one by Pillow), on the same grid
        matrix = crop_matrix(record.center, record.scale, 0.0, size)
        np.testing.assert_array_equal(training[0]["image"], warp_array(np.asarray(picture), matrix, size))
        assert not np.array_equal(training[0]["image"], warp_array(np.asarray(other), matrix, size))


def test_exif_rule_is_in_the_cache_provenance_and_old_caches_are_refused(tmp_path: Path) -> None:
    provenance = teacher_provenance(get_preset("hrnet_w32_256x256"), "0" * 64)
    assert provenance.exif_orientation == "folders" and provenance.to_dict()["exif_orientation"] == "folders"
    cache = TeacherTargetCache(tmp_path / "cache").open_or_create(provenance)
    manifest = json.loads((cache.path / "manifest.json").read_text())
    del manifest["provenance"]["exif_orientation"]  # a cache written before the field existed
    (cache.path / "manifest.json").write_text(json.dumps(manifest))
    assert TeacherTargetCache(cache.path).provenance.exif_orientation == "none"
    with pytest.raises(CacheMismatchError, match=r"exif_orientation: 'none' != 'folders' \(.*new cache folder"):
        TeacherTargetCache(cache.path).open_or_create(provenance)
    with pytest.raises(ValueError, match="exif_orientation must be one of"):
        CacheProvenance.from_dict({**provenance.to_dict(), "exif_orientation": "sideways"})


# 5. Every image type Pillow reads; an image that fails to decode later -------------------------------------------


def test_every_pillow_image_type_in_a_folder_is_used(tmp_path: Path) -> None:
    names = ["a.tif", "b.TIFF", "c.jpe", "d.gif", "e.ppm", "f.jpg"]
    for name in names:
        _image(tmp_path / "cam" / name)
    (tmp_path / "cam" / "notes.txt").write_text("not an image")
    (tmp_path / "cam" / "g.jpe").write_bytes(b"not a jpeg")
    records, skipped = load_source_report(SourceSpec("folder", tmp_path / "cam"), 0.75)
    assert [r.image for r in records] == names and all(read_image_size(r.path) == (40, 30) for r in records)
    assert [name for name, _ in skipped] == ["g.jpe"] and "not a readable image" in skipped[0][1]


def test_training_image_that_fails_to_decode_is_logged_and_replaced(tmp_path: Path, caplog) -> None:
    for name in ("a.png", "c.png"):
        _image(tmp_path / "cam" / name, fmt="PNG")
    records, _ = load_source_report(SourceSpec("folder", tmp_path / "cam"), 1.0)
    (tmp_path / "cam" / "b.png").write_bytes(b"truncated")  # broken after the scan, before training
    broken = SampleRecord(records[0].source, records[0].root, "b.png", (1.0, 1.0), (0.1, 0.1), "b.png#0")
    dataset = DistillDataset([records[0], broken, records[1]], joint_set=MPII, input_size=(16, 16),
                             heatmap_size=(4, 4), color_order="RGB", codec=HeatmapCodec((16, 16), (4, 4)))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="pipeline.training.data"):
        item = dataset[1]
    assert item["index"] == 2 and np.array_equal(item["image"], dataset[2]["image"])
    assert "b.png" in caplog.text and "not a readable image" in caplog.text
    assert dataset[0]["index"] == 0  # the good samples are untouched
