import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from pipeline.data.figures import MPII_FROM_BODY, render_scene
from pipeline.data.mpii import ground_truth_path, load_mpii, write_mpii_gt_mat
from pipeline.data.synthetic import _mpii_person


def _write_json(root: Path, split: str, payload: object) -> None:
    (root / "annot").mkdir(parents=True, exist_ok=True)
    (root / "annot" / f"{split}.json").write_text(json.dumps(payload))


def _entry(**overrides: object) -> dict:
    entry = {"image": "a.jpg", "center": [100.0, 80.0], "scale": 1.0,
             "joints": [[10.0 + j, 20.0 + j] for j in range(16)], "joints_vis": [1] * 16}  # fmt: skip
    entry.update(overrides)
    return entry


def test_real_first_person_follows_hrnet_conventions(real_data: Path) -> None:
    records = load_mpii(real_data / "mpii", "valid_first5")
    raw = json.loads((real_data / "mpii" / "annot" / "valid_first5.json").read_text())
    assert len(records) == 5
    first = records[0]
    # 005808361.jpg: centre (966, 340), scale 4.718488 in the json; HRNet moves y by 15 s, pads s by 1.25 and
    # makes the centre 0-based like the joints.
    assert first.image == "005808361.jpg" and first.source == "mpii/valid_first5"
    assert first.center == pytest.approx((965.0, 339.0 + 15 * 4.718488))
    assert first.scale == pytest.approx((4.718488 * 1.25, 4.718488 * 1.25))
    np.testing.assert_allclose(first.joints, np.asarray(raw[0]["joints"]) - 1.0, atol=1e-4)
    assert first.joints[0].tolist() == [803.0, 710.0]  # r_ankle (804, 711) 1-based
    assert first.path.is_file()
    assert [r.instance_id for r in records] == [f"{e['image']}#0" for e in raw]


def test_real_json_agrees_with_gt_mat(real_data: Path) -> None:
    records = load_mpii(real_data / "mpii", "valid_first5")
    gt = scipy.io.loadmat(ground_truth_path(real_data / "mpii", "valid_first5"))
    missing = gt["jnt_missing"].T.astype(bool)  # (N, 16)
    np.testing.assert_array_equal(np.stack([r.visibility for r in records]) == 0, missing)
    pos = gt["pos_gt_src"].transpose(2, 0, 1) - 1.0  # 1-based -> 0-based, (N, 16, 2)
    joints = np.stack([r.joints for r in records])
    np.testing.assert_allclose(joints[~missing], pos[~missing], atol=1e-3)
    # The third and fourth persons have no ankles (joints 0 and 5), and nobody else misses anything.
    assert missing[2, [0, 5]].all() and missing[3, [0, 5]].all()
    assert int((~missing).sum()) == 76


def test_centre_is_shifted_then_made_zero_based(tmp_path: Path) -> None:
    # HRNet's _get_db: c_y += 15 s, s *= 1.25, then c -= 1 (both axes); the "no box" marker c_x == -1 skips the
    # shift and the padding but not the - 1.
    _write_json(tmp_path, "valid", [_entry(center=[100.0, 80.0], scale=2.0), _entry(center=[-1.0, -1.0], scale=2.0)])
    boxed, no_box = load_mpii(tmp_path, "valid")
    assert boxed.center == (99.0, 80.0 + 30.0 - 1.0) and boxed.scale == (2.5, 2.5)
    assert no_box.center == (-2.0, -2.0) and no_box.scale == (2.0, 2.0)


class _MidRng:
    """Stands in for the generator of ``_mpii_person``: no centre jitter, a fixed scale margin."""

    def normal(self, loc: float = 0.0, scale: float = 1.0) -> float:
        return 0.0

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        return 1.2


