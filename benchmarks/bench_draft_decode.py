"""JPEG draft decoding vs full decodes: the teacher's cached heatmaps, its inputs, and the crop speed gained.

Each case infers the same persons twice into two fresh caches with ``run_teacher_inference``: from full decodes
(the default) and with ``draft_decode=True``, and compares what the caches hold. Only the persons whose crop is
drafted (JPEG reduction k > 1) are inferred: for the others both paths decode the same pixels. Reported:
* input: |full - draft| of the uint8 crops, in grey levels (max, 99th percentile, mean);
* heatmaps: |full - draft| of the stored (float16) flip-test heatmaps, max and mean, next to the mean range
  (max - min) of one map;
* peaks: the argmax moved, per joint, in heatmap pixels (mean, max, share of joints that moved at all), and the
  decoded teacher joints (HRNet rule, as stored) moved, in heatmap pixels;
* speed: crops/s of ``CropDataset`` (decode + crop + tensor, what the inference workers do) over all persons of
  the case, full then draft and draft then full in turn, ``--repeats`` times; the median of the ratios.

Data: the 5 real MPII validation photos (1280x720, 854x480) and their 5 persons; the 4 real COCO val2017 photos
(640x~400) and their 12 annotated persons, and the same photos enlarged 2x (bicubic, re-encoded at quality 90).
Teachers: no trained real teacher is available offline. The tiny demo teachers load the demo's weights
(``demo_out/teachers/<preset>/weights.pt``, trained on the demo's synthetic images) when they exist. The
real-size ``hg8_256`` and ``hrnet_w48_256x192`` have seeded random weights with PyTorch's default conv init
(untrained; HRNet's own init gives maps that float16 stores as zeros): they show how much an input change moves
a real-size network's output, not how a trained teacher's peaks move.

Usage: ``.venv/bin/python benchmarks/bench_draft_decode.py [--repeats 5] [--threads 2]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.presets import ModelPreset
from pipeline.data.coco import load_coco
from pipeline.data.crops import CropDataset, crop_record
from pipeline.data.images import load_image
from pipeline.data.mpii import load_mpii
from pipeline.records import PIXEL_STD, SampleRecord
from pipeline.runtime import load_model, set_torch_threads
from pipeline.teacher.inference import run_teacher_inference, teacher_provenance
from pipeline.teacher.plan import plan_inference
from pipeline.teacher.records import cached_records
from storage.cache import TeacherTargetCache

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / ".." / "shared" / "data" / "real"
DEMO_TEACHERS = REPO / "demo_out" / "teachers"


def enlarged(records: list[SampleRecord], folder: Path, factor: int) -> list[SampleRecord]:
    """The records' photos enlarged ``factor`` times (bicubic, JPEG quality 90) and the records moved with them."""
    out = []
    for record in records:
        if not (folder / record.image).exists():
            with Image.open(record.path) as image:
                size = (image.width * factor, image.height * factor)
                image.resize(size, Image.Resampling.BICUBIC).save(folder / record.image, quality=90)
        out.append(replace(record, root=folder, center=tuple(v * factor for v in record.center),
                           scale=tuple(v * factor for v in record.scale), joints=record.joints * factor))  # fmt: skip
    return out


def draft_factor(record: SampleRecord, input_size: tuple[int, int]) -> int:
    return load_image(record.path, draft_scale=input_size[0] / (float(record.scale[0]) * PIXEL_STD)).draft_factor


