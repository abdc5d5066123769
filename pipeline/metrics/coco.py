"""COCO keypoint AP as HRNet computes it: rescoring, per-image OKS-NMS, then pycocotools' COCOeval.

Pure functions over arrays and lists of result dicts; reading and writing the json files lives in
``storage.annotations``. Results use HRNet's json format: ``image_id``, ``category_id`` (1), ``keypoints``
(51 floats ``x, y, score`` per joint), ``score``, ``center``, ``scale``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from models.joints import COCO as COCO_JOINTS
from pipeline.records import PIXEL_STD

logger = logging.getLogger(__name__)

STATS_KEYS = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")
"""Names of COCOeval's ten keypoint statistics, in its order (values 0..1; -1 where no GT falls in a range)."""

VIS_THRESHOLD = 0.2
"""HRNet's ``in_vis_thre``: joints whose heatmap maximum is above it count in the rescoring."""

NMS_THRESHOLD = 0.9
"""HRNet's ``oks_thre`` for the per-image OKS-NMS."""


def rescore(maxvals: np.ndarray, box_scores: np.ndarray, vis_threshold: float = VIS_THRESHOLD) -> np.ndarray:
    """HRNet's instance score: box score x mean of the joint maxima above ``vis_threshold`` (0 if none).

    Args:
        maxvals: (N, K) heatmap maxima.
        box_scores: (N,) person box scores.

    Returns:
        (N,) float64 scores.
    """
    maxvals = np.asarray(maxvals, dtype=np.float64)
    above = maxvals > vis_threshold
    count = above.sum(axis=1)
    total = np.where(above, maxvals, 0.0).sum(axis=1)
    joint_score = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return joint_score * np.asarray(box_scores, dtype=np.float64)


def oks_iou(
    reference: np.ndarray, others: np.ndarray, reference_area: float, other_areas: np.ndarray, sigmas: np.ndarray
) -> np.ndarray:
    """OKS between one pose and several (HRNet's ``oks_iou`` without a visibility threshold).

    Args:
        reference: (K, 2+) keypoints (x, y, ...).
        others: (M, K, 2+) keypoints.
        reference_area: area of the reference instance.
        other_areas: (M,) areas.
        sigmas: (K,) COCO per-keypoint sigmas.

    Returns:
        (M,) OKS values.
    """
    variances = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    delta = others[..., :2] - reference[None, :, :2]
    squared = (delta**2).sum(axis=-1)
    mean_area = (reference_area + np.asarray(other_areas, dtype=np.float64)) / 2 + np.spacing(1)
    e = squared / variances / mean_area[:, None] / 2
    return np.exp(-e).sum(axis=-1) / e.shape[-1]


