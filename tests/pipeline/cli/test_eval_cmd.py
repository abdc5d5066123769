"""`fpd eval`: tables and JSON on the real files, and one clear line (exit code 2) for each bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from pipeline.cli import main
from pipeline.metrics.coco import STATS_KEYS
from pipeline.metrics.pckh import TABLE_KEYS


@pytest.fixture()
def files(real_data):
    return {
        "mpii_full": real_data / "mpii" / "annot" / "detections_our_format.mat",
        "mpii_first5": real_data / "mpii" / "annot" / "gt_valid_first5.mat",
        "mpii_json": real_data / "mpii" / "annot" / "valid_first5.json",
        "coco_gt": real_data / "coco" / "annotations" / "person_keypoints_val2017_subset4.json",
        "coco_results": real_data / "coco" / "keypoint_results" / "keypoints_val2017_results_subset4.json",
    }


def test_mpii_table_and_json(files, capsys):
    assert main(["eval", "mpii", "--gt", str(files["mpii_full"]), "--preds", str(files["mpii_full"])]) == 0
    table = capsys.readouterr().out
    assert "| Head | Shoulder |" in table and "| 95.600 | 92.714 |" in table and "82.337" in table
    assert main(["eval", "mpii", "--gt", str(files["mpii_full"]), "--preds", str(files["mpii_full"]), "--json"]) == 0
    values = json.loads(capsys.readouterr().out)
    assert tuple(values) == TABLE_KEYS
    assert round(values["Mean"], 2) == 82.34 and round(values["Mean@0.1"], 2) == 28.97


def test_json_writes_null_for_a_joint_without_annotations(files, tmp_path, capsys):
    mat = scipy.io.loadmat(files["mpii_first5"])
    one = {k: v[..., 2:3] if k != "dataset_joints" else v for k, v in mat.items() if not k.startswith("__")}
    scipy.io.savemat(tmp_path / "gt.mat", one)  # the third person: no ankles annotated
    np.save(tmp_path / "p.npy", np.transpose(one["pos_gt_src"], (2, 0, 1)) - 1)
    assert main(["eval", "mpii", "--gt", str(tmp_path / "gt.mat"), "--preds", str(tmp_path / "p.npy"), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"Ankle": null' in out and json.loads(out)["Mean"] == 100.0


def test_coco_table_and_json(files, capsys):
    argv = ["eval", "coco", "--gt", str(files["coco_gt"]), "--results", str(files["coco_results"])]
    assert main(argv) == 0
    assert "| AP | AP .5 | AP .75 |" in capsys.readouterr().out
    assert main([*argv, "--json"]) == 0
    out = capsys.readouterr().out
    values = json.loads(out)
    assert tuple(values) == STATS_KEYS and values["AP"] == pytest.approx(0.8608896054440609, abs=1e-12)
    assert out.count("\n") == 1  # nothing but the JSON line: pycocotools was silenced


def run_error(argv, capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    return captured.err


def test_bad_mpii_inputs(files, tmp_path, capsys):
    gt = str(files["mpii_first5"])
    err = run_error(["eval", "mpii", "--gt", str(tmp_path / "gt.mat"), "--preds", gt], capsys)
    assert "fpd eval: error: MPII ground-truth .mat not found:" in err and "gt.mat" in err
    err = run_error(["eval", "mpii", "--gt", gt, "--preds", str(files["mpii_full"])], capsys)
    assert "2958 persons predicted, the ground truth has 5" in err
    np.save(tmp_path / "p.npy", np.zeros((5, 17, 2)))
    err = run_error(["eval", "mpii", "--gt", gt, "--preds", str(tmp_path / "p.npy")], capsys)
    assert "p.npy: array has shape (5, 17, 2), expected Nx16x2" in err
    (tmp_path / "p.csv").write_text("1,2")
    err = run_error(["eval", "mpii", "--gt", gt, "--preds", str(tmp_path / "p.csv")], capsys)
    assert "unknown predictions format '.csv'" in err
    err = run_error(["eval", "mpii", "--gt", str(files["mpii_json"]), "--preds", gt], capsys)
    assert "valid_first5.json: not a readable MATLAB .mat file" in err


def test_bad_coco_inputs(files, tmp_path, capsys):
    gt, results = str(files["coco_gt"]), str(files["coco_results"])
    err = run_error(["eval", "coco", "--gt", gt, "--results", str(tmp_path / "r.json")], capsys)
    assert "COCO keypoint results file not found" in err
    err = run_error(["eval", "coco", "--gt", str(files["mpii_json"]), "--results", results], capsys)
    assert "valid_first5.json" in err and "MPII" in err
    (tmp_path / "r.json").write_text(json.dumps([{"image_id": 5, "category_id": 1, "keypoints": [0] * 51, "score": 1}]))
    err = run_error(["eval", "coco", "--gt", gt, "--results", str(tmp_path / "r.json")], capsys)
    assert "1 result image_id(s) are not in the ground truth: 5" in err
    (tmp_path / "r.json").write_text(json.dumps([{"image_id": 785, "keypoints": [0] * 51, "score": 1}]))
    err = run_error(["eval", "coco", "--gt", gt, "--results", str(tmp_path / "r.json")], capsys)
    assert "r.json: entry 0: missing key(s) category_id" in err
    (tmp_path / "r.json").write_text("[{")
    assert "r.json: not valid json" in run_error(["eval", "coco", "--gt", gt, "--results", str(tmp_path / "r.json")],
                                                 capsys)