def cached(
    model: torch.nn.Module, preset: ModelPreset, records: list[SampleRecord], folder: Path, draft: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(heatmaps (N, K, H, W), teacher joints (N, K, 2)) that a fresh cache holds for ``records``, in their order."""
    cache = TeacherTargetCache(folder).open_or_create(teacher_provenance(preset, "0" * 64, draft_decode=draft))
    # float16 shards (lzf): the differences measured are the teacher's, not those of the 8-bit default's rounding.
    report = run_teacher_inference(model, preset, plan_inference(records, cache), cache, batch_size=8, device="cpu",
                                   num_workers=0, progress=False, draft_decode=draft, compression="lzf")  # fmt: skip
    assert report.new == len(records) and report.failed == 0
    data = cache.dataset()
    position = {r.key: i for i, r in enumerate(cached_records(data.index))}
    items = [data[position[r.key]] for r in records]
    return np.stack([i["heatmaps"].numpy() for i in items]), np.stack([i["teacher_joints"].numpy() for i in items])


def argmax_xy(heatmaps: np.ndarray) -> np.ndarray:
    """(N, K, 2) integer (x, y) of each map's maximum."""
    flat = heatmaps.reshape(*heatmaps.shape[:2], -1).argmax(-1)
    return np.stack([flat % heatmaps.shape[-1], flat // heatmaps.shape[-1]], axis=-1).astype(np.float64)


def crop_rate(records: list[SampleRecord], input_size: tuple[int, int], draft: bool) -> float:
    """Crops per second of ``CropDataset`` over ``records`` (one pass)."""
    data = CropDataset(records, input_size, "RGB", use_draft=draft)
    start = time.perf_counter()
    for i in range(len(data)):
        data[i]
    return len(data) / (time.perf_counter() - start)


def speed(records: list[SampleRecord], input_size: tuple[int, int], repeats: int) -> tuple[float, float, float]:
    """Median full and draft crops/s and the median of the per-repeat ratios draft / full."""
    crop_rate(records, input_size, True)  # warm the file cache
    full, draft = [], []
    for r in range(repeats):
        # Alternate which goes first: the machine's load drifts between passes more than one pass takes.
        for use_draft in (False, True) if r % 2 == 0 else (True, False):
            (draft if use_draft else full).append(crop_rate(records, input_size, use_draft))
    ratios = [d / f for f, d in zip(full, draft, strict=True)]
    return statistics.median(full), statistics.median(draft), statistics.median(ratios)


def measure(name: str, preset_name: str, records: list[SampleRecord], work: Path, repeats: int) -> None:
    weights = DEMO_TEACHERS / preset_name / "weights.pt"
    weights = weights if weights.exists() else None
    torch.manual_seed(0)
    preset, model = load_model(preset_name, weights)
    if weights is None:
        # HRNet's own initialisation (every conv std 0.001) gives maps of ~1e-10, stored by float16 as 0: nothing to
        # compare. PyTorch's default conv init (the hourglass's own anyway) gives HRNet maps of 0.1-0.4.
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.reset_parameters()
    teacher = f"{preset_name} ({'demo weights' if weights else 'seeded random weights, default init, untrained'})"
    factors = [draft_factor(r, preset.input_size) for r in records]
    drafted = [r for r, k in zip(records, factors, strict=True) if k > 1]
    full_rate, draft_rate, ratio = speed(records, preset.input_size, repeats)
    print(f"\n{name}, {teacher}, input {preset.input_size[0]}x{preset.input_size[1]}: {len(drafted)} of "
          f"{len(records)} crops drafted (k: {sorted(set(factors))})")  # fmt: skip
    print(f"  speed, crops/s: full {full_rate:.1f}, draft {draft_rate:.1f}, draft / full {ratio:.2f}x "
          f"(medians of {repeats})")  # fmt: skip
    if not drafted:
        return
    gaps = [np.abs(np.asarray(crop_record(r, preset.input_size)[1], dtype=np.int16)
                   - np.asarray(crop_record(r, preset.input_size, use_draft=True)[1], dtype=np.int16))
            for r in drafted]  # fmt: skip
    maxima, p99 = [int(g.max()) for g in gaps], np.percentile(np.concatenate([g.ravel() for g in gaps]), 99)
    print(f"  input, grey levels: max {max(maxima)} (per crop {min(maxima)}-{max(maxima)}), 99th percentile "
          f"{p99:.0f}, mean {np.mean([g.mean() for g in gaps]):.2f}")  # fmt: skip
    full_maps, full_joints = cached(model, preset, drafted, work / "full", draft=False)
    draft_maps, draft_joints = cached(model, preset, drafted, work / "draft", draft=True)
    diff = np.abs(full_maps.astype(np.float64) - draft_maps)
    flat = full_maps.reshape(*full_maps.shape[:2], -1).astype(np.float64)
    span = (flat.max(-1) - flat.min(-1)).mean()  # the peak height of a trained teacher's maps, whose floor is ~0
    moved = np.hypot(*(argmax_xy(full_maps) - argmax_xy(draft_maps)).transpose(2, 0, 1))
    decoded = np.hypot(*(full_joints.astype(np.float64) - draft_joints).transpose(2, 0, 1))
    print(f"  heatmaps: max |diff| {diff.max():.3g}, mean |diff| {diff.mean():.3g}; mean map range {span:.3g} "
          f"(max |diff| / range {diff.max() / span:.2f}); {full_maps.shape[1]} joints, "
          f"{full_maps.shape[3]}x{full_maps.shape[2]} px")  # fmt: skip
    print(f"  argmax shift, heatmap px: mean {moved.mean():.3f}, max {moved.max():.2f}, joints moved "
          f"{(moved > 0).mean():.1%}; decoded joints: mean {decoded.mean():.3f}, max {decoded.max():.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REAL, help="the real sample data folder")
    parser.add_argument("--repeats", type=int, default=5, help="alternating speed passes per decoding")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (pinned)")
    args = parser.parse_args()
    set_torch_threads(args.threads)
    root = args.data / "coco"
    coco = load_coco(root, "val2017", annotation_file=root / "annotations" / "person_keypoints_val2017_subset4.json")
    mpii = load_mpii(args.data / "mpii", "valid_first5")
    print(f"{len(mpii)} MPII and {len(coco)} COCO val2017 persons, torch threads {torch.get_num_threads()}, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "x2").mkdir()
        big = enlarged(coco, Path(tmp) / "x2", 2)
        cases = [("MPII 1280x720", "tiny_teacher_mpii", mpii), ("MPII 1280x720", "hg8_256", mpii),
                 ("COCO 640x~400", "tiny_teacher_coco", coco), ("COCO x2 1280x~800 q90", "tiny_teacher_coco", big),
                 ("COCO x2 1280x~800 q90", "hrnet_w48_256x192", big)]  # fmt: skip
        for i, (name, preset_name, records) in enumerate(cases):
            (Path(tmp) / f"case{i}").mkdir()
            measure(name, preset_name, records, Path(tmp) / f"case{i}", args.repeats)


if __name__ == "__main__":
    main()
