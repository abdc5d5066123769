"""`fpd eval`: score prediction files against ground truth (MPII PCKh, COCO OKS AP).

``fpd eval mpii --gt gt_valid.mat --preds FILE [--json]`` and ``fpd eval coco --gt ANN --results FILE [--json]``
print the metric table; with ``--json`` one JSON object whose keys are the table's column names (PCKh in
percent, AP/AR in 0..1; a PCKh column with no annotated joint is ``null``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

_MPII_PREDS_HELP = (
    "predictions: .mat (key pos_pred_src 16x2xN or HRNet's preds Nx16x2, 1-based), .npy (N,16,2) 0-based, or "
    ".json (list of N lists of 16 [x, y], 0-based); persons in the order of the ground truth"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="score predictions: MPII PCKh or COCO keypoint AP")
    sub = parser.add_subparsers(dest="eval_command", required=True)

    mpii = sub.add_parser("mpii", help="PCKh of MPII predictions (HRNet's table)")
    mpii.add_argument("--gt", type=Path, required=True, help="ground truth .mat (HRNet's gt_valid.mat)")
    mpii.add_argument("--preds", type=Path, required=True, help=_MPII_PREDS_HELP)
    mpii.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    mpii.set_defaults(func=_eval_mpii)

    coco = sub.add_parser("coco", help="OKS keypoint AP of COCO results (pycocotools COCOeval)")
    coco.add_argument("--gt", type=Path, required=True, help="COCO keypoint annotation json")
    coco.add_argument("--results", type=Path, required=True, help="keypoint results json (list of result dicts)")
    coco.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    coco.set_defaults(func=_eval_coco)


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


def _eval_mpii(args: argparse.Namespace) -> int:
    from models.joints import MPII
    from pipeline.data.mpii import load_mpii_gt
    from pipeline.metrics.pckh import pckh_table
    from storage.annotations import load_mpii_predictions

    gt = load_mpii_gt(args.gt)
    preds = load_mpii_predictions(args.preds, num_joints=MPII.num_joints, num_persons=len(gt))
    _emit(pckh_table(preds, gt), args.json)
    return 0


def _eval_coco(args: argparse.Namespace) -> int:
    from models.joints import COCO
    from pipeline.data.coco import read_coco
    from pipeline.metrics.coco import coco_keypoint_eval
    from storage.annotations import load_coco_results

    coco_gt = read_coco(args.gt)
    results = load_coco_results(args.results, num_joints=COCO.num_joints)
    _emit(coco_keypoint_eval(coco_gt, results), args.json)
    return 0
