"""Discovery of what the teacher must infer: labelled splits and every folder under the unlabeled roots."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import stages
from flows.params import DistillParams


# Never cached: a folder dropped in since the last run must be seen, so discovery always looks at the disk.
@task(name="discover-sources", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def discover_sources(params: DistillParams) -> stages.Discovery:
    """Count every source's images and the ones missing from the teacher cache; log new folders."""
    discovery = stages.discover(params)
    logger = get_run_logger()
    for line in discovery.log_lines():
        logger.info(line)
    return discovery
