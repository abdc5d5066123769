"""The training loop end to end on tiny synthetic data: exact resume, exported weights, validation, online teacher."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from models import create_from_preset
from pipeline.data.images import normalize_images
from pipeline.training.config import ConfigError, config_to_dict
from pipeline.training.data import teacher_on_crops
from pipeline.training.loop import Precision, read_log, train, train_one_epoch
from pipeline.training.loss import FPDLoss
from storage.checkpoints import load_checkpoint
from tests.training.conftest import tiny_recipe
from tests.training.test_distributed import CODEC, RandomPoses

REPO = Path(__file__).resolve().parents[2]


def test_stop_after_epoch_one_then_resume_continues_the_same_curve(synthetic_mpii: Path, tmp_path: Path) -> None:
    straight = train(tiny_recipe(synthetic_mpii, tmp_path / "straight"))

    interrupted = tiny_recipe(synthetic_mpii, tmp_path / "resumed")
    train(interrupted.model_copy(update={"optim": interrupted.optim.model_copy(update={"epochs": 1})}))
    resumed = train(interrupted.model_copy(update={"resume": True}))

    a, b = read_log(straight.log), read_log(resumed.log)
    assert [r["epoch"] for r in b] == [0, 1, 2]
    # Milestone 2 decays from epoch 1 (HRNet's timing); a fresh scheduler after the resume would log 1e-3 there.
    assert [r["lr"] for r in b] == [1e-3, 1e-4, 1e-4]
    for ra, rb in zip(a, b, strict=True):
        assert len(ra["step_losses"]) >= 2
        assert ra["step_losses"] == rb["step_losses"]  # bit-identical: same crops, order, weights and moments
    assert torch.load(resumed.checkpoint, weights_only=True)["scaler"] == {}  # a disabled scaler, saved and loaded
    state_a = torch.load(straight.weights, weights_only=True)
    state_b = torch.load(resumed.weights, weights_only=True)
    for name, tensor in state_a.items():
        assert torch.equal(tensor, state_b[name]), name


def test_exported_weights_load_strictly_and_loss_goes_down(
    synthetic_mpii: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tiny_recipe(synthetic_mpii, tmp_path / "run", optim={"epochs": 4, "lr": 2e-3, "milestones": [10]},
                         eval={"dataset": "mpii", "root": str(synthetic_mpii), "split": "valid", "every": 2})
    with caplog.at_level(logging.INFO, logger="pipeline.training.loop"):
        result = train(config)
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epoch_lines) == 4 and all(" s " in line and "samples/s" in line for line in epoch_lines)
    model = create_from_preset("tiny_student_mpii")
    report = load_checkpoint(model, result.weights, strict=True)
    assert report is not None
    assert set(torch.load(result.weights, weights_only=True)) == set(model.state_dict())
    log = read_log(result.log)
    assert log[-1]["loss"] < log[0]["loss"]
    assert log[-1]["loss_teacher"] == 0.0 and log[-1]["loss_ground_truth"] > 0
    # validation with flip test every 2 epochs, best weights tracked by PCKh Mean
    assert [bool(r["metrics"]) for r in log] == [False, True, False, True]
    assert "Mean" in result.metrics and result.best_metric == max(r["metrics"]["Mean"] for r in log if r["metrics"])
    assert result.best_weights is not None and result.best_weights.exists()
    payload = torch.load(result.checkpoint, weights_only=True)  # the resumable checkpoint is weights_only-safe
    assert payload["epoch"] == 4 and set(payload["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert json.loads(Path(str(result.weights) + ".json").read_text())["preset"] == "tiny_student_mpii"


def test_online_teacher_mode_distils_from_the_teacher(synthetic_mpii: Path, tmp_path: Path) -> None:
    teacher = create_from_preset("tiny_teacher_mpii")
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    config = tiny_recipe(  # also runs the channels-last path
        synthetic_mpii, tmp_path / "online", optim={"epochs": 1}, loss={"alpha": 0.5}, channels_last=True,
        teacher_online=True, teacher_preset="tiny_teacher_mpii", teacher_checkpoint=str(tmp_path / "teacher.pt"),
    )
    log = read_log(train(config).log)
    assert log[0]["loss_teacher"] > 0 and log[0]["loss_ground_truth"] > 0


def test_one_amp_path() -> None:
    cpu = torch.device("cpu")
    none, bf16 = Precision.from_config("none", cpu), Precision.from_config("bf16", cpu)
    assert none.dtype is None and bf16.dtype is torch.bfloat16
    assert not none.scaler.is_enabled() and not bf16.scaler.is_enabled()  # a scaler always, enabled for fp16 only
    assert none.scaler.state_dict() == {}
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        Precision.from_config("fp16", cpu)
    # a bf16 autocast epoch on CPU: the loss is computed in float32 and the weights stay float32
    dataset = RandomPoses()
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, 4, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    steps = train_one_epoch(model, FPDLoss(), optimizer, loader, cpu, bf16, codec=CODEC)
    assert steps["loss"].dtype == torch.float32 and torch.isfinite(steps["loss"]).all()
    assert model[0].weight.dtype == torch.float32


def test_disabled_scaler_step_is_bit_identical_to_a_plain_step() -> None:
    """``scale(loss).backward(); step(opt); update()`` with a disabled scaler == ``loss.backward(); opt.step()``."""
    loader = torch.utils.data.DataLoader(RandomPoses(), batch_size=4)

    def fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(3)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3, 2, 1))
        return model, torch.optim.Adam(model.parameters(), lr=1e-2)

    model, optimizer = fresh()
    steps = train_one_epoch(model, FPDLoss(), optimizer, loader, torch.device("cpu"),
                            Precision.from_config("none", torch.device("cpu")), codec=CODEC)
    reference, ref_optimizer = fresh()
    reference.train()
    losses = []
    for batch in loader:
        # the step's inputs made by hand: normalised pixels, GT targets, teacher maps moved and mirrored to the crops
        images = normalize_images(batch["image"])
        target, target_weight = CODEC.encode(batch["joints"], batch["visibility"])
        teacher, _ = teacher_on_crops(batch["teacher"], batch["teacher_matrix"], batch["teacher_channels"], (4, 4))
        terms = FPDLoss()(reference(images), teacher, target, target_weight, batch["labelled"])
        ref_optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        ref_optimizer.step()
        losses.append(terms.total.detach())
    assert torch.equal(steps["loss"], torch.stack(losses))
    for (name, param), ref in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(param, ref), name
    assert not torch.equal(reference[0].weight, fresh()[0][0].weight)  # the steps did move the weights


def test_progress_bar_on_rank_zero_only(capsys: pytest.CaptureFixture[str]) -> None:
    """The bar shows the epoch and the running loss; without ``progress`` no bar (nor tqdm thread) is created."""
    loader = torch.utils.data.DataLoader(RandomPoses(), batch_size=2)  # 6 steps
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, 4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    precision = Precision.from_config("none", torch.device("cpu"))
    before = threading.active_count()
    train_one_epoch(model, FPDLoss(), optimizer, loader, torch.device("cpu"), precision, codec=CODEC, progress=False)
    assert capsys.readouterr().err == ""
    train_one_epoch(model, FPDLoss(), optimizer, loader, torch.device("cpu"), precision, codec=CODEC, progress=True,
                    epoch=7, progress_every=3)
    err = capsys.readouterr().err
    assert "epoch 7" in err and "6/6" in err and "loss=" in err
    assert threading.active_count() == before  # no tqdm monitor thread (DataLoader workers fork after the bar)


def _build_cache(teacher_path: Path, records: list, cache_dir: Path) -> None:
    from pipeline.runtime import load_model
    from pipeline.teacher.inference import open_teacher_cache, run_teacher_inference
    from pipeline.teacher.plan import plan_inference

    preset, teacher = load_model("tiny_teacher_mpii", teacher_path)
    cache = open_teacher_cache(cache_dir, preset, teacher_path)
    run_teacher_inference(teacher, preset, plan_inference(records, cache), cache, batch_size=8, device="cpu",
                          num_workers=0, progress=False)  # fmt: skip


def test_cached_teacher_with_an_unlabeled_folder(synthetic_mpii: Path, tmp_path: Path) -> None:
    from pipeline.data.folders import scan_folder
    from pipeline.data.mpii import load_mpii
    from pipeline.data.synthetic import generate_unlabeled_folder

    torch.manual_seed(0)
    torch.save(create_from_preset("tiny_teacher_mpii").state_dict(), tmp_path / "teacher.pt")
    folder = tmp_path / "street"
    generate_unlabeled_folder(folder, 3, seed=2, size_range=(160, 200))
    labelled = load_mpii(synthetic_mpii, "train")
    unlabeled = scan_folder(folder, input_aspect=1.0).records
    _build_cache(tmp_path / "teacher.pt", labelled + unlabeled, tmp_path / "cache")

    config = tiny_recipe(synthetic_mpii, tmp_path / "cached", optim={"epochs": 1}, loss={"alpha": 0.5},
                         data={"teacher_cache": str(tmp_path / "cache"), "unlabeled": ["folder/street"]})
    result = train(config)
    log = read_log(result.log)
    assert log[0]["loss_teacher"] > 0 and log[0]["loss_ground_truth"] > 0
    batches = -(-(len(labelled) + len(unlabeled)) // 4)
    assert len(log[0]["step_losses"]) == batches  # the unlabeled folder's records joined the labelled ones


@pytest.mark.slow
def test_killed_run_resumes_on_the_same_curve(synthetic_mpii: Path, tmp_path: Path) -> None:
    """SIGKILL a ``python -m pipeline.training.loop`` run after its first epoch, resume it, compare curves."""
    # The uninterrupted reference runs in a fresh process too: other tests change this process's torch thread
    # count, and a different count changes float reduction order (the curves would differ in the 7th digit).
    commands = {}
    for name in ("reference", "killed"):
        recipe = tmp_path / f"{name}.yaml"
        config = tiny_recipe(synthetic_mpii, tmp_path / name, optim={"epochs": 3})
        recipe.write_text(yaml.safe_dump(config_to_dict(config)))
        commands[name] = [sys.executable, "-m", "pipeline.training.loop", "--config", str(recipe)]
    subprocess.run(commands["reference"], cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    command = commands["killed"]
    log = tmp_path / "killed" / "log.jsonl"
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (log.exists() and log.read_text().strip()) and process.poll() is None:
            assert time.monotonic() < deadline, "the run wrote no epoch in 120 s"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    done = len(read_log(log))
    assert done < 3, "the run finished before it could be killed"
    subprocess.run([*command, "--resume"], cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resumed = read_log(log)
    assert [r["epoch"] for r in resumed] == [0, 1, 2]
    reference = read_log(tmp_path / "reference" / "log.jsonl")
    assert [r["step_losses"] for r in resumed] == [r["step_losses"] for r in reference]
