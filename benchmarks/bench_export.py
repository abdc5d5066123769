"""Exports of the real presets: ONNX and TorchScript, each checked against PyTorch on real images.

``pipeline.export.export_model`` on every preset of FPD's two pairs, with seeded random weights at a trained
network's scale (``bench_speed.realistic_weights``: untrained HRNet heads output ~1e-8, which any graph matches),
verified on the crops of the real sample photos (MPII photos for the hourglasses, COCO val2017 for the HRNets):
max absolute heatmap difference at batch 1 and batch N, identical decoded joints, export time and file size.

    .venv/bin/python -m benchmarks.bench_export --json-out export.json     # the four real presets, a few minutes
    .venv/bin/python -m benchmarks.bench_export --presets tiny_student_mpii
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.bench_speed import realistic_weights
from benchmarks.output import publish
from models import get_preset
from pipeline.export import FORMATS, export_model

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"
PRESETS = ("hg4_128", "hg8_256", "hrnet_w32_256x192", "hrnet_w48_256x192")
IMAGES = {"mpii": REAL / "mpii" / "images", "coco": REAL / "coco" / "images" / "val2017"}
"""The real photos each joint set's presets are checked on."""


def run(presets: Sequence[str], threads: int) -> list[dict[str, object]]:
    """One row per preset and format (``export_model`` raises, naming the miss, when a check fails)."""
    torch.set_num_threads(threads)
    rows = []
    for name in presets:
        preset = get_preset(name)
        with tempfile.TemporaryDirectory() as tmp:
            for item in export_model(realistic_weights(preset), preset, f"{tmp}/", list(FORMATS),
                                     IMAGES[preset.joint_set], threads=threads):  # fmt: skip
                check = item.verification
                rows.append({"preset": name, "format": item.format, "crops": check.images,
                             "batch_sizes": list(check.batch_sizes), "max_abs_diff": check.max_abs_diff,
                             "joints_identical": check.joints_identical, "export_seconds": item.export_seconds,
                             "size_mib": item.size_bytes / 2**20})  # fmt: skip
                print(f"  {name:<20}{item.format:<13}{check.images:>3} crops, batch {check.batch_sizes}: max |diff| "
                      f"{check.max_abs_diff:.2g}, joints {'identical' if check.joints_identical else 'DIFFER'}, "
                      f"exported in {item.export_seconds:.1f} s, {item.size_bytes / 2**20:.1f} MiB", flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument("--json-out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = run(args.presets, args.threads)
    publish(rows, None, args.json_out)
    return rows


if __name__ == "__main__":
    main()