def test_synthetic_entries_are_one_based_and_load_on_the_figure(tmp_path: Path) -> None:
    # The synthetic generator writes MPII's frame (1-based centre and joints): after the loader's conversion the
    # box centre is the middle of the figure, in the same 0-based pixels as its joints.
    scene = render_scene(np.random.default_rng([5, 0]), (256, 256))
    people = [(e, f) for k, f in enumerate(scene.figures) if (e := _mpii_person(scene, k, f, _MidRng(), "a.jpg"))]
    assert people
    _write_json(tmp_path, "train", [entry for entry, _ in people])
    for record, (_, figure) in zip(load_mpii(tmp_path, "train"), people, strict=True):
        x1, y1, x2, y2 = figure.extent()
        assert record.center == pytest.approx(((x1 + x2) / 2, (y1 + y2) / 2), abs=0.01)
        seen = record.visibility > 0
        np.testing.assert_allclose(record.joints[seen], figure.points[list(MPII_FROM_BODY)][seen], atol=1e-3)


def test_missing_joints_marked_by_value_or_flag(tmp_path: Path) -> None:
    joints = [[10.0, 20.0]] * 16
    joints[2] = [-1.0, -1.0]
    flags = [1] * 16
    flags[7] = 0
    _write_json(tmp_path, "valid", [_entry(joints=joints, joints_vis=flags)])
    (record,) = load_mpii(tmp_path, "valid")
    assert record.visibility[2] == 0 and record.visibility[7] == 0 and record.visibility.sum() == 14


def test_test_split_without_joints_is_unlabeled_and_aspect_widens_box(tmp_path: Path) -> None:
    entries = [_entry(), _entry()]
    for e in entries:
        del e["joints"], e["joints_vis"]
    _write_json(tmp_path, "test", entries)
    records = load_mpii(tmp_path, "test", input_aspect=0.75)
    assert [r.labelled for r in records] == [False, False]
    assert records[0].scale == pytest.approx((1.25, 1.25 / 0.75))
    assert [r.instance_id for r in records] == ["a.jpg#0", "a.jpg#1"]
    assert records[0].root == tmp_path / "images"


def test_coco_file_given_as_mpii_is_named(tmp_path: Path) -> None:
    _write_json(tmp_path, "valid", {"images": [], "annotations": [], "categories": []})
    with pytest.raises(ValueError, match="looks like a COCO file"):
        load_mpii(tmp_path, "valid")


def test_missing_key_wrong_shape_escape_and_missing_file(tmp_path: Path) -> None:
    entry = _entry()
    del entry["center"]
    _write_json(tmp_path, "a", [entry])
    with pytest.raises(ValueError, match=r"entry 0 \(image 'a.jpg'\): missing key\(s\) center"):
        load_mpii(tmp_path, "a")
    _write_json(tmp_path, "b", [_entry(joints=[[1.0, 2.0]] * 14, joints_vis=[1] * 14)])
    with pytest.raises(ValueError, match="16 x"):
        load_mpii(tmp_path, "b")
    _write_json(tmp_path, "c", [_entry(image="../../etc/passwd")])
    with pytest.raises(ValueError, match="not a plain relative path"):  # refused by evaluation, skipped by sources
        load_mpii(tmp_path, "c")
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        load_mpii(tmp_path, "nope")


def test_write_gt_mat_round_trips_the_hrnet_keys(tmp_path: Path) -> None:
    joints = [[10.0 + j, 20.0] for j in range(16)]
    flags = [1] * 16
    flags[4] = 0
    person = {"joints": joints, "joints_vis": flags, "headbox": [1.0, 2.0, 30.0, 40.0]}
    write_mpii_gt_mat(tmp_path / "gt.mat", [person])
    gt = scipy.io.loadmat(tmp_path / "gt.mat")
    assert gt["pos_gt_src"].shape == (16, 2, 1) and gt["jnt_missing"][:, 0].tolist() == [0] * 4 + [1] + [0] * 11
    assert gt["pos_gt_src"][4, :, 0].tolist() == [0.0, 0.0] and gt["pos_gt_src"][3, :, 0].tolist() == [13.0, 20.0]
    assert gt["headboxes_src"][:, :, 0].tolist() == [[1.0, 2.0], [30.0, 40.0]]
    assert str(gt["dataset_joints"][0, 9][0]) == "head"
