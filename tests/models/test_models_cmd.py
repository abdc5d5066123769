"""`fpd models`: the table and the JSON carry the published sizes."""

from __future__ import annotations

import json

from pipeline.cli import main


def test_json_output(capsys):
    assert main(["models", "--json", "resnet50_256x192", "tiny_student_mpii"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"resnet50_256x192", "tiny_student_mpii"}
    res = rows["resnet50_256x192"]
    assert (res["params"], res["gflops"], res["num_joints"], res["color_order"]) == (33_999_697, 8.991, 17, "BGR")
    assert res["input_size"] == [192, 256] and res["heatmap_size"] == [48, 64]
    assert rows["tiny_student_mpii"]["arch_options"]["depth"] == 3


def test_table_output(capsys):
    assert main(["models", "hg4_128", "resnet50_256x192"]) == 0  # the others' figures: test_presets
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["preset", "arch", "joints"]
    hg = next(line for line in lines if line.startswith("hg4_128"))
    assert "3,287,936" in hg and "3.639" in hg and "BGR" in hg and "256x256" in hg and "64x64" in hg
    assert "33,999,697" in next(line for line in lines if line.startswith("resnet50_256x192"))


def test_unknown_preset_is_a_one_line_error(capsys):
    assert main(["models", "hg2"]) == 2
    assert "unknown preset 'hg2'" in capsys.readouterr().err
