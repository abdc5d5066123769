"""Accuracy fidelity of the teacher cache: one student trained on GT alone, with the online teacher, from the cache.

FPD runs the teacher once per augmented crop (``teacher_online: true``, a single pass, no flip test); the pipeline
runs it once per person, with flip test, on the unaugmented crop, and warps the cached heatmaps to each augmented
crop (docs/training.md, "Targets that follow the augmentation"). This benchmark measures what that costs the
student: one teacher is trained on ground truth (its flip-test PCKh is printed), its heatmaps are cached, and the
same student preset is trained with the same data, schedule, augmentation and seeds in each arm, starting (by
default, ``--init gt``) from a ground-truth student of that seed, as FPD's best MPII result fine-tunes its
ground-truth checkpoint (``--init scratch``: from fresh weights):

- ``gt``: ground truth alone (``alpha 0``), i.e. the ground-truth student trained on for as long as the others;
- ``online``: FPD's way, the teacher on each augmented crop (single pass);
- ``cache``: the flip-tested cache, warped to each crop;
- ``cache_seen`` (optional): the same cache, the teacher term counted only on the pixels of the augmented crop
  that the cached crop covers (``loss.teacher_seen_only``: no pull towards the zeros where nothing was inferred);
- ``cache_single`` (optional): a cache filled without flip test, which isolates the warp from the flip test.

Seed ``i`` is the same in every arm (initial weights, sample order, augmentation draws), and the arms alternate
within each seed so that load drifts on a shared machine hit them alike. Every student is scored once, after its
last epoch, with flip test (PCKh@0.5 on the synthetic validation split).

    .venv/bin/python benchmarks/bench_fidelity.py                       # 3 seeds, tiny presets, CPU
    .venv/bin/python benchmarks/bench_fidelity.py --seeds 5 --arms gt,online,cache,cache_single --json-out r.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.output import publish
from models import get_preset
from pipeline.data.mpii import load_mpii
from pipeline.data.synthetic import SyntheticConfig, generate_dataset
from pipeline.runtime import load_model
from pipeline.teacher.inference import run_teacher_inference, teacher_provenance
from pipeline.teacher.plan import plan_inference
from pipeline.training.config import config_from_dict
from pipeline.training.loop import train
from storage.cache import TeacherTargetCache
from storage.hashing import sha256_file

ARMS = {
    "gt": "(a) ground truth alone",
    "online": "(b) online teacher, single pass (FPD)",
    "cache": "(c) cache, flip test, warped",
    "cache_seen": "(c) + teacher term where it saw",
    "cache_single": "(c') cache, single pass, warped",
}
"""Arm name -> table label, in table order."""

DEFAULT_ARMS = ("gt", "online", "cache")


def scenes(images: int, val_images: int) -> SyntheticConfig:
    """The demo's easy scenes (``demo/demo.py: DemoSizes``): one person per image, few occluders, small images.

    On harder scenes a CPU budget of a few thousand crops leaves every tiny network near PCKh 0, where no arm can
    be told from another.
    """
    return SyntheticConfig(num_train=images, num_val=val_images, seed=0, size_range=(128, 192), max_people=1,
                           occluder_prob=0.1, clutter_shapes=(1, 4))  # fmt: skip


def cache_name(arm: str) -> str:
    """The cache an arm reads: ``cache_single`` its own (no flip test), the other cache arms the flip-tested one."""
    return "cache_single" if arm == "cache_single" else "cache"


def student_recipe(args: argparse.Namespace, root: Path, out: Path, arm: str, seed: int,
                   teacher: Path, caches: dict[str, Path], init: Path | None = None) -> dict:  # fmt: skip
    """The recipe of one student run: only the teacher-term keys differ between arms (``init``: start weights)."""
    raw = ground_truth_recipe(args, args.student, root, out, args.epochs, args.milestones, augment=True, seed=seed,
                              init=init)  # fmt: skip
    raw |= {"teacher_preset": args.teacher, "teacher_checkpoint": str(teacher), "teacher_online": arm == "online"}
    raw["loss"] = {"alpha": 0.0 if arm == "gt" else args.alpha}
    if arm.startswith("cache"):
        raw["data"]["teacher_cache"] = str(caches[cache_name(arm)])
    if arm == "cache_seen":
        raw["loss"]["teacher_seen_only"] = True
    return raw


def ground_truth_recipe(args: argparse.Namespace, preset: str, root: Path, out: Path, epochs: int,
                        milestones: Sequence[int], *, augment: bool, seed: int = 0,
                        init: Path | None = None) -> dict:  # fmt: skip
    """A ground-truth-only run (``alpha 0``, flip-test validation after the last epoch): teacher and init student."""
    raw = {
        "student_preset": preset,
        "data": {"labelled": [{"kind": "mpii", "root": str(root), "split": "train"}], "augment": augment,
                 "batch_size": args.batch_size, "workers": args.workers},
        "optim": {"epochs": epochs, "lr": args.lr, "milestones": list(milestones)},
        "loss": {"alpha": 0.0},
        "eval": {"dataset": "mpii", "root": str(root), "split": "valid", "every": epochs, "flip": True},
        "output_dir": str(out),
        "device": "cpu",
        "seed": seed,
        "progress": False,
    }
    if init is not None:
        raw["student_init"] = str(init)
    return raw


def pretrain_student(args: argparse.Namespace, root: Path, out: Path, seed: int) -> tuple[Path, float]:
    """The ground-truth student every arm of ``seed`` starts from (``--init gt``); its weights and PCKh.

    It trains on plain crops (no augmentation), as the demo's ``gt_only`` does: on a CPU budget the tiny student
    learns faster so, and the arms' own epochs then bring in the augmentation.
    """
    raw = ground_truth_recipe(args, args.student, root, out, args.pretrain_epochs, [], augment=False, seed=seed)
    result = train(config_from_dict(raw), overwrite=True)
    return result.weights, result.metrics["Mean"]


def train_teacher(args: argparse.Namespace, root: Path, work: Path) -> tuple[Path, float]:
    """Train the teacher on ground truth with the students' ``train``; its weights and flip-test PCKh.

    Two phases, like the students' ground-truth init and then their arms, but longer, so that the teacher ends
    clearly above every student: ``--teacher-pretrain-epochs`` on plain crops, then ``--teacher-epochs`` with the
    students' augmentation, as FPD's teacher was trained, so that it answers on augmented crops as a real teacher
    would (a teacher trained on plain crops only would handicap the online arm on rotated ones). A teacher already
    trained in ``work`` with the same setting (``teacher.json``) is reused.
    """
    plain = ground_truth_recipe(args, args.teacher, root, work / "teacher_plain", args.teacher_pretrain_epochs, [],
                                augment=False)  # fmt: skip
    raw = ground_truth_recipe(args, args.teacher, root, work / "teacher", args.teacher_epochs,
                              args.teacher_milestones, augment=True,
                              init=work / "teacher_plain" / "weights.pt")  # fmt: skip
    record = work / "teacher.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        if saved["setting"] == [plain, raw] and Path(saved["weights"]).is_file():
            return Path(saved["weights"]), saved["pckh"]
    train(config_from_dict(plain), overwrite=True)
    result = train(config_from_dict(raw), overwrite=True)
    record.write_text(json.dumps({"setting": [plain, raw], "weights": str(result.weights),
                                  "pckh": result.metrics["Mean"]}))  # fmt: skip
    return result.weights, result.metrics["Mean"]


def fill_cache(args: argparse.Namespace, root: Path, folder: Path, teacher: Path, *, flip: bool) -> float:
    """Infer the teacher over the training persons into a new cache at ``folder``; the seconds it took."""
    preset = get_preset(args.teacher)
    cache = TeacherTargetCache(folder).open_or_create(teacher_provenance(preset, sha256_file(teacher), flip=flip))
    records = load_mpii(root, "train", input_aspect=preset.input_aspect)
    _, model = load_model(preset, teacher)
    tic = time.perf_counter()
    run_teacher_inference(model, preset, plan_inference(records, cache), cache, batch_size=32, device="cpu",
                          num_workers=args.workers, progress=False)  # fmt: skip
    return time.perf_counter() - tic


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, sample standard deviation over seeds (None for one seed), min and max."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
    }


def summarize(runs: Sequence[dict], arms: Sequence[str]) -> dict:
    """Per arm: PCKh spread over seeds and mean wall time; the paired gaps cache - online, seed by seed.

    Args:
        runs: one dict per student run with ``arm``, ``seed``, ``pckh`` and ``seconds``.
        arms: the arms run, in table order.

    Returns:
        ``arms`` (name -> spread, ``pckh`` and ``seconds`` by seed order) and ``gaps`` (``"cache - online"`` ->
        spread and ``per_seed``) for each cache arm, when the online arm ran.
    """
    by_arm = {arm: sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"]) for arm in arms}
    summary = {"arms": {}, "gaps": {}}
    for arm, rows in by_arm.items():
        pckh = [r["pckh"] for r in rows]
        summary["arms"][arm] = {**spread(pckh), "pckh": pckh, "seeds": [r["seed"] for r in rows],
                                "seconds": [r["seconds"] for r in rows]}  # fmt: skip
    online = {r["seed"]: r["pckh"] for r in by_arm.get("online", [])}
    for arm in (a for a in arms if a.startswith("cache") and online):
        # Paired by seed: the seed fixes the initial weights, sample order and crops, so the pair shares its luck.
        per_seed = [r["pckh"] - online[r["seed"]] for r in by_arm[arm]]
        summary["gaps"][f"{arm} - online"] = {**spread(per_seed), "per_seed": per_seed}
    return summary


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_table(result: dict) -> str:
    """The printed report: teacher, one row per arm, the gaps, the load and the wall time."""
    summary, setting = result["summary"], result["setting"]
    lines = [
        f"student {setting['student']}, teacher {setting['teacher']} (flip-test PCKh@0.5 "
        f"{result['teacher']['pckh']:.2f} after {setting['teacher_pretrain_epochs']} + {setting['teacher_epochs']} "
        f"epochs); {result['train_persons']} "
        f"training persons, {setting['epochs']} epochs, batch {setting['batch_size']}, MPII augmentation, "
        f"alpha {setting['alpha']}; seeds {setting['seeds']}; students scored with flip test",
        f"{'arm':<40}{'PCKh@0.5 mean':>14}{'std':>7}{'min':>7}{'max':>7}{'s/run':>7}   per seed",
    ]
    if result["init"]:
        row = spread([r["pckh"] for r in result["init"]])
        per_seed = " ".join(f"{r['pckh']:.2f}" for r in result["init"])
        lines.append(f"{'start: ground-truth student, ' + str(setting['pretrain_epochs']) + ' epochs':<40}"
                     f"{row['mean']:>14.2f}{_fmt(row['std']):>7}{row['min']:>7.2f}{row['max']:>7.2f}"
                     f"{statistics.fmean(r['seconds'] for r in result['init']):>7.0f}   {per_seed}")  # fmt: skip
    for arm, row in summary["arms"].items():
        per_seed = " ".join(f"{v:.2f}" for v in row["pckh"])
        lines.append(f"{ARMS[arm]:<40}{row['mean']:>14.2f}{_fmt(row['std']):>7}{row['min']:>7.2f}{row['max']:>7.2f}"
                     f"{statistics.fmean(row['seconds']):>7.0f}   {per_seed}")  # fmt: skip
    for name, gap in summary["gaps"].items():
        per_seed = " ".join(f"{v:+.2f}" for v in gap["per_seed"])
        lines.append(f"gap {name:<36}{gap['mean']:>+14.2f}{_fmt(gap['std']):>7}{gap['min']:>+7.2f}"
                     f"{gap['max']:>+7.2f}{'':>7}   {per_seed}")  # fmt: skip
    load = result["load"]
    lines.append(f"load (1-min average, {len(load)} samples between runs): min {min(load):.2f} mean "
                 f"{statistics.fmean(load):.2f} max {max(load):.2f} on {os.cpu_count()} cores; torch threads "
                 f"{setting['threads']}, workers {setting['workers']}")  # fmt: skip
    lines.append(f"wall time {result['wall_seconds']:.0f} s (teacher {result['teacher']['seconds']:.0f} s, cache "
                 f"fill {sum(result['cache_fill_seconds'].values()):.0f} s)")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (defaults: the full run, about 20 minutes on 2 shared CPU cores)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="tiny_student_mpii")
    parser.add_argument("--teacher", default="tiny_teacher_mpii")
    parser.add_argument("--images", type=int, default=480, help="synthetic training images (one person each)")
    parser.add_argument("--val-images", type=int, default=64)
    parser.add_argument("--init", choices=("gt", "scratch"), default="gt",
                        help="arms start from a ground-truth student of their seed (FPD's fine-tuning) or fresh")
    parser.add_argument("--pretrain-epochs", type=int, default=6, help="epochs of the ground-truth init student")
    parser.add_argument("--epochs", type=int, default=8, help="student epochs")
    parser.add_argument("--milestones", type=int, nargs="*", default=[6], help="student lr x0.1 at these epochs")
    parser.add_argument("--teacher-pretrain-epochs", type=int, default=6, help="teacher epochs on plain crops")
    parser.add_argument("--teacher-epochs", type=int, default=12, help="then teacher epochs with augmentation")
    parser.add_argument("--teacher-milestones", type=int, nargs="*", default=[10])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, default=3, help="N seeds, each run in every arm")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds FIRST..FIRST+N-1 (to add seeds to a run)")
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers per run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep data, teacher, caches and runs here")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the result as JSON")
    args = parser.parse_args(argv)
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown or not args.arms:
        parser.error(f"--arms: unknown {unknown}; choose from {', '.join(ARMS)}")
    args.arms = [a for a in ARMS if a in args.arms]  # table order, each once
    if args.seeds < 1 or args.epochs < 1 or args.teacher_epochs < 1:
        parser.error("--seeds, --epochs and --teacher-epochs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print its table and return the result (also written to ``--json-out``)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_fidelity_"))
    root = generate_dataset(work / "mpii", "mpii", scenes(args.images, args.val_images))
    load = [os.getloadavg()[0]]
    tic = time.perf_counter()
    teacher, teacher_pckh = train_teacher(args, root, work)
    teacher_seconds = time.perf_counter() - tic
    caches = {cache_name(arm): work / cache_name(arm) for arm in args.arms if arm.startswith("cache")}
    fill = {name: fill_cache(args, root, folder, teacher, flip=name == "cache") for name, folder in caches.items()}
    load.append(os.getloadavg()[0])

    runs, inits = [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        init = None
        if args.init == "gt":
            tic = time.perf_counter()
            init, pckh = pretrain_student(args, root, work / "runs" / "init" / str(seed), seed)
            inits.append({"seed": seed, "pckh": pckh, "seconds": time.perf_counter() - tic})
            print(f"  seed {seed} {'init (gt)':<13} PCKh@0.5 {pckh:6.2f}  {inits[-1]['seconds']:5.0f} s", flush=True)
        for arm in args.arms:  # alternating within the seed: a load change hits every arm of the seed alike
            recipe = config_from_dict(student_recipe(args, root, work / "runs" / arm / str(seed), arm, seed,
                                                     teacher, caches, init))  # fmt: skip
            tic = time.perf_counter()
            pckh = train(recipe, overwrite=True).metrics["Mean"]
            runs.append({"arm": arm, "seed": seed, "pckh": pckh, "seconds": time.perf_counter() - tic})
            load.append(os.getloadavg()[0])
            print(f"  seed {seed} {arm:<13} PCKh@0.5 {pckh:6.2f}  {runs[-1]['seconds']:5.0f} s  load {load[-1]:.2f}",
                  flush=True)  # fmt: skip

    setting = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json_out"}
    result = {
        "setting": setting,
        "teacher": {"preset": args.teacher, "pckh": teacher_pckh, "seconds": teacher_seconds, "flip_test": True},
        "train_persons": len(load_mpii(root, "train", input_aspect=get_preset(args.student).input_aspect)),
        "cache_fill_seconds": fill,
        "runs": runs,
        "init": inits,
        "summary": summarize(runs, args.arms),
        "load": load,
        "wall_seconds": time.perf_counter() - started,
    }
    publish(result, format_table(result), args.json_out)
    return result


if __name__ == "__main__":
    main()
