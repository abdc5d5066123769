"""Person-detector throughput: decode alone, the detector alone at batch 1 and batch B, and ``detect_folders`` at
its default batch (1 on a CPU, 8 on CUDA).

"Detector alone" times the torchvision model's forward (resize, backbone, RPN, box head, NMS) in inference mode
on images already decoded to tensors; "stage" times ``pipeline.detection.run.detect_folders`` end to end into a
fresh store (listing, fingerprints, decoding in DataLoader workers, the same forward, person selection, parts
written). Images: the real COCO and MPII sample photos (640x425 .. 1280x720 JPEGs), copied under distinct names
until ``--images`` is reached. The three are run in turn, ``--repeats`` times, and medians printed.

Weights: torchvision's published COCO weights when they are in its cache (``$TORCH_HOME/hub/checkpoints``),
else random ones, which the output says: with random weights no box passes the score threshold, so NMS and the
box post-processing cost less than with trained weights, and the rates are an upper bound.

Run: ``.venv/bin/python benchmarks/bench_detector.py [--models fasterrcnn_mobilenet_v3_large_fpn]
[--images 8] [--batch-size 4] [--threads 2] [--repeats 3] [--device cpu]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.detectors import CPU_DETECTOR, create_detector
from pipeline.data.images import load_image
from pipeline.detection.run import default_batch_size, detect_folders
from pipeline.detection.settings import DetectorSettings
from pipeline.detection.weights import load_detector, torchvision_weights_path
from pipeline.runtime import resolve_device

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


def photos(out: Path, count: int) -> list[Path]:
    """``count`` copies of the real sample photos (or noise images when the samples are absent)."""
    out.mkdir(parents=True)
    sources = sorted(REAL.glob("*/images/**/*.jpg"))
    paths = []
    for i in range(count):
        path = out / f"photo_{i:04d}.jpg"
        if sources:
            shutil.copy(sources[i % len(sources)], path)
        else:
            from PIL import Image

            pixels = np.random.default_rng(i).integers(0, 255, (480, 640, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def decode(paths: list[Path]) -> tuple[float, list[torch.Tensor]]:
    """Images per second of decoding (upright, to float CHW tensors), and the tensors."""
    start = time.perf_counter()
    images = [torch.from_numpy(np.asarray(load_image(p, exif_orientation=True).image).copy()).permute(2, 0, 1)
              .float().div_(255) for p in paths]  # fmt: skip
    return len(paths) / (time.perf_counter() - start), images


def detector_alone(model: torch.nn.Module, images: list[torch.Tensor], batch_size: int, device: torch.device,
                   amp: bool) -> float:  # fmt: skip
    """Images per second of the detector's forward on decoded images (the first batch, a warm-up, not counted)."""
    on_device = [i.to(device) for i in images]
    autocast = torch.autocast("cuda", dtype=torch.float16, enabled=amp)
    with torch.inference_mode(), autocast:
        model(on_device[:batch_size])
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, len(on_device), batch_size):
            model(on_device[i : i + batch_size])
        if device.type == "cuda":
            torch.cuda.synchronize()
    return len(on_device) / (time.perf_counter() - start)


def stage(folder: Path, store: Path, settings: DetectorSettings, batch_size: int, workers: int,
          device: torch.device) -> float:  # fmt: skip
    """Images per second of ``detect_folders`` into a fresh store."""
    shutil.rmtree(store, ignore_errors=True)
    run = detect_folders([(folder, True)], store, settings, device=device, batch_size=batch_size, num_workers=workers,
                         progress=False)  # fmt: skip
    return run.folders[0].detected / run.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[CPU_DETECTOR])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp_options = (False, True) if device.type == "cuda" else (False,)
    default = default_batch_size(device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = photos(Path(tmp) / "photos", args.images)
        sizes = sorted({tuple(np.asarray(load_image(p).image).shape[1::-1]) for p in paths})
        print(f"{len(paths)} photos, sizes {sizes}; device {device}, {args.threads} threads, {args.workers} "
              f"decoding workers, medians of {args.repeats}")  # fmt: skip
        for name in args.models:
            weights = torchvision_weights_path(name)
            kind = "published COCO weights"
            if not weights.is_file():
                weights = Path(tmp) / f"{name}-random.pth"
                torch.save(create_detector(name, score_threshold=0.7, nms_threshold=0.5,
                                           detections_per_image=100).state_dict(), weights)  # fmt: skip
                kind = "RANDOM weights (no box passes the threshold: post-processing cheaper than trained weights)"
            settings = DetectorSettings(model=name, weights=str(weights))
            model = load_detector(name, weights, score_threshold=settings.score_threshold,
                                  nms_threshold=settings.nms_threshold, detections_per_image=100)  # fmt: skip
            model = model.to(device)
            rows: dict[str, list[float]] = {}
            for _ in range(args.repeats):
                rate, images = decode(paths)
                rows.setdefault("decode alone", []).append(rate)
                for amp in amp_options:
                    tag = " fp16" if amp else ""
                    rows.setdefault(f"detector alone, batch 1{tag}", []).append(
                        detector_alone(model, images, 1, device, amp))
                    rows.setdefault(f"detector alone, batch {args.batch_size}{tag}", []).append(
                        detector_alone(model, images, args.batch_size, device, amp))
                rows.setdefault(f"detect stage, batch {default}", []).append(
                    stage(Path(tmp) / "photos", Path(tmp) / "store", settings, default, args.workers, device))
            print(f"\n{name} ({kind}; input {model.transform.min_size[0]}/{model.transform.max_size})")
            print(f"  {'':<34}{'images/s':>10}{'ms/image':>10}")
            for label, rates in rows.items():
                rate = statistics.median(rates)
                print(f"  {label:<34}{rate:>10.2f}{1000 / rate:>10.0f}")
            alone = statistics.median(rows[f"detector alone, batch {default}"])
            print(f"  stage / detector alone at batch {default} (the stage's default here): "
                  f"{statistics.median(rows[f'detect stage, batch {default}']) / alone:.0%} (the stage also "
                  "loads and hashes the weights and runs its first, slower batch)")  # fmt: skip


if __name__ == "__main__":
    main()
