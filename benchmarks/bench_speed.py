"""Teacher vs student speed: images/s of each pair's forward, side by side, beside the ratio of their GFLOPs.

For each (teacher, student) pair, each execution mode and each batch size, the two networks are timed in
alternation (teacher first in even repeats, student first in odd ones), so that a load change on a shared machine
hits both alike; each timing runs enough forwards to last about ``--min-seconds``; the figure is the median over
``--repeats``. The speed-up is student images/s / teacher images/s, and it is set beside the GFLOP ratio of
``fpd models`` (``models.complexity``): the fraction is how much of the arithmetic saving the clock shows.

What is timed is one forward of ready input tensors (random, of the preset's input size) in inference mode, the
deployed case: no decoding or cropping, no flip test (which doubles both sides alike).

Modes:
- ``eager``: float32, contiguous tensors.
- ``channels_last``: model and input in channels-last memory format (what the pipeline's inference uses).
- ``compile``: ``torch.compile`` of the channels-last model (inductor); ``n/a`` with the reason if it fails.
- ``onnxruntime``: the file ``pipeline.export.export_onnx`` writes, in an ONNX Runtime CPU session (CPU only).
- ``bf16`` and ``fp16`` (CUDA only): channels-last under autocast.

    .venv/bin/python benchmarks/bench_speed.py --threads 2 --json-out speed.json     # real presets, CPU
    .venv/bin/python benchmarks/bench_speed.py --device cuda --batch-sizes 1 64       # on a GPU
    .venv/bin/python benchmarks/bench_speed.py --smoke                                # tiny presets, seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from benchmarks.output import publish
from models import complexity, create_from_preset, get_preset
from models.presets import ModelPreset
from pipeline.flip import final_heatmaps
from pipeline.runtime import resolve_device

PAIRS = (("hg8_256", "hg4_128"), ("hrnet_w48_256x192", "hrnet_w32_256x192"))
"""FPD's two (teacher, student) pairs: MPII hourglasses and COCO HRNets."""
SMOKE_PAIRS = (("tiny_teacher_mpii", "tiny_student_mpii"),)
CPU_MODES = ("eager", "channels_last", "compile", "onnxruntime")
CUDA_MODES = ("eager", "channels_last", "compile", "bf16", "fp16")

Forward = Callable[[torch.Tensor], object]


