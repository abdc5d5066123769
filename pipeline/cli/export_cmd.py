"""`fpd export`: a trained network as ONNX and/or TorchScript, verified on real images before it is written."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli.infer_cmd import positive_int

_DESCRIPTION = """\
Export the network's final heatmaps (input: normalised crops, N x 3 x H x W, N dynamic) as ONNX (torch's dynamo
exporter, ONNX Runtime checked) and/or TorchScript (traced). Each file is checked against the PyTorch model on
crops of real images (--check-images: a folder, whole images or its detections.json boxes) at batch 1 and batch N:
max heatmap difference within --tolerance and identical decoded joints. Only then is it moved into place, with a
<file>.json beside it giving what a deployer needs: input size, colour order, mean/std, heatmap size, joint names,
flip permutation, decoding, checkpoint sha256 and the check's result. ONNX needs the export extra:
pip install 'fast-pose-distillation[export]'.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from pipeline.export import DEFAULT_MAX_IMAGES, DEFAULT_OPSET, DEFAULT_TOLERANCE, FORMATS

    parser = subparsers.add_parser(
        "export", help="ONNX / TorchScript export of a network, verified on real images", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--preset", required=True, help="the network's preset (see `fpd models`)")
    parser.add_argument("--checkpoint", required=True, type=Path, help="its weights (any layout `fpd train` or "
                                                                       "HRNet/FPD write)")  # fmt: skip
    parser.add_argument("--out", required=True, type=Path,
                        help="a folder (files <preset>.onnx, <preset>.pt) or a path prefix (PREFIX.onnx ...)")
    parser.add_argument("--format", nargs="+", choices=list(FORMATS), default=list(FORMATS), dest="formats",
                        help="formats to write (default both)")
    parser.add_argument("--check-images", required=True, type=Path,
                        help="folder of real images the export is verified on")
    parser.add_argument("--max-images", type=positive_int, default=DEFAULT_MAX_IMAGES,
                        help=f"persons of --check-images used (default {DEFAULT_MAX_IMAGES})")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"largest absolute heatmap difference allowed (default {DEFAULT_TOLERANCE:g})")
    parser.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, help=f"ONNX opset ({DEFAULT_OPSET})")
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.cli import UserError
    from pipeline.export import export_model
    from pipeline.runtime import load_model

    if not args.check_images.is_dir():
        raise UserError(f"--check-images: no such folder: {args.check_images}")
    preset, model = load_model(args.preset, args.checkpoint)
    # An ExportError (missing extra, mismatch) is a ValueError: `fpd` prints it as one line.
    exported = export_model(
        model, preset, args.out, args.formats, args.check_images, tolerance=args.tolerance, opset=args.opset,
        checkpoint=args.checkpoint, max_images=args.max_images,
    )  # fmt: skip
    if args.json:
        rows = [{"format": item.format, "path": str(item.path), "sidecar": str(item.sidecar),
                 "size_bytes": item.size_bytes, "export_seconds": item.export_seconds,
                 "max_abs_diff": item.verification.max_abs_diff,
                 "joints_identical": item.verification.joints_identical,
                 "images": item.verification.images} for item in exported]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return 0
    for item in exported:
        check = item.verification
        print(f"{item.format}: {item.path} ({item.size_bytes / 2**20:.1f} MiB, exported in {item.export_seconds:.1f} s)"
              f"; checked on {check.images} crops at batch {' and '.join(map(str, check.batch_sizes))}: max |heatmap "
              f"diff| {check.max_abs_diff:.2g} (tolerance {check.tolerance:g}), decoded joints identical")  # fmt: skip
        print(f"  sidecar: {item.sidecar}")
    return 0
