"""Evaluation of a pose network: crops -> (flip test) -> decode -> image pixels -> PCKh (MPII) or OKS AP (COCO).

``predict`` is the one inference path used by every evaluation; ``evaluate_mpii`` and ``evaluate_coco`` add
the dataset loading and ground-truth reading at the edge and hand arrays to the pure metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from models.joints import COCO, get_joint_set
from models.presets import ModelPreset
from pipeline.codec import HeatmapCodec
from pipeline.data import coco as coco_data
from pipeline.data import mpii as mpii_data
from pipeline.data.crops import CropDataset
from pipeline.data.workers import worker_start_method
from pipeline.flip import final_heatmaps, flip_test
from pipeline.metrics.coco import coco_keypoint_eval, keypoint_results
from pipeline.metrics.pckh import pckh_table
from pipeline.records import SampleRecord
from pipeline.runtime import load_model
from storage.annotations import save_coco_results, save_mpii_predictions

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Predictions:
    """Decoded joints of a list of records, in record order.

    Attributes:
        coords: (N, K, 2) float64 joint positions in 0-based image pixels.
        maxvals: (N, K) float32 heatmap maxima (joint confidences).
        failed: indices of records whose image could not be read (their coords and maxvals are 0).
    """

    coords: np.ndarray
    maxvals: np.ndarray
    failed: tuple[int, ...] = ()


def predict(
    model: nn.Module,
    records: Sequence[SampleRecord],
    preset: ModelPreset,
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    flip: bool = True,
    decode: str = "hrnet",
    num_workers: int = 0,
) -> Predictions:
    """Joint predictions for ``records`` with the crop, flip test and decoding rule of evaluation.

    The model is moved to ``device`` and run in eval mode under ``torch.inference_mode``; its train/eval mode
    is restored afterwards, so a training loop can call this between epochs.

    Args:
        model: returns (N, K, H, W) heatmaps, or a list of them (the last is used).
        records: persons to predict (their centre/scale define the crops).
        preset: gives input/heatmap size, colour order and joint set.
        batch_size: crops per forward pass (a flip test doubles it).
        device: where to run.
        flip: average with the mirrored crop (HRNet's flip test with its one-pixel shift).
        decode: ``"hrnet"`` or ``"dark"``.
        num_workers: DataLoader worker processes for decoding and cropping.

    Returns:
        The predictions in image pixels.
    """
    codec = HeatmapCodec(preset.input_size, preset.heatmap_size)
    flip_permutation = get_joint_set(preset.joint_set).flip_permutation()
    num_joints = preset.num_joints
    coords = np.zeros((len(records), num_joints, 2), dtype=np.float64)
    maxvals = np.zeros((len(records), num_joints), dtype=np.float32)
    failed: list[int] = []
    # Full decodes, no JPEG draft: benchmark numbers must come from the crops the published models were scored on.
    loader = DataLoader(
        CropDataset(records, preset.input_size, preset.color_order, use_draft=False),
        batch_size=batch_size, shuffle=False, num_workers=num_workers,
        multiprocessing_context=worker_start_method(num_workers),
    )
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode():
            for batch in loader:
                images = batch["image"].to(device, non_blocking=True)
                heatmaps = flip_test(model, images, flip_permutation) if flip else final_heatmaps(model(images))
                if tuple(heatmaps.shape[1:]) != (num_joints, preset.heatmap_size[1], preset.heatmap_size[0]):
                    raise ValueError(
                        f"model output {tuple(heatmaps.shape[1:])} does not match preset {preset.name}: "
                        f"{num_joints} joints at {preset.heatmap_size[0]}x{preset.heatmap_size[1]} (w x h)"
                    )
                batch_coords, batch_maxvals = codec.decode(heatmaps, decode)
                index = batch["index"].numpy()
                centers = np.array([records[i].center for i in index], dtype=np.float64)
                scales = np.array([records[i].scale for i in index], dtype=np.float64)
                coords[index] = codec.to_image(batch_coords, centers, scales)
                maxvals[index] = batch_maxvals.cpu().numpy()
                bad = index[~batch["ok"].numpy().astype(bool)]
                coords[bad], maxvals[bad] = 0.0, 0.0
                failed.extend(int(i) for i in bad)
    finally:
        model.train(was_training)
    if failed:
        logger.warning("%d of %d images could not be read; their joints count as wrong", len(failed), len(records))
    return Predictions(coords=coords, maxvals=maxvals, failed=tuple(failed))


def evaluate_mpii(
    model: nn.Module,
    preset: ModelPreset,
    root: str | Path,
    *,
    split: str = "valid",
    gt_mat: str | Path | None = None,
    predictions_out: str | Path | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    flip: bool = True,
    decode: str = "hrnet",
    num_workers: int = 0,
) -> dict[str, float]:
    """PCKh of ``model`` on an MPII split (HRNet's table, in percent).

    Args:
        model: the network.
        preset: its preset (an MPII joint set).
        root: MPII root (``images/``, ``annot/<split>.json``).
        split: annotation split; its persons must be in the order of the ground truth.
        gt_mat: ground-truth .mat; default ``root/annot/gt_<split>.mat``.
        predictions_out: also write the predictions there (``.mat``, ``.npy`` or ``.json``).
        batch_size, device, flip, decode, num_workers: as in ``predict``.

    Returns:
        dict with keys Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle, Mean, Mean@0.1.
    """
    if preset.joint_set != "mpii":
        raise ValueError(f"preset {preset.name} predicts {preset.joint_set} joints, MPII evaluation needs mpii")
    root = Path(root)
    gt = mpii_data.load_mpii_gt(gt_mat if gt_mat is not None else mpii_data.ground_truth_path(root, split))
    records = mpii_data.load_mpii(root, split, input_aspect=preset.input_aspect)
    if len(records) != len(gt):
        raise ValueError(f"MPII split {split!r} has {len(records)} persons but the ground truth has {len(gt)}")
    predictions = predict(
        model, records, preset, batch_size=batch_size, device=device, flip=flip, decode=decode,
        num_workers=num_workers,
    )
    if predictions_out is not None:
        save_mpii_predictions(predictions_out, predictions.coords)
    return pckh_table(predictions.coords, gt)


def evaluate_coco(
    model: nn.Module,
    preset: ModelPreset,
    root: str | Path,
    split: str = "val2017",
    *,
    detections: str | Path | Sequence[dict] | None = None,
    annotation_file: str | Path | None = None,
    score_threshold: float = 0.0,
    results_out: str | Path | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    flip: bool = True,
    decode: str = "hrnet",
    num_workers: int = 0,
) -> dict[str, float]:
    """OKS keypoint AP of ``model`` on a COCO split, with HRNet's rescoring and OKS-NMS.

    Args:
        model: the network.
        preset: its preset (a COCO joint set).
        root: COCO root (``annotations/``, ``images/<split>/``).
        split: e.g. ``val2017``.
        detections: person detections (file or list); None uses the ground-truth boxes.
        annotation_file: ground truth; default ``root/annotations/person_keypoints_<split>.json``.
        score_threshold: detections below this box score are dropped.
        results_out: also write the keypoint results json there.
        batch_size, device, flip, decode, num_workers: as in ``predict``.

    Returns:
        dict with keys AP, AP .5, AP .75, AP (M), AP (L), AR, AR .5, AR .75, AR (M), AR (L) (0..1).
    """
    if preset.joint_set != "coco":
        raise ValueError(f"preset {preset.name} predicts {preset.joint_set} joints, COCO evaluation needs coco")
    root = Path(root)
    ann_path = Path(annotation_file) if annotation_file is not None else coco_data.annotation_path(root, split)
    coco_gt = coco_data.read_coco(ann_path)
    records = coco_data.load_coco(
        root, split, detections=detections, score_threshold=score_threshold,
        input_aspect=preset.input_aspect, annotation_file=ann_path,
    )
    predictions = predict(
        model, records, preset, batch_size=batch_size, device=device, flip=flip, decode=decode,
        num_workers=num_workers,
    )
    results = keypoint_results(
        predictions.coords,
        predictions.maxvals,
        np.array([r.center for r in records], dtype=np.float64).reshape(-1, 2),
        np.array([r.scale for r in records], dtype=np.float64).reshape(-1, 2),
        np.array([r.score for r in records], dtype=np.float64),
        [r.image_id for r in records],
        sigmas=COCO.sigmas,
    )
    if results_out is not None:
        save_coco_results(results_out, results)
    return coco_keypoint_eval(coco_gt, results)


Dataset = Literal["mpii", "coco"]


def evaluate_model(
    model: nn.Module,
    preset: ModelPreset,
    dataset: Dataset,
    root: str | Path,
    split: str,
    *,
    detections: str | Path | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    flip: bool = True,
    num_workers: int = 0,
) -> dict[str, float]:
    """The validation table of ``model`` on ``dataset``: PCKh (MPII) or OKS AP (COCO), flip test by default.

    The one place the evaluation is chosen by dataset (training's periodic validation, the flow's table and
    ``fpd eval`` all come here). ``detections`` applies to COCO (None: ground-truth boxes).
    """
    if dataset == "mpii":
        if detections is not None:
            raise ValueError("MPII evaluation uses the annotated person boxes; detections apply to COCO")
        result = evaluate_mpii(model, preset, root, split=split, batch_size=batch_size, device=device, flip=flip,
                               num_workers=num_workers)  # fmt: skip
    elif dataset == "coco":
        result = evaluate_coco(model, preset, root, split, detections=detections, batch_size=batch_size,
                               device=device, flip=flip, num_workers=num_workers)  # fmt: skip
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected mpii or coco")
    return {str(k): float(v) for k, v in result.items()}


def evaluate_weights(
    preset: str,
    weights: str | Path,
    dataset: Dataset,
    root: str | Path,
    split: str,
    *,
    detections: str | Path | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> dict[str, float]:
    """:func:`evaluate_model` of a preset's network with ``weights`` loaded strictly (flip test on)."""
    spec, model = load_model(preset, weights)
    metrics = evaluate_model(model, spec, dataset, root, split, detections=detections,
                             batch_size=batch_size, device=device, num_workers=num_workers)  # fmt: skip
    logger.info("%s (%s) on %s/%s: %s", weights, preset, dataset, split,
                ", ".join(f"{key} {value:.4g}" for key, value in metrics.items()))  # fmt: skip
    return metrics
