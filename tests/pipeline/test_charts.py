"""Pictures of a run: curves from a training log, bars from the metric rows, and the markdown that shows them."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from PIL import Image

from pipeline.charts import comparison_chart, training_curves
from pipeline.reporting import write_pictures

LOG = [
    {"epoch": e, "lr": 2e-3 if e < 3 else 2e-4, "loss": 1e-3 / (e + 1), "loss_teacher": 4e-4 / (e + 1),
     "loss_ground_truth": 2e-3 / (e + 1), "metrics": {"Mean": 10.0 * e} if e % 2 else {}}
    for e in range(4)
]  # fmt: skip
ROWS = [
    {"model": "teacher", "preset": "tiny_teacher_coco", "dataset": "coco", "AP": 0.2, "AP .5": 0.7, "AP .75": 0.01,
     "AP (M)": 0.2, "AP (L)": -1.0, "AR": 0.28},
    {"model": "student fpd", "preset": "tiny_student_coco", "dataset": "coco", "AP": 0.1, "AP .5": 0.4,
     "AP .75": 0.0, "AP (M)": 0.1, "AP (L)": -1.0, "AR": 0.15},
]  # fmt: skip


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_curves_and_comparison_are_pictures_that_depend_on_the_numbers(tmp_path):
    curves = _pixels(training_curves(LOG, tmp_path / "a.png", title="student fpd"))
    assert curves.shape[1] > 1000 and curves.std() > 10  # drawn, not blank
    changed = [dict(r, loss=r["loss"] * 10) for r in LOG]
    other = _pixels(training_curves(changed, tmp_path / "b.png", title="student fpd"))
    assert other.shape != curves.shape or not np.array_equal(other, curves)

    bars = _pixels(comparison_chart(ROWS, tmp_path / "c.png", title="run"))
    higher = [dict(ROWS[0], AP=0.6), ROWS[1]]
    assert not np.array_equal(_pixels(comparison_chart(higher, tmp_path / "d.png", title="run")), bars)


def test_nothing_to_draw_is_an_error_not_an_empty_picture(tmp_path):
    with pytest.raises(ValueError, match="no epochs"):
        training_curves([], tmp_path / "x.png", title="student gt_only")
    with pytest.raises(ValueError, match="no MPII or COCO rows"):
        comparison_chart([{"model": "m", "preset": "p", "dataset": "lsp"}], tmp_path / "y.png", title="run")
    assert not list(tmp_path.iterdir())


def test_write_pictures_embeds_every_png_and_skips_students_without_a_log(tmp_path):
    trained = tmp_path / "students" / "fpd-abc"
    trained.mkdir(parents=True)
    (trained / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in LOG))
    students = [{"variant": "fpd", "preset": "tiny_student_coco", "output_dir": str(trained)},
                {"variant": "gt_only", "preset": "tiny_student_coco", "output_dir": str(tmp_path / "elsewhere")}]
    paths, markdown = write_pictures(tmp_path, ROWS, students)

    assert paths == [tmp_path / "comparison.png", trained / "curves.png"]
    embedded = [part.split(")", 1)[0] for part in markdown.split("](data:image/png;base64,")[1:]]
    assert [base64.b64decode(e) for e in embedded] == [p.read_bytes() for p in paths]
    assert "### student fpd (tiny_student_coco)" in markdown and "gt_only" not in markdown


def test_curves_show_the_final_evaluation_of_a_run_not_validated_per_epoch(tmp_path):
    unvalidated = [dict(r, metrics={}) for r in LOG]
    plain = _pixels(training_curves(unvalidated, tmp_path / "a.png", title="student fpd"))
    ended = _pixels(training_curves(unvalidated, tmp_path / "b.png", title="student fpd", final=ROWS[1]))
    higher = _pixels(training_curves(unvalidated, tmp_path / "c.png", title="student fpd", final=dict(ROWS[1], AP=0.9)))
    assert plain.shape != ended.shape or not np.array_equal(plain, ended)  # the point is drawn
    assert ended.shape != higher.shape or not np.array_equal(ended, higher)  # where the score says
