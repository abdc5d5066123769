"""`fpd cache repair` and the cache faults of `fpd infer` as a user meets them: one line and exit 2 (130 for
Ctrl-C), never a traceback; committed shards survive and a rerun resumes. Real `fpd infer` runs of the tiny
teacher on synthetic images; the full-disk and read-only cases mount a tmpfs (root only, skipped elsewhere)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

from pipeline.cli import main
from storage.cache import TeacherTargetCache
from storage.checkpoints import save_weights
from tests.pipeline.test_inference import PRESET, REPO, make_images, tiny_teacher
from tests.storage.test_cache_faults import corrupt, mounted, remount


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_weights(tiny_teacher(), tmp_path / "teacher.pth")


def infer_args(checkpoint: Path, cache: Path, images: Path, *extra: str) -> list[str]:
    return ["infer", "--teacher", PRESET.name, "--checkpoint", str(checkpoint), "--cache", str(cache),
            "--folder", str(images), "--device", "cpu", "--workers", "0", "--shard-size", "4", "--no-progress",
            *extra]  # fmt: skip


def shard_state(cache: Path) -> list[tuple[str, str]]:
    """(name, sha256) of the listed shards, in commit order."""
    return [(s.name, s.sha256) for s in TeacherTargetCache(cache).manifest().shards]


def one_error_line(err: str, *expected: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(text in lines[0] for text in expected), lines[0]
    return lines[0]


@pytest.fixture
def filled(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, list[str]]:
    """A cache of 8 samples in 2 shards made by `fpd infer`, and the arguments that made it."""
    make_images(tmp_path / "imgs", 8)
    args = infer_args(checkpoint, tmp_path / "cache", tmp_path / "imgs")
    assert main(args) == 0
    capsys.readouterr()
    return tmp_path / "cache", args


# -- repair -------------------------------------------------------------------------------------------------------


def test_repair_after_reinference_makes_verify_pass(filled: tuple[Path, list[str]], capsys) -> None:
    cache, args = filled
    good, damaged = (cache / name for name, _ in shard_state(cache))
    corrupt(damaged)
    assert main(["cache", "verify", str(cache)]) == 1
    assert f"then `fpd cache repair {cache}`" in capsys.readouterr().out
    assert main(args) == 0  # the damaged shard's samples are planned again, with one warning line naming it
    out, err = capsys.readouterr()
    assert "4 new, 4 skipped" in out
    assert err.count(f"fpd infer: warning: teacher cache {cache}: skipping shard {damaged.name}") == 1
    assert main(["cache", "verify", str(cache)]) == 1  # the trap: re-inferred, yet verify keeps failing
    before = good.read_bytes()

    assert main(["cache", "repair", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"DROPPED  {damaged.name} (corrupt" in out and "all 4 samples have a newer record elsewhere" in out
    assert "1 damaged shards: 1 dropped, 0 kept: fpd cache verify passes now" in out
    assert main(["cache", "verify", str(cache)]) == 0 and (cache / "damaged" / damaged.name).exists()
    assert good.read_bytes() == before
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # opening warns no more
        assert len(TeacherTargetCache(cache).dataset()) == 8


def test_repair_refuses_without_force_when_samples_were_not_reinferred(filled, capsys) -> None:
    cache, args = filled
    name = shard_state(cache)[1][0]
    corrupt(cache / name)
    manifest = (cache / "manifest.json").read_bytes()
    assert main(["cache", "repair", str(cache)]) == 1
    out = capsys.readouterr().out
    assert f"KEPT     {name}" in out and "4 of its 4 samples have no record in another shard" in out
    assert "run fpd infer with the same sources first" in out and "--force" in out
    assert (cache / "manifest.json").read_bytes() == manifest and (cache / name).exists()
    assert main(["cache", "repair", str(cache), "--json"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["ok"] is False and payload["shards"][0]["not_reinferred"] == 4

    assert main(["cache", "repair", str(cache), "--force"]) == 0 and main(["cache", "verify", str(cache)]) == 0
    capsys.readouterr()
    assert main(args) == 0  # the dropped shard's samples are simply missing: the next run infers them
    assert "4 new, 4 skipped" in capsys.readouterr().out and len(TeacherTargetCache(cache).dataset()) == 8


# -- damaged manifest ---------------------------------------------------------------------------------------------

READERS = {
    "verify": ["cache", "verify", "{cache}"], "inspect": ["cache", "inspect", "{cache}", "--json"],
    "render": ["cache", "render", "{cache}", "--out", "{out}"], "repair": ["cache", "repair", "{cache}"],
    "infer": None,
}  # fmt: skip


@pytest.mark.parametrize("damage", [b'{"format": "fpd-teacher-cache-1", "shards": [', b"[1, 2]", b'{"shards": 3}'])
@pytest.mark.parametrize("command", list(READERS))
def test_every_command_prints_a_damaged_manifest_as_one_line(filled, capsys, command: str, damage: bytes) -> None:
    cache, args = filled
    before = shard_state(cache)
    shards = {name: (cache / name).read_bytes() for name, _ in before}
    (cache / "manifest.json").write_bytes(damage)
    argv = args if READERS[command] is None else [a.format(cache=cache, out=cache.parent / "out")
                                                   for a in READERS[command]]  # fmt: skip
    assert main(argv) == 2
    one_error_line(capsys.readouterr().err, str(cache / "manifest.json"), "is damaged", "--rebuild-manifest")
    assert {name: (cache / name).read_bytes() for name in shards} == shards

    assert main(["cache", "repair", str(cache), "--rebuild-manifest"]) == 0
    assert "new manifest lists 2 shards, 8 samples" in capsys.readouterr().out
    assert shard_state(cache) == before and main(["cache", "verify", str(cache)]) == 0


# -- bad options --------------------------------------------------------------------------------------------------

BAD_OPTIONS = {
    "--shard-size 0": "argument --shard-size: must be at least 1, got 0",
    "--shard-size -3": "argument --shard-size: must be at least 1, got -3",
    "--shard 3/2": "argument --shard: 3/2: need 0 <= I < N",
    "--shard x": "argument --shard: expected I/N",
    "--batch-size 0": "argument --batch-size: must be at least 1, got 0",
    "--workers -1": "argument --workers: must be 0 or more, got -1",
    "--device tpu": "fpd infer: error: --device tpu: unknown device 'tpu'",
    "--device cuda": "fpd infer: error: --device cuda: device 'cuda' asked for, but CUDA is not available",
}


@pytest.mark.parametrize("option", list(BAD_OPTIONS))
def test_bad_infer_options_are_refused_before_anything_is_written(
    tmp_path: Path, checkpoint: Path, capsys, monkeypatch: pytest.MonkeyPatch, option: str
) -> None:
    make_images(tmp_path / "imgs", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    argv = [*infer_args(checkpoint, tmp_path / "cache", tmp_path / "imgs"), *option.split()]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own refusal: usage, then one error line
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert BAD_OPTIONS[option] in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # refused before the cache folder was created


# -- read-only and full disk --------------------------------------------------------------------------------------


def test_infer_into_a_read_only_folder_names_it(tmp_path: Path, checkpoint: Path, capsys) -> None:
    make_images(tmp_path / "imgs", 4)
    with mounted(tmp_path / "ro", "4m") as ro:
        args = infer_args(checkpoint, ro / "cache", tmp_path / "imgs")
        assert main(args) == 0
        before = shard_state(ro / "cache")
        remount(ro, "ro")
        try:
            capsys.readouterr()
            assert main(args) == 2
            one_error_line(capsys.readouterr().err, f"teacher cache {ro / 'cache'}", "Read-only file system")
            assert main(infer_args(checkpoint, ro / "sub" / "cache", tmp_path / "imgs")) == 2
            one_error_line(capsys.readouterr().err, f"teacher cache {ro / 'sub' / 'cache'}", "Read-only")
            assert main(["cache", "verify", str(ro / "cache")]) == 0  # reading needs no write access
        finally:
            remount(ro, "rw")
        assert shard_state(ro / "cache") == before


def run_fpd(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    entry = "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"  # what the `fpd` script runs
    return subprocess.run([sys.executable, "-c", entry, *argv], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300, **kwargs)  # fmt: skip


@pytest.mark.slow
def test_full_disk_during_infer_exits_2_with_what_was_kept_and_resumes(tmp_path: Path, checkpoint: Path) -> None:
    make_images(tmp_path / "imgs", 60)
    with mounted(tmp_path / "disk", "1m") as disk:
        # Uncompressed 16x32x32 float16 maps: ~33 KB a sample, so 1 MiB fills up after ~30 of the 60.
        args = infer_args(checkpoint, disk / "cache", tmp_path / "imgs", "--compression", "none")
        done = run_fpd(*args)
        assert done.returncode == 2, done.stderr  # not -11: no segfault
        one_error_line(done.stderr, f"teacher cache {disk / 'cache'}", "No space left on device", "Kept: the",
                       "Free space on that disk and run the same command again")  # fmt: skip
        kept = shard_state(disk / "cache")
        assert kept and not list((disk / "cache").glob(".tmp-*"))
        assert TeacherTargetCache(disk / "cache").verify().ok

        remount(disk, "size=8m")
        again = run_fpd(*args)
        assert again.returncode == 0, again.stderr
        samples = sum(s.num_samples for s in TeacherTargetCache(disk / "cache").manifest().shards[: len(kept)])
        assert f"{60 - samples} new, {samples} skipped" in again.stdout
        assert shard_state(disk / "cache")[: len(kept)] == kept
        assert len(TeacherTargetCache(disk / "cache").dataset()) == 60


# -- Ctrl-C -------------------------------------------------------------------------------------------------------

SLOW_FPD = textwrap.dedent(
    """
    import sys, time
    import pipeline.runtime as runtime
    from pipeline.cli import main

    load = runtime.load_model
    def slow_load(*args, **kwargs):  # a teacher slow enough to be interrupted in the middle of a run
        preset, model = load(*args, **kwargs)
        forward = model.forward
        def slow_forward(x):
            time.sleep(0.2)
            return forward(x)
        model.forward = slow_forward
        return preset, model
    runtime.load_model = slow_load
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_ctrl_c_exits_130_with_what_was_committed_and_no_traceback(tmp_path: Path, checkpoint: Path) -> None:
    make_images(tmp_path / "imgs", 24)
    (tmp_path / "slow_fpd.py").write_text(SLOW_FPD)
    cache = tmp_path / "cache"
    args = infer_args(checkpoint, cache, tmp_path / "imgs", "--batch-size", "2")
    args[args.index("--workers") + 1] = "1"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # A session of its own: the signal goes to the whole process group, DataLoader worker included, as a
    # terminal's Ctrl-C does.
    proc = subprocess.Popen([sys.executable, str(tmp_path / "slow_fpd.py"), *args], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ((cache / "manifest.json").exists() and shard_state(cache)):
        time.sleep(0.05)
    before = shard_state(cache)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    line = one_error_line(err, "fpd infer: interrupted; kept the", str(cache), "run the same command again")
    after = shard_state(cache)
    assert after[: len(before)] == before  # committed before the signal: kept, untouched
    committed = sum(s.num_samples for s in TeacherTargetCache(cache).manifest().shards)
    assert 4 <= committed < 24 and f"({committed} samples) in all" in line
    assert TeacherTargetCache(cache).verify().ok

    done = run_fpd(*args)
    assert done.returncode == 0 and f"{24 - committed} new, {committed} skipped" in done.stdout
    assert len(TeacherTargetCache(cache).dataset()) == 24
