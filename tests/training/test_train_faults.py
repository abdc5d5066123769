"""What a hostile user gets from ``fpd train``: one clear line and a meaningful exit code, never a traceback.

Restarting a folder that holds a run, resuming from a damaged or foreign checkpoint, a full disk, a bad recipe
file, a device the machine lacks, a missing weights file named in the recipe, and Ctrl-C.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from models import create_from_preset
from pipeline.cli import main
from pipeline.training.config import config_to_dict
from pipeline.training.loop import read_log, train
from pipeline.training.state import BEST_NAME, CHECKPOINT_NAME, append_log, save_training_state, truncate_log
from storage.checkpoints import save_weights
from tests.training.conftest import tiny_recipe

REPO = Path(__file__).resolve().parents[2]


def _recipe(root: Path, output_dir: Path, path: Path, **overrides: object) -> Path:
    """The tiny ground-truth recipe (``tests.training.conftest.tiny_recipe``) written as a YAML file."""
    path.write_text(yaml.safe_dump(config_to_dict(tiny_recipe(root, output_dir, **overrides))))
    return path


def _fpd(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    """``fpd ARGV`` in this process: its exit code and the lines it printed on stderr."""
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err.splitlines()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def one_epoch_run(synthetic_mpii: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-epoch run of the tiny recipe (checkpoint, weights, log); tests copy it, never change it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_recipe(synthetic_mpii, out, optim={"epochs": 1}))
    return out


@pytest.fixture()
def run_copy(one_epoch_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(one_epoch_run, out)
    return out


# --- 1. a folder that holds a run ----------------------------------------------------------------------------


def test_a_folder_holding_a_run_needs_resume_or_overwrite(
    synthetic_mpii: Path, run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    recipe = _recipe(synthetic_mpii, run_copy, tmp_path / "recipe.yaml", optim={"epochs": 2})
    before = _sha256(run_copy / CHECKPOINT_NAME)

    code, err = _fpd(capsys, "train", "--config", str(recipe))
    assert code == 2 and len(err) == 1, err
    assert str(run_copy) in err[0] and "--resume" in err[0] and "--overwrite" in err[0]
    assert _sha256(run_copy / CHECKPOINT_NAME) == before, "the refused run touched the checkpoint"

    with pytest.raises(SystemExit) as both:
        main(["train", "--config", str(recipe), "--resume", "--overwrite"])
    assert both.value.code == 2 and "not allowed with argument --resume" in capsys.readouterr().err

    assert _fpd(capsys, "train", "--config", str(recipe), "--resume")[0] == 0
    assert [r["epoch"] for r in read_log(run_copy / "log.jsonl")] == [0, 1]  # continued: epoch 0 was not redone
    assert torch.load(run_copy / CHECKPOINT_NAME, weights_only=True)["epoch"] == 2

    (run_copy / BEST_NAME).write_bytes(b"an old run's best weights")
    with caplog.at_level(logging.WARNING, logger="pipeline.training.state"):
        assert _fpd(capsys, "train", "--config", str(recipe), "--overwrite")[0] == 0
    said = [r.getMessage() for r in caplog.records if "--overwrite: starting over" in r.getMessage()]
    assert len(said) == 1 and str(run_copy) in said[0] and BEST_NAME in said[0] and CHECKPOINT_NAME in said[0]
    assert not (run_copy / BEST_NAME).exists(), "the previous run's best.pt was kept as if it were the new run's"
    assert [r["epoch"] for r in read_log(run_copy / "log.jsonl")] == [0, 1]
    assert torch.load(run_copy / CHECKPOINT_NAME, weights_only=True)["epoch"] == 2


def test_resume_refuses_finished_weights_without_a_checkpoint(
    synthetic_mpii: Path, run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing to continue from: ``--resume`` would otherwise train from scratch over the finished weights."""
    (run_copy / CHECKPOINT_NAME).unlink()
    recipe = _recipe(synthetic_mpii, run_copy, tmp_path / "recipe.yaml")
    code, err = _fpd(capsys, "train", "--config", str(recipe), "--resume")
    assert code == 2 and str(run_copy) in err[-1] and CHECKPOINT_NAME in err[-1] and "--overwrite" in err[-1], err


