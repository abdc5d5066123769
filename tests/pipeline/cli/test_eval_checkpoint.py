"""`fpd eval --checkpoint`: the network's flip-test evaluation gives the numbers of the predictions-file path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.data.mpii import load_mpii
from pipeline.evaluation import predict
from pipeline.runtime import load_model
from storage.annotations import load_mpii_predictions


def _json(argv, capsys) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_mpii_checkpoint_equals_its_predictions_file(real_data, random_weights, tmp_path, capsys):
    root, weights, preds = real_data / "mpii", random_weights("tiny_student_mpii"), tmp_path / "pred.mat"
    from_checkpoint = _json(["eval", "mpii", "--preset", "tiny_student_mpii", "--checkpoint", str(weights),
                             "--root", str(root), "--split", "valid_first5", "--workers", "0",
                             "--write-preds", str(preds)], capsys)  # fmt: skip
    from_file = _json(["eval", "mpii", "--gt", str(root / "annot" / "gt_valid_first5.mat"), "--preds", str(preds)],
                      capsys)  # fmt: skip
    assert from_checkpoint == from_file and "Mean" in from_file
    # The file holds the flip-test predictions of the network, in the ground truth's person order.
    preset, model = load_model("tiny_student_mpii", weights)
    expected = predict(model, load_mpii(root, "valid_first5"), preset, flip=True).coords
    np.testing.assert_allclose(load_mpii_predictions(preds, num_joints=16, num_persons=5), expected, atol=1e-4)


def test_no_flip_is_the_plain_forward(real_data, random_weights, tmp_path, capsys):
    weights, root = random_weights("tiny_student_mpii"), real_data / "mpii"
    argv = ["eval", "mpii", "--preset", "tiny_student_mpii", "--checkpoint", str(weights), "--root", str(root),
            "--split", "valid_first5", "--workers", "0", "--no-flip", "--write-preds", str(tmp_path / "p.npy")]
    assert main(argv) == 0
    assert "| Head | Shoulder |" in capsys.readouterr().out
    preset, model = load_model("tiny_student_mpii", weights)
    records = load_mpii(root, "valid_first5")
    written = np.load(tmp_path / "p.npy")
    np.testing.assert_allclose(written, predict(model, records, preset, flip=False).coords, atol=1e-4)
    assert np.abs(written - predict(model, records, preset, flip=True).coords).max() > 1.0


def test_coco_checkpoint_on_detections_equals_its_results_file(real_data, random_weights, tmp_path, capsys):
    root, results = real_data / "coco", tmp_path / "results.json"
    gt = root / "annotations" / "person_keypoints_val2017_subset4.json"
    detections = root / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person_subset4.json"
    from_checkpoint = _json(["eval", "coco", "--preset", "tiny_student_coco", "--checkpoint",
                             str(random_weights("tiny_student_coco")), "--root", str(root), "--gt", str(gt),
                             "--detections", str(detections), "--workers", "0", "--write-results", str(results)],
                            capsys)  # fmt: skip
    from_file = _json(["eval", "coco", "--gt", str(gt), "--results", str(results)], capsys)
    assert from_checkpoint == from_file and "AP" in from_file
    written = json.loads(results.read_text())
    # HRNet's way: every detection box is a person (118 in the file), then OKS-NMS per image removes some.
    assert 0 < len(written) <= 118
    assert {r["image_id"] for r in written} == {785, 40083, 196141, 197388}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "mpii", "--checkpoint", "w.pt", "--root", "."], "--checkpoint needs --preset"),
        (["eval", "coco", "--checkpoint", "w.pt", "--preset", "tiny_student_coco"], "--checkpoint needs --root"),
        (["eval", "mpii", "--preds", "p.mat"], "--preds needs --gt"),
        (["eval", "coco", "--results", "r.json"], "--results needs --gt"),
    ],
)
def test_missing_options_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_checkpoint_file_is_named(real_data, tmp_path, capsys):
    argv = ["eval", "mpii", "--preset", "tiny_student_mpii", "--checkpoint", str(tmp_path / "none.pt"),
            "--root", str(real_data / "mpii"), "--split", "valid_first5"]  # fmt: skip
    assert main(argv) == 2
    assert "none.pt" in capsys.readouterr().err


def test_a_coco_preset_is_refused_for_mpii(real_data, random_weights, capsys):
    argv = ["eval", "mpii", "--preset", "tiny_student_coco", "--checkpoint", str(random_weights("tiny_student_coco")),
            "--root", str(real_data / "mpii"), "--split", "valid_first5"]  # fmt: skip
    assert main(argv) == 2
    assert "MPII evaluation needs mpii" in capsys.readouterr().err
