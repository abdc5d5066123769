"""The checks only a GPU can run, in one script and one table; ``--dry`` runs the same code on the CPU, tiny.

Rows (each ``ok``, ``FAIL`` with the reason, or ``n/a`` where the device cannot run it):

- ``train <amp>``: the student trained from a cache of the teacher's flip-tested heatmaps (synthetic COCO in the
  genuine layout, random weights), AMP bf16 and fp16 (GradScaler), channels-last: samples/s (median of the epochs
  after the first), final loss finite, peak GPU memory.
- ``train online``: the same with the teacher run on each augmented crop (FPD's way, bf16); ``cache / online``.
- ``ddp torchrun``: one process through ``torchrun --standalone`` (``pipeline.students.torchrun_command``), NCCL on
  CUDA (gloo on the CPU): exit code, loss finite.
- ``teacher inference``: ``run_teacher_inference`` into a fresh cache (decode, crop, flip-test forward, write)
  against the model's own flip-test forward on ready tensors (``benchmarks/bench_inference``), large batch.
- ``student vs teacher``: one forward each, alternating (``benchmarks/bench_speed``), bf16 channels-last.

    python -m benchmarks.gpu_check --json-out gpu_check.json        # on a GPU machine, < 8 minutes on one H200
    python -m benchmarks.gpu_check --dry                             # CPU, tiny presets, about a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import bench_inference, bench_speed
from benchmarks.output import publish
from models import create_from_preset, get_preset
from pipeline.data.coco import load_coco
from pipeline.data.synthetic import SyntheticConfig, generate_dataset
from pipeline.runtime import load_model
from pipeline.students import torchrun_command, write_recipe
from pipeline.teacher.inference import open_teacher_cache, run_teacher_inference
from pipeline.teacher.plan import plan_inference
from pipeline.training.config import config_from_dict
from pipeline.training.loop import read_log, train


@dataclass(frozen=True)
class Setting:
    """What is checked, and how big."""

    student: str = "hrnet_w32_256x192"
    teacher: str = "hrnet_w48_256x192"
    device: str = "cuda"
    images: int = 768
    batch_size: int = 64
    workers: int = 8
    epochs: int = 3
    amps: tuple[str, ...] = ("bf16", "fp16")
    online_amp: str = "bf16"
    inference_batch: int = 128
    speed_batch: int = 64


DRY = Setting(student="tiny_student_coco", teacher="tiny_teacher_coco", device="cpu", images=8, batch_size=4,
              workers=0, epochs=2, amps=("none",), online_amp="none", inference_batch=4, speed_batch=2)  # fmt: skip


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _recipe(s: Setting, root: Path, teacher: Path, cache: Path, out: Path, *, amp: str, online: bool) -> dict:
    return {
        "student_preset": s.student, "teacher_preset": s.teacher, "teacher_checkpoint": str(teacher),
        "teacher_online": online,
        "data": {"labelled": [{"kind": "coco", "root": str(root), "split": "train2017"}], "batch_size": s.batch_size,
                 "workers": s.workers, **({} if online else {"teacher_cache": str(cache)})},
        "optim": {"epochs": s.epochs, "milestones": [1000]},
        "loss": {"alpha": 0.5},
        "output_dir": str(out), "device": s.device, "amp": amp, "channels_last": s.device != "cpu",
        "progress": False,
    }  # fmt: skip


def _train_row(name: str, recipe: dict, device: torch.device) -> dict:
    """Train ``recipe``; samples/s over the epochs after the first (the first pays worker start and cudnn tuning)."""
    _reset_peak(device)
    log = read_log(train(config_from_dict(recipe), overwrite=True).log)
    rates = [r["samples_per_s"] for r in log[1:]] or [log[-1]["samples_per_s"]]
    finite = all(math.isfinite(r["loss"]) for r in log)
    return {"check": name, "status": "ok" if finite else "FAIL (loss not finite)",
            "samples_per_s": statistics.median(rates), "final_loss": log[-1]["loss"],
            "peak_gib": _peak_gib(device)}  # fmt: skip


def _ddp_row(s: Setting, recipe: dict, device: torch.device) -> dict:
    """One process through torchrun: the rendezvous, the process group (NCCL/gloo) and DDP wrapping all run."""
    config = config_from_dict({**recipe, "optim": {"epochs": 1, "milestones": [1000]}})
    command = torchrun_command(write_recipe(config), 1)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    row = {"check": "ddp torchrun", "backend": "nccl" if device.type == "cuda" else "gloo",
           "seconds": time.perf_counter() - start, "returncode": done.returncode}  # fmt: skip
    log_path = Path(config.output_dir) / "log.jsonl"
    if done.returncode != 0 or not log_path.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {**row, "status": f"FAIL (exit {done.returncode}: {' | '.join(tail)[:300]})"}
    finite = all(math.isfinite(r["loss"]) for r in read_log(log_path))
    return {**row, "status": "ok" if finite else "FAIL (loss not finite)"}


def _inference_row(s: Setting, folder: Path, work: Path, device: torch.device) -> dict:
    """The pipeline's teacher inference rate as a fraction of the model's own flip-test forward rate."""
    torch.manual_seed(0)
    preset, model = load_model(s.teacher, None)
    model = model.eval().to(device).to(memory_format=torch.channels_last)
    _reset_peak(device)
    alone, piped = [], []
    for r in range(2):  # alternating; the second pair is the one reported (the first warms up cudnn and workers)
        alone.append(bench_inference.model_alone(model, preset, s.inference_batch, s.images, device))
        piped.append(bench_inference.pipeline(model, preset, folder, work / f"inference{r}", s.inference_batch,
                                              s.workers, device)[0])  # fmt: skip
    return {"check": "teacher inference", "status": "ok", "model_images_per_s": alone[-1],
            "pipeline_images_per_s": piped[-1], "fraction": piped[-1] / alone[-1], "peak_gib": _peak_gib(device)}


def _speed_row(s: Setting, device: torch.device, work: Path) -> dict:
    """Student vs teacher forward rate at full size (``bench_speed``), bf16 channels-last on CUDA."""
    mode = "bf16" if device.type == "cuda" else "channels_last"
    presets = {"teacher": get_preset(s.teacher), "student": get_preset(s.student)}
    threads = torch.get_num_threads()
    forwards = {role: bench_speed.prepare(bench_speed.realistic_weights(p, device), p, mode, device, threads, work)
                for role, p in presets.items()}  # fmt: skip
    inputs = {role: torch.randn(s.speed_batch, 3, *p.input_hw, device=device) for role, p in presets.items()}
    rate = bench_speed.measure_pair(forwards, inputs, 3, 0.5 if device.type == "cuda" else 0.05, device)
    return {"check": "student vs teacher", "status": "ok", "mode": mode, "batch": s.speed_batch,
            "teacher_images_per_s": rate["teacher"], "student_images_per_s": rate["student"],
            "speedup": rate["student"] / rate["teacher"]}  # fmt: skip


def _guarded(name: str, check: Callable[[], dict]) -> dict:
    """A check that raises becomes a FAIL row, so that the others still run and the table is complete."""
    try:
        return check()
    except Exception as exc:  # reported in the table; the script exits non-zero
        return {"check": name, "status": f"FAIL ({type(exc).__name__}: {str(exc).strip()[:300]})"}


def run(s: Setting, work: Path) -> dict:
    """Every check of ``s``; the result (rows and setting)."""
    device = torch.device(s.device)
    started = time.perf_counter()
    root = generate_dataset(work / "coco", "coco", SyntheticConfig(num_train=s.images, num_val=1, seed=0,
                                                                   max_people=1))  # fmt: skip
    teacher_preset = get_preset(s.teacher)
    torch.manual_seed(0)
    teacher = work / "teacher.pt"
    torch.save(create_from_preset(teacher_preset).state_dict(), teacher)
    cache = open_teacher_cache(work / "cache", teacher_preset, teacher)
    records = load_coco(root, "train2017", input_aspect=teacher_preset.input_aspect)
    _, model = load_model(teacher_preset, teacher)
    run_teacher_inference(model, teacher_preset, plan_inference(records, cache), cache, batch_size=s.inference_batch,
                          device=device, num_workers=s.workers, progress=False)  # fmt: skip
    del model
    rows = []
    for amp in s.amps:
        recipe = _recipe(s, root, teacher, work / "cache", work / "runs" / f"cache_{amp}", amp=amp, online=False)
        rows.append(_guarded(f"train {amp}", lambda recipe=recipe, amp=amp: _train_row(f"train {amp}", recipe,
                                                                                         device)))  # fmt: skip
    online = _recipe(s, root, teacher, work / "cache", work / "runs" / "online", amp=s.online_amp, online=True)
    row = _guarded("train online", lambda: _train_row("train online", online, device))
    cached = next((r for r in rows if r["check"] == f"train {s.online_amp}" and "samples_per_s" in r), None)
    if cached and "samples_per_s" in row:
        row["cache_over_online"] = cached["samples_per_s"] / row["samples_per_s"]
    rows.append(row)
    ddp = _recipe(s, root, teacher, work / "cache", work / "runs" / "ddp", amp=s.amps[0], online=False)
    rows.append(_guarded("ddp torchrun", lambda: _ddp_row(s, ddp, device)))
    rows.append(_guarded("teacher inference", lambda: _inference_row(s, root / "images" / "train2017", work,
                                                                     device)))  # fmt: skip
    rows.append(_guarded("student vs teacher", lambda: _speed_row(s, device, work)))
    return {
        "setting": dataclasses.asdict(s), "rows": rows, "seconds": time.perf_counter() - started,
        "torch": torch.__version__, "samples": len(records),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{os.cpu_count()}",
    }  # fmt: skip


def format_table(result: dict) -> str:
    """One line per check: its status and figures."""
    s = result["setting"]
    lines = [f"{result['device_name']}, torch {result['torch']}: student {s['student']}, teacher {s['teacher']}, "
             f"{result['samples']} samples, batch {s['batch_size']}, {s['workers']} workers; "
             f"{result['seconds']:.0f} s in all"]  # fmt: skip
    shown = (
        ("samples_per_s", "samples/s", ".1f"), ("final_loss", "loss", ".3g"),
        ("cache_over_online", "cache/online", ".2f"), ("backend", "backend", "s"),
        ("model_images_per_s", "model img/s", ".1f"),
        ("pipeline_images_per_s", "pipeline img/s", ".1f"), ("fraction", "pipeline/model", ".0%"),
        ("speedup", "student/teacher", ".2f"), ("peak_gib", "peak GiB", ".2f"),
    )  # fmt: skip
    for row in result["rows"]:
        figures = "  ".join(f"{label} {row[key]:{fmt}}" for key, label, fmt in shown if row.get(key) is not None)
        lines.append(f"  {row['check']:<20}{row['status']:<8}{figures}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks, print the table (and ``--json-out``); exit 1 when a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="CPU, tiny presets: the same code, to keep it working")
    parser.add_argument("--work-dir", type=Path, help="keep data, caches and runs here (default: a temp folder)")
    parser.add_argument("--json-out", type=Path, help="also write the result as JSON")
    args = parser.parse_args(argv)
    setting = DRY if args.dry else Setting()
    if setting.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --dry on a CPU machine")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    result = run(setting, work)
    publish(result, format_table(result), args.json_out)
    return 1 if any(row["status"].startswith("FAIL") for row in result["rows"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
