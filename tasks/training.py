"""Student training: torchrun over every visible GPU when there are several, in-process otherwise."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pipeline.students import StudentResult, train_variant
from pipeline.training.config import TrainConfig
from tasks.policy import retry_unless_permanent


# A retry resumes from the run's own checkpoint (same output folder, resume=True), so no epoch is trained twice.
@task(name="train-student", task_run_name="train student {variant}", retries=1, retry_delay_seconds=10,
      cache_policy=NO_CACHE, retry_condition_fn=retry_unless_permanent)  # fmt: skip
def train_student(config: TrainConfig, variant: str, init: str, torch_threads: int | None = None) -> StudentResult:
    """Train the ``variant`` student (``gt_only``, ``fpd_labelled`` or ``fpd``) as ``config`` says; ``init`` names
    where it starts (e.g. ``gt_only student``)."""
    return train_variant(config, variant, init=init, torch_threads=torch_threads)
