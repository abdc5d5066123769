"""Validation with flip test: PCKh on MPII, OKS AP on COCO, one table row per model and dataset."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline.evaluation import Dataset, evaluate_weights
from pipeline.reporting import metrics_row
from pipeline.runtime import resolve_device
from tasks.policy import retry_unless_permanent


@task(name="evaluate", task_run_name="score {label} on {dataset}", retries=1, retry_delay_seconds=5,
      cache_policy=NO_CACHE, retry_condition_fn=retry_unless_permanent)  # fmt: skip
def score_model(
    label: str,
    preset: str,
    weights: str,
    dataset: Dataset,
    root: str,
    split: str,
    *,
    init: str,
    detections: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
) -> dict[str, object]:
    """Score ``weights`` (a ``preset`` network) on ``root``'s ``split``, flip test on; return its table row
    (``init``: where the model's training started)."""
    metrics = evaluate_weights(preset, weights, dataset, root, split, detections=detections, batch_size=batch_size,
                               device=resolve_device(device))  # fmt: skip
    return metrics_row(label, preset, dataset, metrics, init=init)
