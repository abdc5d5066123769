"""Validation with flip test: PCKh on MPII, OKS AP on COCO."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows import scoring
from flows.params import Dataset, DistillParams


@task(name="evaluate", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def evaluate_model(params: DistillParams, dataset: Dataset, preset: str, weights: str) -> dict[str, float]:
    """Score ``weights`` (a ``preset`` network) on the validation split of ``dataset``."""
    return scoring.evaluate(params, dataset, preset, weights)
