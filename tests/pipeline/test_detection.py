"""The detection stage with a real torchvision detector (random weights, loaded through the real loading code):
boxes and provenance in the store, incremental runs, kill -9, identities, a user's own file, missing weights."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from models.detectors import PERSON_LABEL
from pipeline.cli import main as fpd
from pipeline.data.folders import DETECTIONS_FILE, scan_folder, unlabeled_folders
from pipeline.detection.run import DetectionRun, detect_folders, select_persons
from pipeline.detection.settings import DetectorSettings
from pipeline.geometry import box_to_center_scale
from storage.detections import DetectionStore
from storage.hashing import sha256_file
from tests.conftest import DETECTOR_MODEL as MODEL
from tests.conftest import write_photos

CPU = torch.device("cpu")


@pytest.fixture
def weights(person_detector: dict[str, object]) -> Path:
    return Path(str(person_detector["weights"]))


@pytest.fixture
def settings(person_detector: dict[str, object]) -> DetectorSettings:
    return DetectorSettings(**person_detector)


def _detect(root: Path, store: Path, settings: DetectorSettings, **options: object) -> DetectionRun:
    torch.set_num_threads(1)
    return detect_folders(unlabeled_folders(root), store, settings, device=CPU, batch_size=2, num_workers=0,
                          progress=False, **options)  # fmt: skip


def _detected(run: DetectionRun, folder: str = "a") -> int:
    return next(f.detected for f in run.folders if Path(f.folder).name == folder)


def _boxes(store: Path, folder: Path) -> dict[str, tuple]:
    held = DetectionStore.current(store, folder).images()
    return {name: entries[-1].persons for name, entries in held.items()}


def test_select_persons_keeps_confident_large_persons_best_first() -> None:
    output = {
        "boxes": torch.tensor([[0, 0, 50, 100], [10, 10, 20, 20], [0, 0, 60, 90], [5, 5, 70, 95], [1, 1, 90, 90]]),
        "labels": torch.tensor([PERSON_LABEL, PERSON_LABEL, PERSON_LABEL, 3, PERSON_LABEL]),
        "scores": torch.tensor([0.8, 0.99, 0.95, 0.99, 0.5]),
    }
    persons = select_persons(output, score_threshold=0.6, min_box_size=32, max_persons=5)
    # the 10x10 box is too small, the car is no person, 0.5 is below the threshold; best score first
    assert persons == (((0.0, 0.0, 60.0, 90.0), pytest.approx(0.95)), ((0.0, 0.0, 50.0, 100.0), pytest.approx(0.8)))
    assert len(select_persons(output, score_threshold=0.6, min_box_size=32, max_persons=1)) == 1


def test_boxes_are_stored_in_the_documented_format_with_the_detector(tmp_path: Path, settings: DetectorSettings,
                                                                     weights: Path) -> None:  # fmt: skip
    names = write_photos(tmp_path / "root" / "street", 3)
    run = _detect(tmp_path / "root", tmp_path / "store", settings)
    street = next(f for f in run.folders if f.folder.endswith("street"))
    assert (street.images, street.detected, street.reused) == (3, 3, 0)
    assert street.persons > 0 and street.with_persons + street.without_persons == 3
    store = DetectionStore.current(tmp_path / "store", tmp_path / "root" / "street")
    header = json.loads((store.path / "detector.json").read_text())["detector"]
    assert header["model"] == MODEL and header["weights_sha256"] == sha256_file(weights)
    assert (header["score_threshold"], header["min_box_size"], header["max_persons"]) == (0.3, 8.0, 3)
    assert (header["nms_threshold"], header["min_size"], header["max_size"]) == (0.5, 96, 128)
    assert header["precision"] == "fp32"
    part = json.loads(store.parts()[0].read_text())
    assert [i["file_name"] for i in part["images"]] == names
    det = part["detections"][0]
    assert set(det) == {"file_name", "category_id", "bbox", "score"} and det["category_id"] == 1
    assert det["score"] >= 0.3 and (det["bbox"][2] * det["bbox"][3]) ** 0.5 >= 8.0
    # The folder loader reads them as detector boxes: padded by 1.25 like HRNet's, one record per person.
    scan = scan_folder(tmp_path / "root" / "street", input_aspect=0.75, detection_store=tmp_path / "store")
    assert len(scan.records) == street.persons and not scan.failures
    first = next(r for r in scan.records if r.image == det["file_name"])
    center, scale = box_to_center_scale(*det["bbox"], aspect_ratio=0.75)
    assert first.center == pytest.approx(center) and first.scale == pytest.approx(scale)
    assert first.score == pytest.approx(det["score"]) and first.instance_id == f"{det['file_name']}#det0"


def test_a_second_run_detects_only_the_new_folder_and_edited_images(tmp_path: Path, settings: DetectorSettings) -> None:
    write_photos(tmp_path / "root" / "a", 3)
    _detect(tmp_path / "root", tmp_path / "store", settings)
    write_photos(tmp_path / "root" / "b", 2, seed=1)
    counts = {Path(f.folder).name: (f.detected, f.reused) for f in _detect(tmp_path / "root", tmp_path / "store",
                                                                            settings).folders}  # fmt: skip
    assert counts == {"a": (0, 3), "b": (2, 0)}  # the root holds no loose images: no folder of its own
    Image.new("RGB", (128, 96), (200, 10, 10)).save(tmp_path / "root" / "a" / "p01.jpg")  # edited
    again = {Path(f.folder).name: f.detected for f in _detect(tmp_path / "root", tmp_path / "store", settings).folders}
    assert again == {"a": 1, "b": 0}


def test_a_changed_threshold_or_model_detects_again_and_switching_back_is_free(
    tmp_path: Path, settings: DetectorSettings
) -> None:
    write_photos(tmp_path / "root" / "a", 2)
    _detect(tmp_path / "root", tmp_path / "store", settings)
    stricter = replace(settings, score_threshold=0.5)
    assert _detected(_detect(tmp_path / "root", tmp_path / "store", stricter)) == 2
    assert DetectionStore.current(tmp_path / "store", tmp_path / "root" / "a").detector["score_threshold"] == 0.5
    wider = replace(settings, min_size=112, max_size=144)  # another input size is another detector
    assert _detected(_detect(tmp_path / "root", tmp_path / "store", wider)) == 2
    # The 800-px MobileNet model has the 320-px one's parameters: the same file, another model, detects again.
    other_model = replace(settings, model="fasterrcnn_mobilenet_v3_large_fpn")
    assert _detected(_detect(tmp_path / "root", tmp_path / "store", other_model)) == 2
    assert _detected(_detect(tmp_path / "root", tmp_path / "store", settings)) == 0


def test_shards_together_equal_one_run(tmp_path: Path, settings: DetectorSettings) -> None:
    write_photos(tmp_path / "root" / "a", 5)
    _detect(tmp_path / "root", tmp_path / "one", settings)
    parts = [_detect(tmp_path / "root", tmp_path / "two", settings, shard_index=i, num_shards=2) for i in range(2)]
    assert sum(p.folders[0].detected for p in parts) == 5 and 0 < parts[0].folders[0].detected < 5
    assert parts[1].folders[0].undetected == 0  # the last shard's counts cover the whole folder
    assert _boxes(tmp_path / "two", tmp_path / "root" / "a") == _boxes(tmp_path / "one", tmp_path / "root" / "a")


def test_kill_9_then_rerun_equals_an_uninterrupted_run(tmp_path: Path, settings: DetectorSettings) -> None:
    write_photos(tmp_path / "root" / "a", 5)
    _detect(tmp_path / "root", tmp_path / "clean", settings)
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import torch
        import storage.detections as store
        from pipeline.data.folders import unlabeled_folders
        from pipeline.detection.run import detect_folders
        from pipeline.detection.settings import DetectorSettings
        real_commit = store.DetectionWriter._commit
        def commit_then_die(self, images):
            real_commit(self, images)
            os.kill(os.getpid(), signal.SIGKILL)  # after the first part, with more images in flight
        store.DetectionWriter._commit = commit_then_die
        real_writer = store.DetectionStore.writer
        store.DetectionStore.writer = lambda self, **kw: real_writer(self, **{{**kw, "part_size": 2}})
        torch.set_num_threads(1)
        settings = DetectorSettings(**{settings.__dict__!r})
        detect_folders(unlabeled_folders(Path({str(tmp_path / "root")!r})), Path({str(tmp_path / "killed")!r}),
                       settings, device=torch.device("cpu"), batch_size=2, num_workers=0, progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], check=False)
    assert proc.returncode == -9
    assert len(DetectionStore.current(tmp_path / "killed", tmp_path / "root" / "a").images()) == 2
    rerun = _detect(tmp_path / "root", tmp_path / "killed", settings)
    assert (rerun.folders[0].detected, rerun.folders[0].reused) == (3, 2)
    assert _boxes(tmp_path / "killed", tmp_path / "root" / "a") == _boxes(tmp_path / "clean", tmp_path / "root" / "a")


def test_a_users_detections_json_is_used_as_is_and_never_touched(tmp_path: Path, settings: DetectorSettings) -> None:
    folder = tmp_path / "root" / "mine"
    write_photos(folder, 2)
    own = [{"file_name": "p00.jpg", "bbox": [10, 10, 40, 60], "score": 0.9}]
    (folder / DETECTIONS_FILE).write_text(json.dumps(own))
    before = (folder / DETECTIONS_FILE).stat()
    missing = replace(settings, weights=str(tmp_path / "absent.pth"))  # no detector is needed, so none is loaded
    run = _detect(tmp_path / "root", tmp_path / "store", missing)
    assert [f.own_file for f in run.folders if f.folder.endswith("mine")] == [True]
    after = (folder / DETECTIONS_FILE).stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    assert sorted(p.name for p in folder.iterdir()) == [DETECTIONS_FILE, "p00.jpg", "p01.jpg"]
    assert not (tmp_path / "store").exists()
    scan = scan_folder(folder, input_aspect=0.75, detection_store=tmp_path / "store")
    assert [(r.image, r.instance_id) for r in scan.records] == [("p00.jpg", "det0")]


def test_folders_not_yet_detected_give_no_whole_image_records(tmp_path: Path, settings: DetectorSettings) -> None:
    write_photos(tmp_path / "a", 2)
    scan = scan_folder(tmp_path / "a", input_aspect=0.75, detection_store=tmp_path / "store")
    assert scan.records == [] and [reason.split(":")[0] for _, reason in scan.failures] == ["not detected yet"] * 2
    whole = scan_folder(tmp_path / "a", input_aspect=0.75)  # the explicit whole-image choice
    assert [r.instance_id for r in whole.records] == ["p00.jpg#0", "p01.jpg#0"]


def test_fpd_detect_then_infer_uses_the_boxes(tmp_path: Path, settings: DetectorSettings, weights: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from models.presets import create_from_preset, get_preset
    from storage.cache import TeacherTargetCache
    from storage.checkpoints import save_weights

    write_photos(tmp_path / "photos", 2)
    common = ["--store", str(tmp_path / "store"), "--model", MODEL, "--weights", str(weights), "--score-threshold",
              "0.3", "--min-box-size", "8", "--max-persons", "3", "--min-size", "96", "--max-size", "128",
              "--workers", "0", "--no-progress"]  # fmt: skip
    assert fpd(["detect", "--folder", str(tmp_path / "photos"), *common]) == 0
    out = capsys.readouterr().out
    assert "2 images (2 detected, 0 already)" in out and "fpd infer --folder" in out
    torch.manual_seed(0)
    teacher = save_weights(create_from_preset(get_preset("tiny_teacher_coco")), tmp_path / "teacher.pth")
    assert fpd(["infer", "--teacher", "tiny_teacher_coco", "--checkpoint", str(teacher), "--cache",
                str(tmp_path / "cache"), "--folder", str(tmp_path / "photos"), "--detection-store",
                str(tmp_path / "store"), "--workers", "0", "--no-progress"]) == 0  # fmt: skip
    scan = scan_folder(tmp_path / "photos", input_aspect=0.75, detection_store=tmp_path / "store")
    cache = TeacherTargetCache(tmp_path / "cache")
    assert cache.inspect().num_samples == len(scan.records) > 2  # persons, not the two whole images


def test_missing_weights_give_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    write_photos(tmp_path / "photos", 1)
    missing = tmp_path / "nowhere" / "detector.pth"
    assert fpd(["detect", "--folder", str(tmp_path / "photos"), "--store", str(tmp_path / "store"), "--model",
                MODEL, "--weights", str(missing), "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    assert fpd(["detect", "--folder", str(tmp_path / "photos"), "--store", str(tmp_path / "store"), "--model",
                MODEL, "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in err and "https://download.pytorch.org" in err
    assert not (tmp_path / "store").exists()  # the weights are looked for before anything is written


def _no_network(*args: object, **kwargs: object) -> None:
    import urllib.error

    raise urllib.error.URLError("[Errno -2] Name or service not known")
