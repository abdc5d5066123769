"""Ground-truth and prediction files: the real MPII/COCO files load, round trips hold, bad files say why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from pipeline.data.mpii import load_mpii, load_mpii_gt
from storage.annotations import (
    load_coco_results,
    load_mpii_predictions,
    read_gt_mat,
    save_coco_results,
    save_mpii_predictions,
)


def test_first5_ground_truth_agrees_with_the_json(real_data):
    gt = load_mpii_gt(real_data / "mpii" / "annot" / "gt_valid_first5.mat")
    assert len(gt) == 5 and gt.joints.shape == (5, 16, 2)
    assert gt.missing.sum() == 4  # the third and fourth persons have no ankles
    assert gt.missing[2, [0, 5]].all() and gt.missing[3, [0, 5]].all()
    records = load_mpii(real_data / "mpii", "valid_first5")
    for record, joints, missing in zip(records, gt.joints, gt.missing, strict=True):
        # both 0-based: the json's 1-based joints minus 1 == pos_gt_src minus 1
        np.testing.assert_allclose(record.joints[~missing], joints[~missing], atol=1e-4)


@pytest.mark.parametrize("suffix", [".npy", ".json", ".mat"])
def test_mpii_predictions_round_trip(tmp_path, suffix):
    preds = np.random.default_rng(0).uniform(0, 1000, (7, 16, 2))
    path = save_mpii_predictions(tmp_path / f"pred{suffix}", preds)
    np.testing.assert_allclose(load_mpii_predictions(path, num_persons=7, num_joints=16), preds, atol=1e-9)


def test_mat_predictions_are_one_based(tmp_path, real_data):
    full = real_data / "mpii" / "annot" / "detections_our_format.mat"
    preds = load_mpii_predictions(full, num_joints=16)
    raw = scipy.io.loadmat(full)["pos_pred_src"]
    np.testing.assert_array_equal(preds[10], raw[:, :, 10] - 1)
    # HRNet's pred.mat layout: key 'preds', (N, 16, 2), 1-based.
    scipy.io.savemat(tmp_path / "pred.mat", {"preds": preds[:3] + 1})
    np.testing.assert_allclose(load_mpii_predictions(tmp_path / "pred.mat", num_joints=16), preds[:3])
    assert scipy.io.loadmat(save_mpii_predictions(tmp_path / "ours.mat", preds[:3]))["preds"][0, 0, 0] == raw[0, 0, 0]


def write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif path.suffix == ".npy":
        np.save(path, content)
    elif path.suffix == ".mat":
        scipy.io.savemat(path, content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.npy", np.zeros((5, 14, 2)), r"shape \(5, 14, 2\), expected Nx16x2"),
        ("p.npy", np.zeros((4, 16, 2)), "4 persons predicted, the ground truth has 5"),
        ("p.json", [[[0, 0]] * 16] * 2 + [[[0, 0]] * 15], "expected a list of persons"),
        ("p.json", "{not json", "not valid json"),
        ("p.mat", {"other": np.zeros(3)}, "no key 'pos_pred_src'"),
        ("p.mat", {"pos_pred_src": np.zeros((16, 3, 5))}, r"pos_pred_src has shape \(16, 3, 5\)"),
        ("p.txt", "1 2", "unknown predictions format '.txt'"),
        ("p.npy", np.full((5, 16, 2), np.nan), "NaN"),
        ("p.npy", b"", "not a plain numeric .npy array"),  # an empty (cut) file
    ],
)
def test_bad_mpii_predictions_name_file_and_problem(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(ValueError, match=message) as info:
        load_mpii_predictions(path, num_persons=5, num_joints=16)
    assert str(path) in str(info.value)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MPII predictions file not found: .*nope\.npy"):
        load_mpii_predictions(tmp_path / "nope.npy", num_joints=16)
    with pytest.raises(FileNotFoundError, match="ground-truth"):
        load_mpii_gt(tmp_path / "gt.mat")


def test_bad_ground_truth_mat(tmp_path, real_data):
    good = scipy.io.loadmat(real_data / "mpii" / "annot" / "gt_valid_first5.mat")
    no_heads = {k: v for k, v in good.items() if not k.startswith("__") and k != "headboxes_src"}
    with pytest.raises(ValueError, match=r"missing key.*headboxes_src"):
        load_mpii_gt(write(tmp_path / "a.mat", no_heads))
    short = dict(no_heads, headboxes_src=np.zeros((2, 2, 4)))
    with pytest.raises(ValueError, match=r"headboxes_src \(2, 2, N\)"):
        load_mpii_gt(write(tmp_path / "b.mat", short))
    (tmp_path / "c.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(ValueError, match="not a readable MATLAB"):
        load_mpii_gt(tmp_path / "c.mat")


def test_malformed_ground_truth_mat_names_file_and_field(tmp_path, real_data):
    good = {k: v for k, v in scipy.io.loadmat(real_data / "mpii" / "annot" / "gt_valid_first5.mat").items()
            if not k.startswith("__")}  # fmt: skip
    names = good["dataset_joints"].copy()
    names[0, 3] = np.array([])
    heads = good["headboxes_src"].copy()
    heads[0, 0, 2] = np.nan
    pos = good["pos_gt_src"].copy()
    pos[9, 0, 1] = np.inf  # a labelled head top
    cases = [
        (dict(good, dataset_joints=names), "dataset_joints has an empty cell"),
        (dict(good, headboxes_src=heads), "headboxes_src holds NaN"),
        (dict(good, pos_gt_src=pos), "pos_gt_src of a labelled joint"),
        (dict(good, jnt_missing=np.full(good["jnt_missing"].shape, "x")), "jnt_missing is not numeric"),
    ]
    for i, (content, message) in enumerate(cases):
        path = write(tmp_path / f"{i}.mat", content)
        with pytest.raises(ValueError, match=rf"{i}\.mat: {message}"):  # evaluation: never a silent NaN metric
            read_gt_mat(path)


def test_gt_mat_arrays_and_the_mpii_joint_order_check(tmp_path, real_data):
    path = real_data / "mpii" / "annot" / "gt_valid_first5.mat"
    mat = read_gt_mat(path)
    assert len(mat.joint_names) == 16 and mat.joint_names[0] == "rank" and mat.joints.shape == (5, 16, 2)
    np.testing.assert_array_equal(mat.joints, load_mpii_gt(path).joints)
    raw = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    names = raw["dataset_joints"].copy()
    names[0, 0], names[0, 1] = names[0, 1].copy(), names[0, 0].copy()  # swap rank and rkne
    swapped = write(tmp_path / "swapped.mat", dict(raw, dataset_joints=names))
    assert read_gt_mat(swapped).joint_names[:2] == ("rkne", "rank")  # storage reads any order
    with pytest.raises(ValueError, match="expected MPII's order"):
        load_mpii_gt(swapped)


def test_coco_results_round_trip_and_checks(tmp_path, real_data):
    results = real_data / "coco" / "keypoint_results" / "keypoints_val2017_results_subset4.json"
    shipped = load_coco_results(results, num_joints=17)
    assert len(shipped) == 73
    path = save_coco_results(tmp_path / "out" / "results.json", shipped[:2])
    assert load_coco_results(path, num_joints=17) == shipped[:2]
    entry = {"image_id": 1, "category_id": 1, "keypoints": [0.0] * 51, "score": 0.5}
    bad = [
        ({"a": 1}, "expected a json list"),
        ([dict(entry, keypoints=[0.0] * 34)], "entry 0: keypoints must be 51 numbers"),
        ([entry, {k: v for k, v in entry.items() if k != "score"}], r"entry 1: missing key.*score"),
        ([dict(entry, score=float("nan"))], "finite numbers"),
        ([dict(entry, keypoints=["x"] * 51)], "finite numbers"),
        ([dict(entry, image_id="1")], "entry 0: image_id must be an integer"),
    ]
    for content, message in bad:
        with pytest.raises(ValueError, match=message):
            load_coco_results(write(tmp_path / "bad.json", content), num_joints=17)
