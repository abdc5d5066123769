import json
import os
from pathlib import Path

import pytest
from PIL import Image

from pipeline.data.folders import FolderScan, list_images, scan_folder, scan_unlabeled_root


def _image(path: Path, size: tuple[int, int] = (40, 30), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path, format=fmt)
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "street_2024"
    _image(root / "b.jpg", (40, 30))
    _image(root / "A.JPEG", (30, 40), "JPEG")
    _image(root / "sub" / "deep" / "c.PNG", (64, 48), "PNG")
    _image(root / "d.webp", (20, 20), "WEBP")
    _image(root / "e.BmP", (20, 20), "BMP")
    (root / "notes.txt").write_text("not an image")
    return root


def test_scan_lists_images_recursively_sorted(folder: Path) -> None:
    scan = scan_folder(folder, input_aspect=0.75)
    assert isinstance(scan, FolderScan) and scan.source == "folder/street_2024" and scan.failures == []
    assert [r.image for r in scan] == ["A.JPEG", "b.jpg", "d.webp", "e.BmP", "sub/deep/c.PNG"]
    assert len(scan) == 5 and scan[1].path == folder / "b.jpg"
    assert all(not r.labelled and r.root == folder for r in scan)
    assert scan[1].instance_id == "b.jpg#0"


def test_whole_image_person_box(folder: Path) -> None:
    scan = scan_folder(folder, input_aspect=0.75)
    landscape = scan[1]  # 40x30: the height is grown to 40 / 0.75
    assert landscape.center == pytest.approx((19.5, 14.5))
    assert landscape.scale == pytest.approx((40 / 200, 40 / 0.75 / 200))
    portrait = scan[0]  # 30x40 is already 0.75
    assert portrait.scale == pytest.approx((30 / 200, 40 / 200))


def test_detections_file_gives_boxes(folder: Path) -> None:
    dets = [{"file_name": "b.jpg", "bbox": [0, 0, 15, 20], "score": 0.8},
            {"file_name": "sub/deep/c.PNG", "bbox": [10, 10, 30, 40]},
            {"file_name": "b.jpg", "bbox": [5, 5, 15, 20], "score": 0.6}]  # fmt: skip
    (folder / "detections.json").write_text(json.dumps(dets))
    scan = scan_folder(folder, input_aspect=0.75)
    assert [(r.image, r.instance_id, r.score) for r in scan] == [
        ("b.jpg", "det0", 0.8), ("b.jpg", "det2", 0.6), ("sub/deep/c.PNG", "det1", 1.0)
    ]  # fmt: skip
    assert scan[0].center == pytest.approx((7.5, 10.0))
    assert scan[0].scale == pytest.approx((15 / 200 * 1.25, 20 / 200 * 1.25))
    (folder / "detections.json").write_text(json.dumps([{"bbox": [0, 0, 1, 1]}]))
    scan = scan_folder(folder, input_aspect=0.75)  # a bad entry is skipped and named, not raised
    assert len(scan) == 0 and scan.failures == [("detections.json entry 0", "missing key(s) file_name")]
    (folder / "detections.json").write_text(json.dumps({"b.jpg": [0, 0, 1, 1]}))
    with pytest.raises(ValueError, match=r"detections\.json: expected a list"):  # the whole file is refused
        scan_folder(folder, input_aspect=0.75)


def test_unreadable_image_is_a_failure_not_an_error(folder: Path) -> None:
    (folder / "broken.jpg").write_bytes(b"definitely not a jpeg")
    scan = scan_folder(folder, input_aspect=0.75)
    assert len(scan) == 5
    assert [name for name, _ in scan.failures] == ["broken.jpg"]
    assert "not a readable image" in scan.failures[0][1]


def test_symlinks_escaping_the_folder_are_skipped(folder: Path, tmp_path: Path) -> None:
    outside = _image(tmp_path / "private" / "secret.jpg")
    os.symlink(outside, folder / "leak.jpg")
    os.symlink(outside.parent, folder / "leakdir")
    os.symlink(folder / "b.jpg", folder / "alias.jpg")  # inside: followed
    os.symlink(folder, folder / "sub" / "loop")  # a loop back to the top: not walked twice
    names, escaped = list_images(folder)
    assert "alias.jpg" in names and "leak.jpg" not in names
    assert not any(n.startswith("leakdir") or n.startswith("sub/loop") for n in names)
    assert sorted(n for n, _ in escaped) == ["leak.jpg", "leakdir"]
    assert all("outside" in reason for _, reason in escaped)
    scan = scan_folder(folder, input_aspect=1.0)
    assert sorted(n for n, _ in scan.failures) == ["leak.jpg", "leakdir"]


def test_unlabeled_root_has_one_source_per_subfolder(tmp_path: Path) -> None:
    root = tmp_path / "unlabeled"
    _image(root / "cam1" / "x.jpg")
    _image(root / "cam2" / "y.png", fmt="PNG")
    _image(root / "loose.jpg")
    (root / "cam2" / "bad.png").write_bytes(b"\x89PNG broken")
    scans = scan_unlabeled_root(root, input_aspect=0.75)
    assert list(scans) == ["folder/cam1", "folder/cam2", "folder/unlabeled"]
    assert [r.image for r in scans["folder/unlabeled"]] == ["loose.jpg"]  # the sub-folders are not repeated
    assert [n for n, _ in scans["folder/cam2"].failures] == ["bad.png"]
    _image(root / "cam3" / "z.jpg")  # dropped in later: a new source on the next scan
    assert "folder/cam3" in scan_unlabeled_root(root, input_aspect=0.75)
    with pytest.raises(FileNotFoundError, match="unlabeled root not found"):
        scan_unlabeled_root(tmp_path / "none", input_aspect=0.75)
