"""Artifacts in the Prefect UI: the metrics table and the teacher-cache report (statistics, rendered overlays)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from pipeline.detection.run import DetectionRun
from pipeline.reporting import table_columns, write_cache_report, write_metrics, write_pictures
from pipeline.students import StudentResult
from pipeline.teacher.discovery import Discovery
from pipeline.teacher.shards import ShardReport
from tasks.policy import retry_unless_permanent


@task(name="publish-metrics", task_run_name="publish the metrics table",
      retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE,
      retry_condition_fn=retry_unless_permanent)  # fmt: skip
def publish_metrics(output_dir: str, rows: list[dict[str, object]]) -> str:
    """Write ``metrics.json`` to the output folder and show the rows (one per model and dataset) as a table."""
    path = write_metrics(output_dir, rows)
    create_table_artifact(table=[table_columns(r) for r in rows], key="distill-metrics",
                          description=f"Teacher and students ({path}; COCO's AR breakdown there)")  # fmt: skip
    return str(path)


@task(name="publish-pictures", task_run_name="draw the curves and the comparison",
      retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE,
      retry_condition_fn=retry_unless_permanent)  # fmt: skip
def publish_pictures(output_dir: str, rows: list[dict[str, object]], students: Sequence[StudentResult]) -> list[str]:
    """Draw the comparison and each student's training curves as PNGs; show them as one markdown artifact."""
    paths, markdown = write_pictures(output_dir, rows, [asdict(s) for s in students])
    create_markdown_artifact(markdown=markdown, key="distill-pictures",
                             description=f"Training curves and comparison ({len(paths)} PNGs)")  # fmt: skip
    return [str(p) for p in paths]


@task(name="publish-cache-report", task_run_name="report on the teacher cache",
      retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE,
      retry_condition_fn=retry_unless_permanent)  # fmt: skip
def publish_cache_report(
    output_dir: str,
    cache_dir: str,
    discovery: Discovery,
    shards: Sequence[ShardReport],
    n_overlays: int,
    students: Sequence[StudentResult],
    detection: DetectionRun | None = None,
) -> str:
    """Write ``report.md`` (person detection, cache statistics, overlays) and ``run.json`` (this run's detection,
    inference and students, each with where it started); show the report."""
    path, markdown = write_cache_report(output_dir, cache_dir, discovery, shards, n_overlays,
                                        [asdict(s) for s in students], detection)  # fmt: skip
    create_markdown_artifact(markdown=markdown, key="teacher-cache-report", description=str(path))
    return str(path)
