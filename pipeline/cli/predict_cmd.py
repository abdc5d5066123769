"""`fpd predict`: poses of every person in images, folders or videos with a trained network (the student)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from pipeline.cli.infer_cmd import SHOWN_FAILURES, non_negative_int, positive_int

_DESCRIPTION = """\
Find the persons of each picture (a person detector, a boxes file, or the whole picture), run the network on each
person's crop with flip test, and write to --out: keypoints.json (COCO keypoint results: pycocotools loadRes
reads it), images.json (the pictures' ids, names and sizes), render/*.png (boxes, limbs coloured by side, joints
by confidence) and summary.json (counts, pictures/s). Files that cannot be read are reported and skipped. Image
ids are the numeric file stems when all pictures are named so (COCO's 000000000785.jpg -> 785), else 1, 2, ...
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from pipeline.detection.settings import DetectorSettings

    default = DetectorSettings()
    parser = subparsers.add_parser(
        "predict", help="poses in images, folders or videos with a trained network", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files, folders, video files")
    parser.add_argument("--preset", required=True, help="the network's preset (see `fpd models`)")
    parser.add_argument("--checkpoint", required=True, type=Path, help="its weights (any layout `fpd train` or "
                                                                       "HRNet/FPD write)")  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument("--boxes", default="detector", metavar="detector|whole-image|FILE",
                        help="person boxes: the detector (default), the whole picture (single-person crops), or a "
                             "json list of {file_name or image_id, bbox [x,y,w,h], score}")  # fmt: skip
    parser.add_argument("--box-score-threshold", type=float, default=0.0,
                        help="with a boxes FILE: lowest box score used (default 0, HRNet's)")  # fmt: skip
    parser.add_argument("--detector", default=default.model, help="detector model (default auto, as `fpd detect`)")
    parser.add_argument("--detector-weights", type=Path, help="detector weights file (default: torchvision's cache)")
    parser.add_argument("--score-threshold", type=float, default=default.score_threshold,
                        help=f"lowest detector person score (default {default.score_threshold})")  # fmt: skip
    parser.add_argument("--no-flip", action="store_true", help="no flip test (about half the network time)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="pictures per step (default 16)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1... (default: cuda when available)")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="image decoding processes (default 2)")
    parser.add_argument("--video-stride", type=positive_int, default=1, help="every N-th video frame (default 1)")
    parser.add_argument("--max-frames", type=positive_int, help="at most N frames per video")
    parser.add_argument("--no-render", action="store_true", help="no pictures")
    parser.add_argument("--render-threshold", type=float, default=0.3,
                        help="pictures show boxes and poses scoring at least this (default 0.3; the json has all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.cli import UserError
    from pipeline.detection.run import open_detector
    from pipeline.detection.settings import DetectorSettings
    from pipeline.prediction import detector_boxes, file_boxes, predict_pictures, whole_picture_boxes
    from pipeline.runtime import load_model, resolve_device

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    device = resolve_device(args.device)
    for item in args.inputs:
        if not item.exists():
            raise UserError(f"input not found: {item}")
    preset, model = load_model(args.preset, args.checkpoint)  # before the detector: a wrong file fails at once
    if args.boxes == "whole-image":
        boxes = whole_picture_boxes()
    elif args.boxes == "detector":
        settings = DetectorSettings(model=args.detector, score_threshold=args.score_threshold,
                                    weights=None if args.detector_weights is None else str(args.detector_weights))
        boxes = detector_boxes(open_detector(settings, device)[0], settings, device)
    else:
        boxes = file_boxes(args.boxes, args.box_score_threshold)
    result = predict_pictures(
        model, preset, args.inputs, args.out, boxes, flip=not args.no_flip, batch_size=args.batch_size,
        device=device, num_workers=args.workers, render=not args.no_render,
        render_threshold=args.render_threshold, video_stride=args.video_stride,
        max_frames=args.max_frames, progress=not args.no_progress,
    )  # fmt: skip
    if args.json:
        print(json.dumps({**asdict(result), "pictures_per_second": result.pictures_per_second}, indent=2))
        return 0
    print(f"{result.pictures} pictures, {result.persons} persons ({result.boxes} boxes), {result.poses} poses in "
          f"{result.seconds:.1f} s: {result.pictures_per_second:.2f} pictures/s; pose network "
          f"{result.persons_per_second:.1f} persons/s ({preset.name}, flip test {'on' if result.flip else 'off'}, "
          f"{result.device})")  # fmt: skip
    for name, reason in result.failed[:SHOWN_FAILURES]:
        print(f"  skipped {name}: {reason}")
    if len(result.failed) > SHOWN_FAILURES:
        print(f"  ... and {len(result.failed) - SHOWN_FAILURES} more (summary.json lists them)")
    for kind, path in result.files.items():
        print(f"{kind}: {path}")
    return 0
