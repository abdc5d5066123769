"""Student training: torchrun over every visible GPU when there are several, in-process otherwise."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows import stages, students
from flows.params import DistillParams


# A retry resumes from the run's own checkpoint (same output folder, resume=True), so no epoch is trained twice.
@task(name="train-student", retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE)
def train_student(params: DistillParams, variant: str, discovery: stages.Discovery) -> students.StudentResult:
    """Train the ``variant`` student (``gt_only``, ``fpd_labelled`` or ``fpd``) and return its weights."""
    return students.train_variant(params, variant, discovery)
