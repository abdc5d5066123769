"""COCO OKS AP: pinned pycocotools numbers on real val2017 data, HRNet's rescoring and OKS-NMS restated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.joints import COCO
from pipeline.data.coco import read_coco
from pipeline.metrics.coco import STATS_KEYS, coco_keypoint_eval, keypoint_results, oks_nms, rescore
from storage.annotations import load_coco_results

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / "coco"
GT_FILE = REAL / "annotations" / "person_keypoints_val2017_subset4.json"
RESULTS_FILE = REAL / "keypoint_results" / "keypoints_val2017_results_subset4.json"
real_data = pytest.mark.skipif(not GT_FILE.is_file(), reason="shared real data not available")


def hrnet_oks_iou(g, d, a_g, a_d):
    sigmas = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87,
                       0.89, 0.89]) / 10.0
    variances = (sigmas * 2) ** 2
    xg, yg = g[0::3], g[1::3]
    ious = np.zeros(d.shape[0])
    for n_d in range(d.shape[0]):
        dx, dy = d[n_d, 0::3] - xg, d[n_d, 1::3] - yg
        e = (dx**2 + dy**2) / variances / ((a_g + a_d[n_d]) / 2 + np.spacing(1)) / 2
        ious[n_d] = np.sum(np.exp(-e)) / e.shape[0] if e.shape[0] != 0 else 0.0
    return ious


def hrnet_oks_nms(kpts_db, thresh):
    scores = np.array([k["score"] for k in kpts_db])
    kpts = np.array([k["keypoints"].flatten() for k in kpts_db])
    areas = np.array([k["area"] for k in kpts_db])
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        oks_ovr = hrnet_oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]])
        order = order[np.where(oks_ovr <= thresh)[0] + 1]
    return keep


def hrnet_rescore(keypoints, box_score, in_vis_thre=0.2):
    kpt_score, valid_num = 0, 0
    for joint in range(keypoints.shape[0]):
        if keypoints[joint][2] > in_vis_thre:
            kpt_score += keypoints[joint][2]
            valid_num += 1
    if valid_num != 0:
        kpt_score = kpt_score / valid_num
    return kpt_score * box_score


@pytest.fixture(scope="module")
def coco_gt():
    return read_coco(GT_FILE)


def gt_persons(coco_gt):
    return [a for a in coco_gt.loadAnns(coco_gt.getAnnIds()) if a["num_keypoints"] > 0]


@real_data
def test_shipped_results_pinned_ap(coco_gt, capsys):
    stats = coco_keypoint_eval(coco_gt, load_coco_results(RESULTS_FILE, num_joints=17))
    assert tuple(stats) == STATS_KEYS
    assert stats["AP"] == pytest.approx(0.8608896054440609, abs=1e-12)
    assert stats["AP .5"] == pytest.approx(0.993145468392993, abs=1e-12)
    assert stats["AP .75"] == pytest.approx(0.9108910891089109, abs=1e-12)
    assert stats["AR"] == pytest.approx(0.875, abs=1e-12)
    assert capsys.readouterr().out == ""  # pycocotools' prints are captured


@real_data
def test_ground_truth_as_predictions_scores_one(coco_gt):
    persons = gt_persons(coco_gt)
    coords = np.array([np.reshape(a["keypoints"], (17, 3))[:, :2] for a in persons], dtype=np.float64)
    centers = np.array([[a["bbox"][0] + a["bbox"][2] / 2, a["bbox"][1] + a["bbox"][3] / 2] for a in persons])
    scales = np.array([[a["bbox"][2] / 200 * 1.25, a["bbox"][3] / 200 * 1.25] for a in persons])
    results = keypoint_results(
        coords, np.ones((len(persons), 17)), centers, scales, np.ones(len(persons)), [a["image_id"] for a in persons]
    )
    assert len(results) == len(persons)  # distinct people survive OKS-NMS at 0.9
    stats = coco_keypoint_eval(coco_gt, results)
    assert stats["AP"] == 1.0 and stats["AR"] == 1.0
    shifted = [dict(r, keypoints=[v + 8.0 if i % 3 == 0 else v for i, v in enumerate(r["keypoints"])]) for r in results]
    assert coco_keypoint_eval(coco_gt, shifted)["AP"] < 0.9  # an 8 px error is visible
    assert "area" not in results[0]  # loadRes got copies


def test_rescore_matches_hrnet():
    rng = np.random.default_rng(0)
    maxvals = rng.uniform(0, 0.6, (20, 17))
    maxvals[3] = 0.1  # no joint above 0.2: score 0
    boxes = rng.uniform(0.1, 1.0, 20)
    ref = [hrnet_rescore(np.concatenate([np.zeros((17, 2)), maxvals[i, :, None]], 1), boxes[i]) for i in range(20)]
    np.testing.assert_allclose(rescore(maxvals, boxes), ref, rtol=1e-12)
    assert rescore(maxvals, boxes)[3] == 0.0


def test_oks_nms_matches_hrnet_on_clustered_poses():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 200, (4, 17, 2))
    poses = np.concatenate([base[i % 4] + rng.normal(0, 1.0 + 6 * (i % 3), (17, 2)) for i in range(24)])
    keypoints = np.concatenate([poses.reshape(24, 17, 2), rng.uniform(0, 1, (24, 17, 1))], -1)
    scores = rng.uniform(0, 1, 24)
    areas = rng.uniform(2000, 20000, 24)
    keep = oks_nms(keypoints, scores, areas, 0.9, COCO.sigmas)
    db = [{"keypoints": keypoints[i], "score": scores[i], "area": areas[i]} for i in range(24)]
    ref = hrnet_oks_nms(db, 0.9)
    assert keep == [int(i) for i in ref]
    assert 4 <= len(keep) < 24  # some suppression happened, every cluster kept its best


def test_keypoint_results_format_order_and_areas():
    coords = np.zeros((3, 17, 2))
    coords[1] += 500.0  # far from the others: never suppressed
    maxvals = np.full((3, 17), 0.5)
    results = keypoint_results(
        coords, maxvals, np.zeros((3, 2)), np.ones((3, 2)), np.array([0.2, 0.9, 0.8]), [7, 5, 7]
    )
    # image 7 first (first appearance), best first; the identical pose of image 7 was suppressed.
    assert [(r["image_id"], r["score"]) for r in results] == [(7, 0.4), (5, 0.45)]
    assert set(results[0]) == {"image_id", "category_id", "keypoints", "score", "center", "scale"}
    assert len(results[0]["keypoints"]) == 51 and results[0]["keypoints"][2] == 0.5
    assert results[0]["category_id"] == 1


@real_data
def test_unknown_image_and_empty_results(coco_gt):
    with pytest.raises(ValueError, match="not in the ground truth: 123"):
        coco_keypoint_eval(coco_gt, [{"image_id": 123, "category_id": 1, "keypoints": [0.0] * 51, "score": 1.0}])
    assert coco_keypoint_eval(coco_gt, []) == dict.fromkeys(STATS_KEYS, 0.0)
