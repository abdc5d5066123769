"""The metric rows of a run: the console table and the UI's table."""

from __future__ import annotations

from pipeline.metrics.coco import STATS_KEYS
from pipeline.reporting import format_table, metrics_row, table_columns


def test_rows_keep_every_metric_and_the_ui_table_drops_only_cocos_ar_breakdown() -> None:
    coco = metrics_row("student fpd", "tiny_student_coco", "coco", {k: 0.123456 for k in STATS_KEYS}, init="scratch")
    mpii = metrics_row("teacher", "tiny_teacher_mpii", "mpii", {"Mean": 90.20504, "Mean@0.1": 29.8}, init="given")
    assert coco["AR (L)"] == 0.1235 and mpii["Mean"] == 90.205  # rounded for display, nothing dropped
    assert list(table_columns(coco)) == ["model", "preset", "init", "dataset", *STATS_KEYS[:6]]
    assert table_columns(mpii) == mpii

    table = format_table([mpii, coco]).splitlines()
    assert table[0].split() == ["MPII", "PCKh@0.5", "PCKh@0.1", "init"]
    assert table[1].split() == ["teacher", "90.2050", "29.8000", "given"]
    assert table[2].split() == ["COCO", "AP", "AP", ".5", "AP", ".75", "AR", "init"]
    assert table[3].split() == ["student", "fpd", "0.1235", "0.1235", "0.1235", "0.1235", "scratch"]