# --- 2. a damaged or foreign checkpoint on --resume ----------------------------------------------------------


def _foreign_preset(path: Path, good: Path) -> None:
    """A real training checkpoint, of another preset (other shapes)."""
    model = create_from_preset("tiny_teacher_mpii")
    optimizer = torch.optim.Adam(model.parameters())
    save_training_state(
        path, model=model, optimizer=optimizer, scheduler=torch.optim.lr_scheduler.MultiStepLR(optimizer, [1]),
        scaler=torch.amp.GradScaler("cpu", enabled=False), epochs_done=1, best_metric=None, best_epoch=None,
        config={"student_preset": "tiny_teacher_mpii"}, metrics={},
    )


DAMAGES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "truncated": (lambda path, good: path.write_bytes(good.read_bytes()[:2000]), "truncated or corrupt"),
    "empty": (lambda path, good: path.write_bytes(b""), "empty or truncated"),
    "garbage": (lambda path, good: path.write_bytes(np.random.default_rng(0).bytes(4096)), "not a PyTorch checkpoint"),
    "plain_state_dict": (lambda path, good: torch.save(torch.load(good, weights_only=True)["model"], path),
                         "bare state_dict"),
    "a_list": (lambda path, good: torch.save([torch.zeros(1)], path), "it is a list"),
    "another_layout": (lambda path, good: torch.save({"epoch": 3, "state_dict": {"w": torch.zeros(1)}}, path),
                       "without model"),
    "another_preset": (_foreign_preset, "student_preset 'tiny_teacher_mpii'"),
    "unsafe_pickle": (lambda path, good: torch.save({"model": Path("/x")}, path), "weights_only=True"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_or_foreign_checkpoint_is_named_on_resume(
    damage: str, synthetic_mpii: Path, run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write, expected = DAMAGES[damage]
    checkpoint = run_copy / CHECKPOINT_NAME
    good = tmp_path / "good.pt"
    shutil.copy(checkpoint, good)
    write(checkpoint, good)
    recipe = _recipe(synthetic_mpii, run_copy, tmp_path / "recipe.yaml", optim={"epochs": 2})

    code, err = _fpd(capsys, "train", "--config", str(recipe), "--resume")
    assert code == 2, err
    assert err[-1].startswith("fpd train: error: ") and str(checkpoint) in err[-1], err
    assert expected in err[-1] and "--overwrite" in err[-1], err[-1]


def test_an_optimiser_of_another_recipe_is_named_on_resume(
    synthetic_mpii: Path, run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The checkpoint's Adam has one parameter group; AdamW with weight decay has two."""
    recipe = _recipe(synthetic_mpii, run_copy, tmp_path / "recipe.yaml",
                     optim={"epochs": 2, "optimizer": "adamw", "weight_decay": 1e-4})  # fmt: skip
    code, err = _fpd(capsys, "train", "--config", str(recipe), "--resume")
    assert code == 2 and str(run_copy / CHECKPOINT_NAME) in err[-1] and "optimiser" in err[-1], err


# --- 3. a full disk --------------------------------------------------------------------------------------------


@pytest.fixture()
def tiny_tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``mount(size_bytes)``: a tmpfs of that size (root only; skips where mounting is not possible)."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        point = tmp_path / "small_disk"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=True)


def test_a_full_disk_keeps_the_last_checkpoint_and_says_how_to_resume(
    synthetic_mpii: Path, one_epoch_run: Path, tmp_path: Path, tiny_tmpfs: Callable[[int], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    files = [path for path in one_epoch_run.iterdir() if path.is_file()]
    pages = sum(-(-path.stat().st_size // 4096) * 4096 for path in files)
    checkpoint_size = (one_epoch_run / CHECKPOINT_NAME).stat().st_size
    # Room for the run as it is and half a checkpoint more: the next one (written beside the old) cannot fit.
    disk = tiny_tmpfs(pages + 16 * 4096 + checkpoint_size // 2)
    out = disk / "run"
    shutil.copytree(one_epoch_run, out)
    before = _sha256(out / CHECKPOINT_NAME)
    recipe = _recipe(synthetic_mpii, out, tmp_path / "recipe.yaml", optim={"epochs": 3})

    code, err = _fpd(capsys, "train", "--config", str(recipe), "--resume")
    assert code == 2, err
    line = err[-1]
    assert line.startswith("fpd train: error: no space left") and str(out / CHECKPOINT_NAME) in line, line
    assert "1 of 3 epochs done" in line and f"--config {recipe}" in line and "--resume" in line, line
    assert _sha256(out / CHECKPOINT_NAME) == before, "the last complete checkpoint was changed"
    assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1
    assert not [path.name for path in out.iterdir() if path.name.endswith(".tmp")], "a partial write was left"
    assert [r["epoch"] for r in read_log(out / "log.jsonl")] in ([0], [0, 1])  # no torn line


def test_every_training_write_names_its_file_on_a_full_disk(tiny_tmpfs: Callable[[int], Path]) -> None:
    """torch.save hides the ENOSPC under a RuntimeError, a buffered write drops the file name: both are named."""
    disk = tiny_tmpfs(64 * 1024)
    model = create_from_preset("tiny_student_mpii")  # ~300 kB of weights: more than the disk holds
    (disk / "log.jsonl").write_text('{"epoch": 0}\n')
    free = os.statvfs(disk)
    (disk / "filler").write_bytes(b"x" * (free.f_bavail * free.f_frsize))  # the disk is full from here on
    with pytest.raises(OSError) as weights:
        save_weights(model, disk / "weights.pt")
    optimizer = torch.optim.Adam(model.parameters())
    with pytest.raises(OSError) as checkpoint:
        save_training_state(
            disk / CHECKPOINT_NAME, model=model, optimizer=optimizer, scaler=torch.amp.GradScaler("cpu", enabled=False),
            scheduler=torch.optim.lr_scheduler.MultiStepLR(optimizer, [1]), epochs_done=1, best_metric=None,
            best_epoch=None, config={}, metrics={},
        )  # fmt: skip
    with pytest.raises(OSError) as log:
        append_log(disk / "log.jsonl", {"epoch": 1, "step_losses": [0.5] * 1000})
    for failure, name in ((weights, "weights.pt"), (checkpoint, CHECKPOINT_NAME), (log, "log.jsonl")):
        assert failure.value.errno == errno.ENOSPC and failure.value.filename == str(disk / name), failure.value
    assert (disk / "log.jsonl").read_text() == '{"epoch": 0}\n', "a torn log line was left behind"
    assert sorted(path.name for path in disk.iterdir()) == ["filler", "log.jsonl"]  # no temporary file left


def test_a_torn_log_line_is_dropped_on_resume(tmp_path: Path) -> None:
    """A run killed while appending leaves half a line; resuming must not choke on it."""
    log = tmp_path / "log.jsonl"
    log.write_text('{"epoch": 0, "loss": 1.0}\n{"epoch": 1, "lo')
    truncate_log(log, start_epoch=1)
    assert read_log(log) == [{"epoch": 0, "loss": 1.0}]


# --- 4. a recipe file that is not one --------------------------------------------------------------------------


RECIPE_FAULTS: dict[str, tuple[bytes | None, list[str], str]] = {
    "syntax_error": (b"student_preset: tiny_student_mpii\ndata: {labelled: [1\noptim: {}\n", [], "line 3, column"),
    "list_at_top": (b"- student_preset\n- data\n", [], "got a list"),
    "empty_file": (b"", [], "the recipe is empty"),
    "not_utf8": (b"student_preset: \xff\xfe\n", [], "not a UTF-8 text file"),
    "missing_file": (None, [], "no such recipe file"),
    "bad_set_value": (b"student_preset: tiny_student_mpii\n", ["--set", "optim.lr=[1"], "--set 'optim.lr=[1'"),
}


@pytest.mark.parametrize("fault", sorted(RECIPE_FAULTS))
def test_a_bad_recipe_file_is_one_line_naming_it(
    fault: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, extra, expected = RECIPE_FAULTS[fault]
    path = tmp_path / "recipe.yaml"
    if content is not None:
        path.write_bytes(content)
    code, err = _fpd(capsys, "train", "--config", str(path), *extra)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"fpd train: error: {path}") and expected in err[0], err[0]


def test_a_directory_given_as_the_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _fpd(capsys, "train", "--config", str(tmp_path))
    assert code == 2 and err == [f"fpd train: error: {tmp_path}: is a directory, not a recipe file"]


# --- 5. a device this machine does not have ---------------------------------------------------------------------


@pytest.mark.parametrize("device", ["tpu", "cuda", "cuda:7"])
@pytest.mark.parametrize("given", ["recipe", "--set"])
def test_an_unknown_or_absent_device_names_the_key(
    device: str, given: str, synthetic_mpii: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if device == "cuda:7" and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    out = tmp_path / "run"
    recipe = _recipe(synthetic_mpii, out, tmp_path / "recipe.yaml", **({"device": device} if given == "recipe" else {}))
    extra = ["--set", f"device={device}"] if given == "--set" else []
    code, err = _fpd(capsys, "train", "--config", str(recipe), *extra)
    assert code == 2 and err[-1].startswith("fpd train: error: device: ") and f"'{device}'" in err[-1], err
    assert not out.exists(), "the run started (made its folder) before the device was checked"


# --- 6. Ctrl-C ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_exits_130_with_one_line_and_an_intact_checkpoint(synthetic_mpii: Path, tmp_path: Path) -> None:
    """SIGINT a real ``fpd train`` process once it has a checkpoint (what Ctrl-C in a terminal sends)."""
    out = tmp_path / "run"
    recipe = _recipe(synthetic_mpii, out, tmp_path / "recipe.yaml", optim={"epochs": 500})
    command = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())",
               "train", "--config", str(recipe)]  # fmt: skip
    # Its own process group, so that the group's SIGINT (what a terminal's Ctrl-C sends) spares pytest.
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / CHECKPOINT_NAME).exists():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint in 120 s"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    line = stderr.splitlines()[-1]
    epochs = torch.load(out / CHECKPOINT_NAME, weights_only=True)["epoch"]
    assert line.startswith("fpd train: interrupted; kept ") and f"({epochs} of 500 epochs done)" in line, line
    assert line.endswith(f"fpd train --config {recipe} --resume"), line


# --- 7. a weights file named in the recipe that is not there ---------------------------------------------------


@pytest.mark.parametrize("key", ["student_init", "student_backbone", "teacher_checkpoint"])
def test_a_missing_weights_file_names_the_key_and_the_path(
    key: str, synthetic_mpii: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no_such_weights.pt"
    overrides: dict[str, object] = {key: str(missing)}
    if key == "teacher_checkpoint":
        overrides |= {"teacher_online": True, "teacher_preset": "tiny_teacher_mpii", "loss": {"alpha": 0.5}}
    out = tmp_path / "run"
    recipe = _recipe(synthetic_mpii, out, tmp_path / "recipe.yaml", **overrides)
    code, err = _fpd(capsys, "train", "--config", str(recipe))
    assert code == 2 and err[-1].startswith(f"fpd train: error: {key}: no file {missing}"), err
    assert not out.exists(), "the run started (made its folder) before its inputs were checked"
