import os
from pathlib import Path

import pytest

from pipeline.data.sources import PathEscapeError, SourceSpec, load_source, parse_source_spec, resolve_inside


@pytest.mark.parametrize(
    ("kind", "text", "root", "split"),
    [
        ("mpii", "data/mpii", "data/mpii", "valid"),
        ("mpii", "data/mpii:train", "data/mpii", "train"),
        ("coco", "/d/coco", "/d/coco", "val2017"),
        ("coco", "/d/coco:train2017", "/d/coco", "train2017"),
        ("coco", "C:/data/coco", "C:/data/coco", "val2017"),  # a drive letter is not a split
        ("folder", "/d/cam:1/x", "/d/cam:1/x", ""),
    ],
)
def test_parse_source_spec(kind: str, text: str, root: str, split: str) -> None:
    assert parse_source_spec(kind, text) == SourceSpec(kind, Path(root), split)


def test_parse_source_spec_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown source kind 'lsp'"):
        parse_source_spec("lsp", "x")
    with pytest.raises(ValueError, match="takes no split"):
        parse_source_spec("folder", "/d/cam:train")


def test_load_source_dispatches(real_data: Path) -> None:
    mpii = load_source(SourceSpec("mpii", real_data / "mpii", "valid_first5"), 1.0)
    assert len(mpii) == 5 and mpii[0].source == "mpii/valid_first5"
    folder = load_source(SourceSpec("folder", real_data / "coco" / "images" / "val2017"), 0.75)
    assert [r.image for r in folder] == ["000000000785.jpg", "000000040083.jpg", "000000196141.jpg",
                                         "000000197388.jpg"]  # fmt: skip
    assert folder[0].source == "folder/val2017"
    with pytest.raises(ValueError, match="MPII sources use their annotated boxes"):
        load_source(SourceSpec("mpii", real_data / "mpii", "valid_first5"), 1.0, detections=[])


def test_resolve_inside_refuses_escapes(tmp_path: Path) -> None:
    (tmp_path / "root" / "a").mkdir(parents=True)
    (tmp_path / "outside.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "outside.jpg", tmp_path / "root" / "link.jpg")
    assert resolve_inside(tmp_path / "root", "a") == (tmp_path / "root" / "a").resolve()
    for relative in ("../outside.jpg", "link.jpg", "/etc/passwd"):
        with pytest.raises(PathEscapeError, match="outside the data root"):
            resolve_inside(tmp_path / "root", relative)
