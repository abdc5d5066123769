"""Artifacts in the Prefect UI: the metrics table and the teacher-cache report (statistics, rendered overlays)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows import scoring, sharding, stages
from flows.params import DistillParams
from storage.atomic import atomic_write


@task(name="publish-metrics", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def publish_metrics(params: DistillParams, rows: list[dict[str, object]]) -> str:
    """Write ``metrics.json`` to the output folder and show the rows (one per model and dataset) as a table."""
    path = stages.write_json(params.output_path / "metrics.json", rows)
    create_table_artifact(table=rows, key="distill-metrics", description=f"Teacher and students ({path})")
    return str(path)


@task(name="publish-cache-report", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def publish_cache_report(params: DistillParams, discovery: stages.Discovery, shards: list[sharding.ShardReport]) -> str:
    """Write ``report.md`` (cache statistics, overlays) and ``run.json`` (this run's inference); show the report."""
    stages.write_json(params.output_path / "run.json", scoring.run_summary(discovery, shards))
    markdown = scoring.cache_report(params, discovery, shards)
    path = params.output_path / "report.md"
    with atomic_write(path, "w") as handle:
        handle.write(markdown)
    create_markdown_artifact(markdown=markdown, key="teacher-cache-report", description=str(path))
    return str(path)
