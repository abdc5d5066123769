"""`fpd eval`: score predictions against ground truth (MPII PCKh, COCO OKS AP), from a file or from a checkpoint.

``fpd eval mpii --gt gt_valid.mat --preds FILE`` and ``fpd eval coco --gt ANN --results FILE`` score a
predictions file; ``fpd eval mpii|coco --preset P --checkpoint W --root DATA`` runs the network first (HRNet's
flip-test evaluation, COCO on ``--detections`` boxes as HRNet scores its COCO numbers, or the ground-truth boxes)
and can keep its predictions (``--write-preds`` / ``--write-results``: the files the first form reads). Both print
the metric table; with ``--json`` one JSON object whose keys are the table's column names (PCKh in percent, AP/AR
in 0..1; a PCKh column with no annotated joint is ``null``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from pipeline.cli.infer_cmd import non_negative_int, positive_int

_MPII_PREDS_HELP = (
    "predictions: .mat (key pos_pred_src 16x2xN or HRNet's preds Nx16x2, 1-based), .npy (N,16,2) 0-based, or "
    ".json (list of N lists of 16 [x, y], 0-based); persons in the order of the ground truth"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="score predictions or a checkpoint: MPII PCKh or COCO keypoint AP")
    sub = parser.add_subparsers(dest="eval_command", required=True)

    mpii = sub.add_parser("mpii", help="PCKh of MPII predictions or of a checkpoint (HRNet's table)")
    scored = mpii.add_mutually_exclusive_group(required=True)
    scored.add_argument("--preds", type=Path, help=_MPII_PREDS_HELP)
    scored.add_argument("--checkpoint", type=Path, help="network weights: predict the split first (with --preset)")
    mpii.add_argument("--gt", type=Path, help="ground truth .mat (HRNet's gt_valid.mat); with --checkpoint default "
                                              "ROOT/annot/gt_<split>.mat")  # fmt: skip
    mpii.add_argument("--split", default="valid", help="with --checkpoint: annotation split ROOT/annot/<split>.json")
    mpii.add_argument("--write-preds", type=Path, help="with --checkpoint: also write the predictions (.mat as "
                                                       "HRNet's pred.mat, .npy or .json)")  # fmt: skip
    _network_arguments(mpii)
    mpii.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    mpii.set_defaults(func=_eval_mpii)

    coco = sub.add_parser("coco", help="OKS keypoint AP of COCO results or of a checkpoint (pycocotools COCOeval)")
    scored = coco.add_mutually_exclusive_group(required=True)
    scored.add_argument("--results", type=Path, help="keypoint results json (list of result dicts)")
    scored.add_argument("--checkpoint", type=Path, help="network weights: predict the split first (with --preset)")
    coco.add_argument("--gt", type=Path, help="COCO keypoint annotation json; with --checkpoint default "
                                              "ROOT/annotations/person_keypoints_<split>.json")  # fmt: skip
    coco.add_argument("--split", default="val2017", help="with --checkpoint: images ROOT/images/<split>")
    coco.add_argument("--detections", type=Path, help="with --checkpoint: person boxes (HRNet's "
                                                      "COCO_val2017_detections_AP_H_56_person.json); default: the "
                                                      "ground-truth boxes")  # fmt: skip
    coco.add_argument("--write-results", type=Path, help="with --checkpoint: also write the keypoint results json")
    _network_arguments(coco)
    coco.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    coco.set_defaults(func=_eval_coco)


def _network_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="with --checkpoint: the network's preset (see `fpd models`)")
    parser.add_argument("--root", type=Path, help="with --checkpoint: the dataset root")
    parser.add_argument("--no-flip", action="store_true", help="with --checkpoint: no flip test")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="with --checkpoint: crops per forward "
                                                                            "pass (default 32)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="with --checkpoint: cpu, cuda... (default auto)")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="with --checkpoint: decoding processes")


def format_table(values: dict[str, float], digits: int = 3) -> str:
    """A two-row markdown table of metric names and values (HRNet's ``_print_name_value`` layout)."""
    names = " | ".join(values)
    cells = " | ".join(f"{value:.{digits}f}" for value in values.values())
    return f"| {names} |\n|{'---|' * len(values)}\n| {cells} |"


def _emit(values: dict[str, float], as_json: bool) -> None:
    if as_json:
        print(json.dumps({key: value if math.isfinite(value) else None for key, value in values.items()}))
    else:
        print(format_table(values))


def _network(args: argparse.Namespace) -> dict[str, object]:
    """The network and run options of ``--checkpoint`` (``evaluate_*``'s keywords); checks the options it needs."""
    from pipeline.cli import UserError
    from pipeline.runtime import load_model, resolve_device

    missing = [f"--{name}" for name in ("preset", "root") if getattr(args, name) is None]
    if missing:
        raise UserError(f"--checkpoint needs {' and '.join(missing)}")
    if not args.root.is_dir():
        raise UserError(f"dataset root not found: {args.root}")
    device = resolve_device(args.device)
    preset, model = load_model(args.preset, args.checkpoint)
    return {"model": model, "preset": preset, "root": args.root, "batch_size": args.batch_size, "device": device,
            "flip": not args.no_flip, "num_workers": args.workers}  # fmt: skip


def _eval_mpii(args: argparse.Namespace) -> int:
    from models.joints import MPII
    from pipeline.cli import UserError
    from pipeline.data.mpii import load_mpii_gt
    from pipeline.evaluation import evaluate_mpii
    from pipeline.metrics.pckh import pckh_table
    from storage.annotations import load_mpii_predictions

    if args.checkpoint is not None:
        _emit(evaluate_mpii(**_network(args), split=args.split, gt_mat=args.gt, predictions_out=args.write_preds),
              args.json)  # fmt: skip
        return 0
    if args.gt is None:
        raise UserError("--preds needs --gt (the ground truth .mat)")
    gt = load_mpii_gt(args.gt)
    preds = load_mpii_predictions(args.preds, num_joints=MPII.num_joints, num_persons=len(gt))
    _emit(pckh_table(preds, gt), args.json)
    return 0


def _eval_coco(args: argparse.Namespace) -> int:
    from models.joints import COCO
    from pipeline.cli import UserError
    from pipeline.data.coco import read_coco
    from pipeline.evaluation import evaluate_coco
    from pipeline.metrics.coco import coco_keypoint_eval
    from storage.annotations import load_coco_results

    if args.checkpoint is not None:
        _emit(evaluate_coco(**_network(args), split=args.split, detections=args.detections, annotation_file=args.gt,
                            results_out=args.write_results), args.json)  # fmt: skip
        return 0
    if args.gt is None:
        raise UserError("--results needs --gt (the COCO keypoint annotation json)")
    coco_gt = read_coco(args.gt)
    results = load_coco_results(args.results, num_joints=COCO.num_joints)
    _emit(coco_keypoint_eval(coco_gt, results), args.json)
    return 0