def oks_nms(
    keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, threshold: float = NMS_THRESHOLD,
    sigmas: Sequence[float] = COCO_JOINTS.sigmas,
) -> list[int]:
    """Greedy OKS non-maximum suppression (HRNet's ``oks_nms``): keep the best pose, drop those with OKS > threshold.

    Args:
        keypoints: (M, K, 3) poses of one image (x, y, score).
        scores: (M,) instance scores.
        areas: (M,) instance areas (HRNet: product of the box scale times 200^2).
        threshold: OKS above which a lower-scored pose is suppressed.
        sigmas: (K,) COCO per-keypoint sigmas.

    Returns:
        Indices kept, best first.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64)
    # Same sort call as HRNet (numpy's default quicksort, reversed) so ties resolve the same way.
    order = np.asarray(scores).argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        best = int(order[0])
        keep.append(best)
        overlap = oks_iou(keypoints[best], keypoints[order[1:]], areas[best], areas[order[1:]], np.asarray(sigmas))
        order = order[np.where(overlap <= threshold)[0] + 1]
    return keep


def keypoint_results(
    coords: np.ndarray,
    maxvals: np.ndarray,
    centers: np.ndarray,
    scales: np.ndarray,
    box_scores: np.ndarray,
    image_ids: Sequence[int],
    *,
    nms_threshold: float | None = NMS_THRESHOLD,
    vis_threshold: float = VIS_THRESHOLD,
    sigmas: Sequence[float] = COCO_JOINTS.sigmas,
    category_id: int = 1,
) -> list[dict]:
    """HRNet's COCO evaluation front half: rescore, OKS-NMS per image, format as result dicts.

    Images keep their first-appearance order and, within an image, the kept poses are best first, as HRNet
    writes them (COCOeval's stable sort then breaks score ties the same way).

    Args:
        coords: (N, K, 2) predictions in image pixels.
        maxvals: (N, K) heatmap maxima (the per-joint scores).
        centers: (N, 2) person box centres.
        scales: (N, 2) person box scales (units of 200 px).
        box_scores: (N,) person box scores (1 for ground-truth boxes).
        image_ids: (N,) COCO image ids.
        nms_threshold: OKS-NMS threshold; None keeps every pose (a joint set without OKS sigmas, e.g. MPII).
        vis_threshold: rescoring threshold on joint maxima.
        sigmas: per-keypoint OKS sigmas.
        category_id: COCO category of the results.

    Returns:
        List of result dicts in HRNet's json format.
    """
    coords = np.asarray(coords, dtype=np.float64)
    maxvals = np.asarray(maxvals, dtype=np.float64)
    centers, scales = np.asarray(centers, dtype=np.float64), np.asarray(scales, dtype=np.float64)
    keypoints = np.concatenate([coords, maxvals[..., None]], axis=-1)  # (N, K, 3)
    scores = rescore(maxvals, box_scores, vis_threshold)
    areas = np.prod(scales * PIXEL_STD, axis=1)
    by_image: dict[int, list[int]] = {}
    for i, image_id in enumerate(image_ids):
        by_image.setdefault(int(image_id), []).append(i)
    results = []
    for image_id, members in by_image.items():
        members_arr = np.asarray(members)
        keep = (np.argsort(-scores[members_arr], kind="stable") if nms_threshold is None
                else oks_nms(keypoints[members_arr], scores[members_arr], areas[members_arr], nms_threshold, sigmas))
        for i in members_arr[keep]:
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category_id,
                    "keypoints": [float(v) for v in keypoints[i].reshape(-1)],
                    "score": float(scores[i]),
                    "center": [float(v) for v in centers[i]],
                    "scale": [float(v) for v in scales[i]],
                }
            )
    return results


def coco_keypoint_eval(coco_gt: COCO, results: Sequence[dict]) -> dict[str, float]:
    """pycocotools' keypoint COCOeval of ``results`` against ``coco_gt`` (HRNet's ``_do_python_keypoint_eval``).

    pycocotools' progress prints are captured and sent to the debug log. An empty result list scores 0.

    Args:
        coco_gt: the ground truth, loaded with ``storage.annotations.load_coco_gt``.
        results: result dicts (HRNet's format; extra keys such as ``center`` are ignored).

    Returns:
        dict with the keys of ``STATS_KEYS``, values in 0..1.

    Raises:
        ValueError: a result names an image that is not in the ground truth.
    """
    if not results:
        logger.warning("no keypoint results to evaluate: every statistic is 0")
        return dict.fromkeys(STATS_KEYS, 0.0)
    unknown = sorted({int(r["image_id"]) for r in results} - set(coco_gt.getImgIds()))
    if unknown:
        shown = ", ".join(str(i) for i in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise ValueError(f"{len(unknown)} result image_id(s) are not in the ground truth: {shown}")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        # loadRes writes area/bbox/id into the dicts it gets: give it copies.
        coco_dt = coco_gt.loadRes(copy.deepcopy(list(results)))
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.useSegm = None
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    logger.debug("pycocotools output:\n%s", buffer.getvalue())
    return {key: float(value) for key, value in zip(STATS_KEYS, evaluator.stats, strict=True)}
