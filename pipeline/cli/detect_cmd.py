"""`fpd detect`: find the persons of unlabeled photo folders with a torchvision detector, into a detection store.

``fpd infer --folder DIR --detection-store STORE`` (and ``distill-flow``, which runs this stage itself) then
gives the teacher one crop per person found instead of the whole picture.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from pipeline.cli.infer_cmd import SHOWN_FAILURES, non_negative_int, positive_int, shard_slot

_DESCRIPTION = """\
Run a person detector over every image of the given folders and keep its person boxes in the store folder
(outside the image folders: they are never written to). Images the store already holds with the same content
are skipped, so running again after adding a folder detects only its images, an edited image is detected again,
and an interrupted run resumes. A folder with its own detections.json is used as is. Another detector, weights
file or threshold is another set of boxes: its images are detected again (switching back costs nothing).
Weights come from torchvision's cache ($TORCH_HOME/hub/checkpoints, downloaded once when there is network) or
--weights FILE.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from pipeline.detection.settings import DetectorSettings

    default = DetectorSettings()
    parser = subparsers.add_parser(
        "detect", help="person boxes for unlabeled folders (torchvision detector)", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--folder", action="append", default=[], type=Path, metavar="DIR",
                        help="a folder of photos (with its sub-folders)")  # fmt: skip
    parser.add_argument("--unlabeled-root", action="append", default=[], type=Path, metavar="DIR",
                        help="every sub-folder is a folder, as distill-flow's unlabeled_roots")  # fmt: skip
    parser.add_argument("--store", required=True, type=Path, help="detection store folder (created if missing)")
    parser.add_argument("--model", default=default.model,
                        help="a torchvision detector (an unknown name lists them); auto (default): "
                             "fasterrcnn_resnet50_fpn_v2 on CUDA, "
                             "fasterrcnn_mobilenet_v3_large_fpn on CPU")  # fmt: skip
    parser.add_argument("--weights", type=Path, help="local weights file (default: torchvision's cache)")
    parser.add_argument("--score-threshold", type=float, default=default.score_threshold,
                        help=f"lowest person score kept (default {default.score_threshold})")  # fmt: skip
    parser.add_argument("--nms-threshold", type=float, default=default.nms_threshold,
                        help=f"detector NMS IoU (default {default.nms_threshold})")  # fmt: skip
    parser.add_argument("--min-box-size", type=float, default=default.min_box_size,
                        help=f"smallest sqrt(w*h) kept, pixels (default {default.min_box_size:g})")  # fmt: skip
    parser.add_argument("--max-persons", type=positive_int, default=default.max_persons,
                        help=f"most persons per image (default {default.max_persons})")  # fmt: skip
    parser.add_argument("--min-size", type=positive_int, help="detector input's shorter side (default: the model's)")
    parser.add_argument("--max-size", type=positive_int, help="detector input's longer side (default: the model's)")
    parser.add_argument("--no-amp", action="store_true", help="no fp16 autocast on CUDA")
    parser.add_argument("--batch-size", type=positive_int,
                        help="images per forward pass (default 1 on CPU, 8 on CUDA)")  # fmt: skip
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="image decoding processes (default 2)")
    parser.add_argument("--shard", type=shard_slot, default=(0, 1), metavar="I/N",
                        help="this process's slot of N (default 0/1)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the run's counts as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.cli import UserError
    from pipeline.data.folders import unlabeled_folders
    from pipeline.detection.run import detect_folders
    from pipeline.detection.settings import DetectorSettings
    from pipeline.runtime import resolve_device
    from storage.detections import DetectionStoreError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not (args.folder or args.unlabeled_root):
        raise UserError("give at least one --folder or --unlabeled-root")
    try:  # before the store is created or the detector loaded
        device = resolve_device(args.device or "auto")
        settings = DetectorSettings(
            model=args.model, weights=None if args.weights is None else str(args.weights),
            score_threshold=args.score_threshold, nms_threshold=args.nms_threshold, min_box_size=args.min_box_size,
            max_persons=args.max_persons, min_size=args.min_size, max_size=args.max_size, amp=not args.no_amp,
        )  # fmt: skip
    except ValueError as exc:
        raise UserError(str(exc)) from None
    folders = [(f, True) for f in args.folder]
    for root in args.unlabeled_root:
        folders.extend(unlabeled_folders(root))
    for folder, _ in folders:
        if not folder.is_dir():
            raise UserError(f"image folder not found: {folder}")
    shard_index, num_shards = args.shard
    try:
        result = detect_folders(
            folders, args.store, settings, device=device, batch_size=args.batch_size, num_workers=args.workers,
            shard_index=shard_index, num_shards=num_shards, progress=not args.no_progress,
        )  # fmt: skip
    except DetectionStoreError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(asdict(result), indent=2))
        return 0
    if not result.folders:
        print("no images in the given folders: nothing to detect")
        return 0
    for line in result.log_lines():
        print(line)
    for folder in result.folders:
        for name, reason in folder.failed[:SHOWN_FAILURES]:
            print(f"  {Path(folder.folder).name}: failed {name}: {reason}")
    print(f"boxes in {args.store}; use them with `fpd infer --folder DIR --detection-store {args.store}`")
    return 0
