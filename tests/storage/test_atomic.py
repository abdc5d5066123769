"""atomic_write: all-or-nothing replacement, no temporary files left behind."""

from __future__ import annotations

import os

import pytest

from storage.atomic import atomic_write


def test_writes_bytes_and_text_and_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "file.bin"
    with atomic_write(target) as handle:
        handle.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    with atomic_write(tmp_path / "t.json", "w") as handle:
        handle.write("é{}")
    assert (tmp_path / "t.json").read_text(encoding="utf-8") == "é{}"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["file.bin", "t.json"]


def test_destination_is_untouched_until_the_block_succeeds(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text("old")
    with atomic_write(target, "w") as handle:
        handle.write("new")
        handle.flush()
        assert target.read_text() == "old"  # a reader in the meantime sees the complete old file
    assert target.read_text() == "new"


def test_an_exception_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "weights.pth"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(target) as handle:
        handle.write(b"partial")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pth"]


def test_permissions(tmp_path):
    fresh = tmp_path / "fresh"
    with atomic_write(fresh) as handle:
        handle.write(b"x")
    assert fresh.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    kept = tmp_path / "kept"
    kept.write_bytes(b"x")
    os.chmod(kept, 0o640)
    with atomic_write(kept) as handle:
        handle.write(b"y")
    assert kept.stat().st_mode & 0o777 == 0o640


def test_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="modes"), atomic_write(tmp_path / "x", "a"):
        pass
