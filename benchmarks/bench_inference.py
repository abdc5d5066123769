"""Teacher inference throughput: the model's flip-test forward alone vs the whole inference-to-cache pipeline.

Same teacher, batch size and device for both. "Model alone" times ``flip_test`` (one forward of the doubled
batch, inference mode, channels-last, bf16 autocast on CUDA) on ready-made input tensors. "Pipeline" times
``run_teacher_inference`` end to end into a fresh cache: planning (stat + fingerprint of every image), JPEG
decoding and cropping in DataLoader workers, the same forward, decoding joints and writing compressed shards.
The images are the real COCO and MPII sample photos (640x425 .. 1280x720 JPEGs), copied under distinct names
until ``--images`` is reached, scanned as an unlabeled folder (one whole-image person each).

Run: ``.venv/bin/python -m benchmarks.bench_inference [--preset tiny_teacher_mpii] [--batch-size 32]
[--images 256] [--workers 1] [--repeats 5] [--device cpu] [--threads N] [--json-out FILE]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.output import publish
from models.joints import get_joint_set
from models.presets import ModelPreset
from pipeline.data.folders import scan_folder
from pipeline.flip import flip_test
from pipeline.runtime import load_model, resolve_device
from pipeline.teacher.inference import run_teacher_inference, teacher_provenance
from pipeline.teacher.plan import plan_inference
from storage.cache import TeacherTargetCache

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


def model_alone(
    model: torch.nn.Module, preset: ModelPreset, batch_size: int, images: int, device: torch.device
) -> float:
    """Images per second of the flip-test forward on ready tensors (one warm-up batch not counted)."""
    perm = get_joint_set(preset.joint_set).flip_permutation()
    w, h = preset.input_size
    batch = torch.randn(batch_size, 3, h, w, device=device).contiguous(memory_format=torch.channels_last)
    on_cuda = device.type == "cuda"
    steps = max(1, images // batch_size)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
        flip_test(model, batch, perm).float().cpu()
        start = time.perf_counter()
        for _ in range(steps):
            flip_test(model, batch, perm).float().cpu()  # .cpu(): the pipeline copies heatmaps back too
    return steps * batch_size / (time.perf_counter() - start)


def pipeline(
    model: torch.nn.Module, preset: ModelPreset, folder: Path, cache_dir: Path, batch_size: int, workers: int,
    device: torch.device,
) -> tuple[float, int]:  # fmt: skip
    records = scan_folder(folder, input_aspect=preset.input_aspect).records
    cache = TeacherTargetCache(cache_dir).open_or_create(teacher_provenance(preset, "0" * 64))
    start = time.perf_counter()
    plan = plan_inference(records, cache)  # timed: planning stats and fingerprints every image
    report = run_teacher_inference(model, preset, plan, cache, batch_size=batch_size, device=device,
                                   num_workers=workers, progress=False)  # fmt: skip
    return report.new / (time.perf_counter() - start), report.new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny_teacher_mpii")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of both arms (default torch's, one per core; on the CPU, cores minus "
                             "--workers gives each decoding worker a core of its own)")  # fmt: skip
    parser.add_argument("--json-out", type=Path, help="also write the runs and medians as JSON")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset, model = load_model(args.preset, None)
    model = model.eval().to(device).to(memory_format=torch.channels_last)
    photos = sorted([*(REAL / "coco" / "images" / "val2017").glob("*.jpg"), *(REAL / "mpii" / "images").glob("*.jpg")])
    alone, piped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for i in range(args.images):
            shutil.copyfile(photos[i % len(photos)], folder / f"{i:05d}_{photos[i % len(photos)].name}")
        # Alternate the two measurements and compare each pipeline run with the model run just before it: on a
        # shared machine the load changes between runs more than the pipeline's own overhead.
        for r in range(args.repeats):
            alone.append(model_alone(model, preset, args.batch_size, args.images, device))
            rate, count = pipeline(model, preset, folder, Path(tmp) / f"cache{r}", args.batch_size, args.workers,
                                   device)  # fmt: skip
            piped.append(rate)
    ratios = [p / a for a, p in zip(alone, piped, strict=True)]
    print(f"teacher {args.preset}, batch {args.batch_size}, {count} images, {args.workers} worker(s), "
          f"device {device} ({torch.get_num_threads()} torch threads), {args.repeats} alternating runs")  # fmt: skip
    print(f"{'run':>4} {'model alone img/s':>18} {'pipeline img/s':>15} {'pipeline / model':>17}")
    for r, (a, p, q) in enumerate(zip(alone, piped, ratios, strict=True)):
        print(f"{r:>4} {a:18.1f} {p:15.1f} {q:17.1%}")
    print(f"{'median':>6} {statistics.median(alone):16.1f} {statistics.median(piped):15.1f} "
          f"{statistics.median(ratios):17.1%}")  # fmt: skip
    setting = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json_out"}
    result = {"setting": {**setting, "device": str(device), "threads": torch.get_num_threads(), "images": count},
              "model_alone_img_s": alone, "pipeline_img_s": piped, "ratio": ratios,
              "median": {"model_alone_img_s": statistics.median(alone), "pipeline_img_s": statistics.median(piped),
                         "ratio": statistics.median(ratios)}}  # fmt: skip
    publish(result, None, args.json_out)


if __name__ == "__main__":
    main()
