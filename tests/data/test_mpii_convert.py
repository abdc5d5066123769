import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from pipeline.data.mpii import load_mpii
from pipeline.data.mpii_convert import convert_mpii_release

RECT_FIELDS = [("x1", "O"), ("y1", "O"), ("x2", "O"), ("y2", "O"), ("annopoints", "O"), ("scale", "O"), ("objpos", "O")]


def _points(joints: dict[int, tuple[float, float]]) -> np.ndarray:
    points = np.empty((1, len(joints)), dtype=[("x", "O"), ("y", "O"), ("id", "O"), ("is_visible", "O")])
    for k, (j, (x, y)) in enumerate(joints.items()):
        points[0, k] = (x, y, j, "1" if k % 2 else 1)  # the release mixes strings and numbers
    return points


def _rects(*rects: dict) -> np.ndarray:
    out = np.empty((1, len(rects)), dtype=RECT_FIELDS)
    for k, r in enumerate(rects):
        annopoints = {"point": _points(r["joints"])} if r.get("joints") else np.zeros((0, 0))
        out[0, k] = (r["head"][0], r["head"][1], r["head"][2], r["head"][3], annopoints, r["scale"],
                     {"x": r["objpos"][0], "y": r["objpos"][1]})  # fmt: skip
    return out


def _write_release(path: Path) -> None:
    """A tiny release with the official structure: annolist, img_train, single_person, act, version."""
    a1_joints = {0: (11.0, 150.0), 9: (25.0, 21.0)}
    person_a1 = {"head": (10, 20, 40, 60), "scale": 1.5, "objpos": (30, 90), "joints": a1_joints}
    person_a2 = {"head": (100, 20, 130, 60), "scale": 1.4, "objpos": (120, 90), "joints": {3: (110.0, 100.0)}}
    person_b = {"head": (5, 5, 25, 35), "scale": 0.9, "objpos": (15, 60), "joints": {15: (30.0, 70.0)}}
    person_c = {"head": (1, 1, 2, 2), "scale": 1.0, "objpos": (5, 5), "joints": {1: (3.0, 3.0)}}
    person_d = {"head": (1, 1, 2, 2), "scale": 1.0, "objpos": (5, 5)}  # no joints annotated
    images = [("a.jpg", _rects(person_a1, person_a2)), ("b.jpg", _rects(person_b)), ("c.jpg", _rects(person_c)),
              ("d.jpg", _rects(person_d))]  # fmt: skip
    fields = [("image", "O"), ("annorect", "O"), ("frame_sec", "O"), ("vididx", "O")]
    annolist = np.empty((1, len(images)), dtype=fields)
    for i, (name, rects) in enumerate(images):
        annolist[0, i] = ({"name": name}, rects, np.zeros((0, 0)), np.zeros((0, 0)))
    single = np.empty((len(images), 1), dtype=object)
    single[0, 0] = np.array([[1]])  # only the first person of a.jpg is a single person
    single[1, 0] = np.array([[1]])
    single[2, 0] = np.array([[1]])
    single[3, 0] = np.zeros((0, 0))
    act = np.empty((len(images), 1), dtype=[("cat_name", "O"), ("act_name", "O"), ("act_id", "O")])
    for i in range(len(images)):
        act[i, 0] = ("sports", "running", 1)
    release = {"annolist": annolist, "img_train": np.array([[1, 1, 0, 1]]), "single_person": single, "act": act,
               "version": "12"}  # fmt: skip
    scipy.io.savemat(path, {"RELEASE": release})


def test_convert_with_listed_validation_images(tmp_path: Path) -> None:
    mat = tmp_path / "release.mat"
    _write_release(mat)
    (tmp_path / "valid.txt").write_text("a.jpg\n")
    summary = convert_mpii_release(mat, tmp_path / "mpii", valid_images=tmp_path / "valid.txt")
    # valid: the single person of a.jpg; train: b.jpg (c.jpg is a test image, d.jpg has no joints, and the
    # second person of a.jpg belongs to a validation image).
    assert (summary.num_train, summary.num_valid) == (1, 1)
    valid = json.loads((tmp_path / "mpii" / "annot" / "valid.json").read_text())
    (entry,) = valid
    assert entry["image"] == "a.jpg" and entry["center"] == [30.0, 90.0] and entry["scale"] == 1.5
    assert entry["joints"][0] == [11.0, 150.0] and entry["joints"][9] == [25.0, 21.0]
    assert entry["joints"][5] == [-1.0, -1.0] and sum(entry["joints_vis"]) == 2
    train = json.loads((tmp_path / "mpii" / "annot" / "train.json").read_text())
    assert [e["image"] for e in train] == ["b.jpg"] and train[0]["joints_vis"][15] == 1
    gt = scipy.io.loadmat(tmp_path / "mpii" / "annot" / "gt_valid.mat")
    assert gt["headboxes_src"][:, :, 0].tolist() == [[10.0, 20.0], [40.0, 60.0]]
    assert gt["jnt_missing"][:, 0].sum() == 14 and gt["pos_gt_src"][9, :, 0].tolist() == [25.0, 21.0]
    (record,) = load_mpii(tmp_path / "mpii", "valid")  # the converted files read back with the loader
    assert record.joints[9].tolist() == [24.0, 20.0]
    assert record.center == pytest.approx((30.0 - 1, 90.0 + 22.5 - 1))  # HRNet: 1-based c - 1, after +15 s


def test_convert_hashed_split_is_deterministic(tmp_path: Path) -> None:
    mat = tmp_path / "release.mat"
    _write_release(mat)
    everything = convert_mpii_release(mat, tmp_path / "all", valid_fraction=1.0)
    assert (everything.num_train, everything.num_valid) == (0, 2)  # single persons of a.jpg and b.jpg
    assert "not Tompson's split" in everything.split_rule
    nothing = convert_mpii_release(mat, tmp_path / "none", valid_fraction=0.0)
    assert (nothing.num_train, nothing.num_valid) == (3, 0)
    again = convert_mpii_release(mat, tmp_path / "again", valid_fraction=0.5)
    twice = convert_mpii_release(mat, tmp_path / "twice", valid_fraction=0.5)
    assert again == twice
    assert (tmp_path / "again" / "annot" / "train.json").read_text() == (
        tmp_path / "twice" / "annot" / "train.json").read_text()  # fmt: skip


def test_convert_rejects_other_files(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "other.mat", {"pos_gt_src": np.zeros((16, 2, 1))})
    with pytest.raises(ValueError, match="not the MPII release"):
        convert_mpii_release(tmp_path / "other.mat", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="MPII release file not found"):
        convert_mpii_release(tmp_path / "missing.mat", tmp_path / "out")
