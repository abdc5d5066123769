"""Discovery of what the teacher must infer: labelled splits and every folder under the unlabeled roots."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.presets import get_preset
from pipeline.data.sources import SourceSpec
from pipeline.teacher.discovery import Discovery, discover
from pipeline.teacher.inference import open_teacher_cache
from tasks.policy import retry_unless_permanent


# Never cached: a folder dropped in since the last run must be seen, so discovery always looks at the disk.
@task(name="discover-sources", task_run_name="discover sources for {teacher_preset}", retries=2,
      retry_delay_seconds=5, cache_policy=NO_CACHE, retry_condition_fn=retry_unless_permanent)  # fmt: skip
def discover_sources(
    specs: Sequence[SourceSpec],
    unlabeled_roots: Sequence[str],
    teacher_preset: str,
    teacher_checkpoint: str,
    cache_dir: str,
    plan_path: str,
    detection_store: str | None = None,
) -> Discovery:
    """Scan every source once (folder boxes from ``detection_store``), write the plan, log each source's counts."""
    preset = get_preset(teacher_preset)
    cache = open_teacher_cache(cache_dir, preset, teacher_checkpoint)
    discovery = discover(specs, unlabeled_roots, preset.input_aspect, cache, plan_path,
                         detection_store=detection_store)  # fmt: skip
    logger = get_run_logger()
    for line in discovery.log_lines():
        logger.info(line)
    return discovery