def realistic_weights(preset: ModelPreset, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The preset's network in eval mode with seeded random weights whose heatmaps are of order 1, as a trained
    network's: convolutions re-initialised with He's rule, the output layers scaled so that the maxima are about 1.

    HRNet's and SimpleBaseline's own initialisation (std 0.001) gives heatmaps of about 1e-8, on which any graph
    passes a 1e-4 comparison and the joints decode from noise; the speed is the same either way.
    """
    torch.manual_seed(0)
    model = create_from_preset(preset).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        with torch.inference_mode():
            scale = final_heatmaps(model(torch.randn(2, 3, *preset.input_hw))).abs().max()
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.out_channels == preset.num_joints:
                module.weight.div_(scale)
    return model.to(device)


def prepare(model: torch.nn.Module, preset: ModelPreset, mode: str, device: torch.device, threads: int,
            work: Path) -> Forward:  # fmt: skip
    """A function running one forward of ``model`` (``preset``'s network, eval mode) in ``mode`` on a ready batch;
    ``onnxruntime`` exports it to ``work/<preset>.onnx`` first.

    Raises:
        Exception: whatever the mode's machinery raises (compile, export); the caller reports it as ``n/a``.
    """
    if mode == "onnxruntime":
        from pipeline.export import export_onnx, onnx_session

        path = work / f"{preset.name}.onnx"
        export_onnx(model, preset, path)
        session = onnx_session(path, threads)
        return lambda batch: session.run(None, {"image": batch.numpy()})
    if mode != "eager":
        model = model.to(memory_format=torch.channels_last)
    if mode == "compile":
        model = torch.compile(model)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)

    def forward(batch: torch.Tensor) -> object:
        if mode != "eager":
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
            return final_heatmaps(model(batch))

    return forward


def check_onnx(model: torch.nn.Module, preset: ModelPreset, work: Path, threads: int) -> dict[str, object]:
    """The exported file of ``prepare`` against the eager model (``pipeline.export.verify``, batch 1 and 4)."""
    from pipeline.export import DEFAULT_TOLERANCE, load_runner, verify

    torch.manual_seed(1)
    crops = torch.randn(4, 3, *preset.input_hw)
    result = verify(model, load_runner("onnx", work / f"{preset.name}.onnx", threads), crops, preset,
                    DEFAULT_TOLERANCE)  # fmt: skip
    return {"max_abs_diff": result.max_abs_diff, "joints_identical": result.joints_identical, "passed": result.passed}


def timed(forward: Forward, batch: torch.Tensor, iterations: int, device: torch.device) -> float:
    """Seconds for ``iterations`` forwards of ``batch`` (CUDA synchronised before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        forward(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure_pair(
    forwards: dict[str, Forward], inputs: dict[str, torch.Tensor], repeats: int, min_seconds: float,
    device: torch.device,
) -> dict[str, float]:  # fmt: skip
    """Median images/s of each network, timed in alternation (see the module notes)."""
    iterations = {}
    for name, forward in forwards.items():
        forward(inputs[name])  # warm-up: allocator, compile, ORT's first run
        one = max(timed(forward, inputs[name], 1, device), 1e-6)
        iterations[name] = max(1, round(min_seconds / one))
    rates: dict[str, list[float]] = {name: [] for name in forwards}
    names = list(forwards)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            seconds = timed(forwards[name], inputs[name], iterations[name], device)
            rates[name].append(iterations[name] * len(inputs[name]) / seconds)
    return {name: statistics.median(values) for name, values in rates.items()}


def run(args: argparse.Namespace) -> dict:
    """Every pair x mode x batch size; the result (rows plus setting and machine load)."""
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_speed_"))
    rows, load = [], [os.getloadavg()[0]]
    for teacher_name, student_name in args.pairs:
        presets = {"teacher": get_preset(teacher_name), "student": get_preset(student_name)}
        gflops = {role: complexity(create_from_preset(p), p.input_hw).gflops for role, p in presets.items()}
        for mode in args.modes:
            base = {"teacher": teacher_name, "student": student_name, "mode": mode,
                    "teacher_gflops": gflops["teacher"], "student_gflops": gflops["student"],
                    "gflop_ratio": gflops["teacher"] / gflops["student"]}  # fmt: skip
            try:
                models = {role: realistic_weights(p, device) for role, p in presets.items()}
                forwards = {role: prepare(models[role], p, mode, device, args.threads, work)
                            for role, p in presets.items()}  # fmt: skip
                if mode == "onnxruntime":  # the exported files compute what PyTorch computes
                    base["onnx_check"] = {role: check_onnx(models[role], p, work, args.threads)
                                          for role, p in presets.items()}  # fmt: skip
            except Exception as exc:  # a mode that cannot run here is reported, not fatal
                reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                rows += [{**base, "batch": b, "status": f"n/a ({reason[:160]})"} for b in args.batch_sizes]
                print(f"  {teacher_name} / {student_name} {mode}: n/a ({reason[:160]})", flush=True)
                continue
            for batch in args.batch_sizes:
                inputs = {role: torch.randn(batch, 3, *p.input_hw, device=device) for role, p in presets.items()}
                try:
                    rate = measure_pair(forwards, inputs, args.repeats, args.min_seconds, device)
                except Exception as exc:  # e.g. compile failing at its first call
                    rows.append({**base, "batch": batch, "status": f"n/a ({type(exc).__name__}: {exc!s:.160})"})
                    print(f"  {teacher_name} / {student_name} {mode} batch {batch}: n/a ({exc!s:.160})", flush=True)
                    continue
                speedup = rate["student"] / rate["teacher"]
                rows.append({**base, "batch": batch, "status": "ok", "teacher_images_per_s": rate["teacher"],
                             "student_images_per_s": rate["student"], "speedup": speedup,
                             "fraction_of_gflop_ratio": speedup / base["gflop_ratio"]})  # fmt: skip
                load.append(os.getloadavg()[0])
                print(f"  {teacher_name} / {student_name} {mode} batch {batch}: {rate['teacher']:.2f} vs "
                      f"{rate['student']:.2f} images/s, x{speedup:.2f}  (load {load[-1]:.2f})", flush=True)  # fmt: skip
    setting = {"device": str(device), "threads": args.threads, "repeats": args.repeats,
               "min_seconds": args.min_seconds, "batch_sizes": list(args.batch_sizes), "modes": list(args.modes),
               "torch": torch.__version__, "cpu_count": os.cpu_count(),
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None}  # fmt: skip
    return {"setting": setting, "rows": rows, "load": load}


def format_table(result: dict) -> str:
    """The printed report: one line per pair, mode and batch."""
    setting, load = result["setting"], result["load"]
    lines = [
        f"{setting['device_name'] or setting['device']}, {setting['threads']} threads, torch {setting['torch']}; "
        f"median of {setting['repeats']} alternating repeats; one forward of ready tensors, no flip test",
        f"{'teacher -> student':<42}{'mode':<15}{'batch':>6}{'teacher img/s':>15}{'student img/s':>15}"
        f"{'speed-up':>10}{'GFLOPs x':>10}{'fraction':>10}",
    ]
    for row in result["rows"]:
        pair = f"{row['teacher']} -> {row['student']}"
        head = f"{pair:<42}{row['mode']:<15}{row['batch']:>6}"
        if row["status"] != "ok":
            lines.append(f"{head}   {row['status']}")
            continue
        lines.append(f"{head}{row['teacher_images_per_s']:>15.2f}{row['student_images_per_s']:>15.2f}"
                     f"{row['speedup']:>9.2f}x{row['gflop_ratio']:>9.2f}x"
                     f"{row['fraction_of_gflop_ratio']:>9.0%}")  # fmt: skip
    checked = {(r["teacher"], r["student"]): r["onnx_check"] for r in result["rows"] if r.get("onnx_check")}
    for (teacher, student), check in checked.items():
        parts = [f"{name} max |diff| {check[role]['max_abs_diff']:.2g}, joints "
                 f"{'identical' if check[role]['joints_identical'] else 'DIFFER'}"
                 for role, name in (("teacher", teacher), ("student", student))]  # fmt: skip
        lines.append(f"ONNX files vs PyTorch (batch 1 and 4, tolerance 1e-4): {'; '.join(parts)}")
    lines.append(f"load (1-min average, {len(load)} samples): min {min(load):.2f} mean {statistics.fmean(load):.2f} "
                 f"max {max(load):.2f} on {setting['cpu_count']} cores")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", metavar="TEACHER:STUDENT", help="presets (default FPD's two pairs)")
    parser.add_argument("--modes", nargs="+", help=f"default CPU {' '.join(CPU_MODES)}; CUDA {' '.join(CUDA_MODES)}")
    parser.add_argument("--batch-sizes", nargs="+", type=int, help="default 1 8 on CPU, 1 64 on CUDA")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="length of one timing (default 1 s)")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="torch and ORT threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny presets, batch 1 and 2, 1 repeat, no compile")
    parser.add_argument("--json-out", type=Path, help="also write the result as JSON")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.smoke:
        args.pairs = args.pairs or [":".join(p) for p in SMOKE_PAIRS]
        args.batch_sizes = args.batch_sizes or [1, 2]
        args.modes = args.modes or [m for m in (CUDA_MODES if cuda else CPU_MODES) if m != "compile"]
        args.repeats, args.min_seconds = 1, min(args.min_seconds, 0.05)
    args.pairs = [tuple(p.split(":")) for p in args.pairs] if args.pairs else list(PAIRS)
    if any(len(p) != 2 for p in args.pairs):
        parser.error("--pairs: give TEACHER:STUDENT")
    args.modes = args.modes or list(CUDA_MODES if cuda else CPU_MODES)
    known = CUDA_MODES if cuda else CPU_MODES
    if unknown := [m for m in args.modes if m not in known]:
        parser.error(f"--modes: {unknown} not available on {args.device}; choose from {', '.join(known)}")
    args.batch_sizes = args.batch_sizes or ([1, 64] if cuda else [1, 8])
    if args.repeats < 1 or min(args.batch_sizes) < 1 or args.threads < 1:
        parser.error("--repeats, --batch-sizes and --threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print its table and return the result (also written to ``--json-out``)."""
    args = parse_args(argv)
    result = run(args)
    publish(result, format_table(result), args.json_out)
    return result


if __name__ == "__main__":
    main()
