"""The detection stage: person boxes for the unlabeled folders, before discovery reads them."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipeline.data.folders import unlabeled_folders
from pipeline.detection.run import DetectionRun, detect_folders
from pipeline.detection.settings import DetectorSettings
from pipeline.runtime import resolve_device, set_torch_threads
from tasks.policy import retry_unless_permanent


# The store, not Prefect's result cache, says what is done: a retry detects only the images not yet committed.
@task(name="detect-persons", task_run_name="detect persons with {settings.model}", retries=2, retry_delay_seconds=10,
      cache_policy=NO_CACHE, retry_condition_fn=retry_unless_permanent, tags=["detection"])  # fmt: skip
def detect_persons(
    unlabeled_roots: Sequence[str],
    store_dir: str,
    settings: DetectorSettings,
    device: str,
    batch_size: int | None,
    num_workers: int,
    torch_threads: int | None,
) -> DetectionRun:
    """Detect the persons of every folder under ``unlabeled_roots`` that the store lacks; log each folder."""
    set_torch_threads(torch_threads)
    folders = [f for root in unlabeled_roots for f in unlabeled_folders(root)]
    run = detect_folders(folders, store_dir, settings, device=resolve_device(device), batch_size=batch_size,
                         num_workers=num_workers, progress=False)  # fmt: skip
    logger = get_run_logger()
    for line in run.log_lines():
        logger.info(line)
    return run
