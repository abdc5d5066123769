import argparse
from pathlib import Path

import pytest

from pipeline.cli import data_cmd


def _run(argv: list[str]) -> int:
    # Only the `data` command: the other sub-commands belong to other modules and are tested there.
    parser = argparse.ArgumentParser(prog="fpd")
    data_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_synth_writes_all_layouts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["data", "synth", "--out", str(tmp_path), "--train", "2", "--val", "1", "--unlabeled-folders", "3",
            "--per-folder", "2", "--seed", "5"]  # fmt: skip
    assert _run(argv) == 0
    assert (tmp_path / "mpii" / "annot" / "valid.json").is_file()
    assert (tmp_path / "coco" / "annotations" / "person_keypoints_train2017.json").is_file()
    assert len(list((tmp_path / "unlabeled").glob("folder_*/*.jpg"))) == 6
    assert "3 folders x 2 images" in capsys.readouterr().out


def test_list_reports_records_and_skipped_files(
    real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["data", "list", "mpii", f"{real_data / 'mpii'}:valid_first5"]) == 0
    assert "5 records (5 labelled)" in capsys.readouterr().out
    (tmp_path / "cam").mkdir()
    (tmp_path / "cam" / "bad.jpg").write_bytes(b"nope")
    assert _run(["data", "list", "folder", str(tmp_path / "cam")]) == 0
    out = capsys.readouterr().out
    assert "0 records" in out and "skipped bad.jpg: " in out


def test_mpii_convert_help_explains_the_split(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _run(["data", "mpii-convert", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "2958-person split of Tompson et al." in help_text and "NOT the standard one" in help_text


def test_mpii_convert_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.data.test_mpii_convert import _write_release

    _write_release(tmp_path / "release.mat")
    (tmp_path / "valid.txt").write_text("b.jpg\n")
    argv = ["data", "mpii-convert", "--mat", str(tmp_path / "release.mat"), "--out", str(tmp_path / "mpii"),
            "--valid-images", str(tmp_path / "valid.txt")]  # fmt: skip
    assert _run(argv) == 0
    assert "train: 2 persons, valid: 1 persons (images listed in" in capsys.readouterr().out
    assert (tmp_path / "mpii" / "annot" / "gt_valid.mat").is_file()
