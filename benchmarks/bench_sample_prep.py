"""Samples/s of training-sample preparation on the real COCO and MPII images, with and without JPEG draft mode.

One sample = decode the image, crop the person box to the model input (bilinear affine warp), move the joints
into the crop and draw the Gaussian targets with ``pipeline.codec.HeatmapCodec``. The floor is the plain
Pillow decode of the same files (no crop, no targets): what draft mode can beat, since it decodes less.

Usage: ``python benchmarks/bench_sample_prep.py [--repeats 5] [--data ../shared/data/real]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import geometry
from pipeline.codec import HeatmapCodec
from pipeline.data.coco import load_coco
from pipeline.data.crops import crop_record
from pipeline.data.images import load_image
from pipeline.data.mpii import load_mpii
from pipeline.records import PIXEL_STD, SampleRecord

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


def prepare(record: SampleRecord, codec: HeatmapCodec, *, use_draft: bool) -> np.ndarray:
    """One training sample: crop array and targets (returned so nothing is optimised away)."""
    matrix, crop = crop_record(record, codec.input_size, use_draft=use_draft)
    joints = geometry.apply_affine(record.joints, matrix)
    targets, _ = codec.encode(joints, record.visibility)
    return np.asarray(crop).mean() + targets.sum()


def pillow_decode(record: SampleRecord) -> float:
    with Image.open(record.path) as image:
        image.load()
        return float(image.size[0])


def rate(fn: Callable[[SampleRecord], object], records: list[SampleRecord], repeats: int) -> float:
    """Samples per second, best of ``repeats`` passes (the least disturbed by the machine)."""
    fn(records[0])  # warm the file cache and imports
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for record in records:
            fn(record)
        best = min(best, time.perf_counter() - start)
    return len(records) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the real sample data folder")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    coco_root = args.data / "coco"
    coco = load_coco(coco_root, "val2017", annotation_file=coco_root / "annotations" /
                     "person_keypoints_val2017_subset4.json")  # fmt: skip
    mpii = load_mpii(args.data / "mpii", "valid_first5")
    cases = [
        ("COCO 4 imgs 640x~400, 12 persons", coco, HeatmapCodec((192, 256), (48, 64))),
        ("COCO same, tiny input 96x128", coco, HeatmapCodec((96, 128), (24, 32))),
        ("MPII 5 imgs 1280x720, 5 persons", mpii, HeatmapCodec((256, 256), (64, 64))),
        ("MPII same, tiny input 128x128", mpii, HeatmapCodec((128, 128), (32, 32))),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cases.append(("COCO upscaled to 4032x3024, q90", phone_sized(coco, Path(tmp)), cases[0][2]))
        report(cases, args.repeats)


def phone_sized(records: list[SampleRecord], folder: Path) -> list[SampleRecord]:
    """The records' images resized to a phone photo's 4032x3024 (where draft decoding matters most)."""
    out = []
    for record in records:
        with Image.open(record.path) as image:
            fx, fy = 4032 / image.width, 3024 / image.height
            if not (folder / record.image).exists():
                image.resize((4032, 3024), Image.Resampling.BILINEAR).save(folder / record.image, quality=90)
        joints = record.joints * [fx, fy]
        out.append(replace(record, root=folder, center=(record.center[0] * fx, record.center[1] * fy),
                           scale=(record.scale[0] * fx, record.scale[1] * fx), joints=joints))  # fmt: skip
    return out


def report(cases: list[tuple[str, list[SampleRecord], HeatmapCodec]], repeats: int) -> None:
    header = (
        f"{'case':34s} {'draft k (mean)':>14s} {'full decode':>12s} {'draft mode':>11s} {'ratio':>6s} "
        f"{'Pillow decode only':>19s}"
    )
    print(header)
    print("-" * len(header))
    for name, records, codec in cases:
        factors = [load_image(r.path, draft_scale=codec.input_size[0] / (r.scale[0] * PIXEL_STD)).draft_factor
                   for r in records]  # fmt: skip
        full = rate(lambda r, c=codec: prepare(r, c, use_draft=False), records, repeats)
        draft = rate(lambda r, c=codec: prepare(r, c, use_draft=True), records, repeats)
        floor = rate(pillow_decode, records, repeats)
        print(f"{name:34s} {np.mean(factors):14.2f} {full:10.1f}/s {draft:9.1f}/s {draft / full:5.2f}x {floor:17.1f}/s")


if __name__ == "__main__":
    main()
