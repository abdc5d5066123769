"""Training throughput: student samples/s reading cached teacher heatmaps vs running the teacher online.

Both modes train the same student, with the same teacher, data, batch size, workers and augmentation; they
differ only in where the teacher term's target comes from (``data.teacher_cache`` vs ``teacher_online: true``).
The teacher has random weights (speed does not depend on them). The cache is filled once, before timing.

    .venv/bin/python benchmarks/bench_training.py                       # tiny presets, CPU
    .venv/bin/python benchmarks/bench_training.py --student hg4_128 --teacher hg8_256 --device cuda \
        --batch-size 24 --workers 8 --images 256 --amp bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from models import create_from_preset, get_preset
from pipeline.data.mpii import load_mpii
from pipeline.data.synthetic import SyntheticConfig, generate_dataset
from pipeline.runtime import load_model
from pipeline.teacher.inference import open_teacher_cache, run_teacher_inference
from pipeline.teacher.plan import plan_inference
from pipeline.training.config import config_from_dict
from pipeline.training.loop import read_log, train


def _recipe(args: argparse.Namespace, root: Path, out: Path, mode: str, cache: Path, teacher: Path) -> dict:
    raw = {
        "student_preset": args.student,
        "teacher_preset": args.teacher,
        "teacher_checkpoint": str(teacher),
        "teacher_online": mode == "online",
        "data": {"labelled": [{"kind": "mpii", "root": str(root), "split": "train"}], "batch_size": args.batch_size,
                 "workers": args.workers},
        "optim": {"epochs": args.epochs, "milestones": [1000]},
        "loss": {"alpha": 0.5},
        "output_dir": str(out / mode),
        "device": args.device,
        "amp": args.amp,
        "channels_last": args.device != "cpu",
        "progress": False,  # the benchmark prints its own table
    }
    if mode == "cache":
        raw["data"]["teacher_cache"] = str(cache)
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="tiny_student_mpii")
    parser.add_argument("--teacher", default="tiny_teacher_mpii")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=96, help="synthetic training images (1-3 persons each)")
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per mode; the first is warm-up")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per mode; medians are reported")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep data, cache and runs here")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up)")

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_training_"))
    root = generate_dataset(work / "mpii", "mpii", SyntheticConfig(num_train=args.images, num_val=1, seed=0))
    teacher_preset = get_preset(args.teacher)
    torch.manual_seed(0)
    teacher_path = work / "teacher.pt"
    torch.save(create_from_preset(teacher_preset).state_dict(), teacher_path)
    cache = open_teacher_cache(work / "cache", teacher_preset, teacher_path)
    records = load_mpii(root, "train", input_aspect=teacher_preset.input_aspect)
    _, teacher = load_model(teacher_preset, teacher_path)
    tic = time.perf_counter()
    run_teacher_inference(teacher, teacher_preset, plan_inference(records, cache), cache, batch_size=args.batch_size,
                          device=args.device, num_workers=args.workers, progress=False)  # fmt: skip
    cache_seconds = time.perf_counter() - tic

    # Alternate the modes (cache, online, cache, ...) so that a load change on a shared machine hits both.
    runs: dict[str, list[float]] = {"cache": [], "online": []}
    for repeat in range(args.repeats):
        for mode in ("cache", "online"):
            out = work / "runs" / str(repeat)
            # Each mode starts afresh in the repeat's folder (the previous mode's run is the one replaced).
            recipe = config_from_dict(_recipe(args, root, out, mode, work / "cache", teacher_path))
            result = train(recipe, overwrite=True)
            runs[mode].append(statistics.median(r["samples_per_s"] for r in read_log(result.log)[1:]))
    rates = {mode: statistics.median(values) for mode, values in runs.items()}
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"
    print(f"student {args.student}, teacher {args.teacher}, batch {args.batch_size}, workers {args.workers}, "
          f"amp {args.amp}, {len(records)} samples/epoch, device {device}")
    print(f"teacher cache fill (flip test, once): {len(records) / cache_seconds:8.1f} samples/s")
    print(f"{'mode':<8}{'samples/s':>12}{'ratio':>8}   per run")
    for mode in ("cache", "online"):
        per_run = " ".join(f"{v:.1f}" for v in runs[mode])
        print(f"{mode:<8}{rates[mode]:>12.1f}{rates[mode] / rates['online']:>8.2f}   {per_run}")
    print(json.dumps({"samples_per_s": rates, "runs": runs, "cache_fill_samples_per_s": len(records) / cache_seconds}))


if __name__ == "__main__":
    main()
