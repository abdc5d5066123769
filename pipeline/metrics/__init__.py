"""Evaluation metrics as pure array functions: MPII PCKh (``pckh``) and COCO OKS AP (``coco``)."""

from pipeline.metrics.coco import STATS_KEYS, coco_keypoint_eval, keypoint_results, oks_nms, rescore
from pipeline.metrics.pckh import TABLE_KEYS, MpiiGroundTruth, pckh, pckh_table

__all__ = [
    "STATS_KEYS",
    "TABLE_KEYS",
    "MpiiGroundTruth",
    "coco_keypoint_eval",
    "keypoint_results",
    "oks_nms",
    "pckh",
    "pckh_table",
    "rescore",
]
