"""Teacher inference: one task per shard, run in its own process (local) or flow run (any worker)."""

from __future__ import annotations

from dataclasses import asdict

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment

from pipeline.teacher.shards import ShardJob, ShardReport, read_shard_report, run_shard, run_shard_subprocess
from tasks.policy import retry_unless_permanent

SHARD_RUN_NAME = "teacher shard {job.shard_index}/{job.num_shards}"


# The cache manifest, not Prefect's result cache, says what is done: a retried shard skips what it committed.
@task(name="teacher-inference-shard", task_run_name=SHARD_RUN_NAME, retries=2, retry_delay_seconds=10,
      cache_policy=NO_CACHE, retry_condition_fn=retry_unless_permanent, tags=["teacher-inference"])  # fmt: skip
def infer_shard(job: ShardJob) -> ShardReport:
    """Run the shard in a subprocess, so that shards really run side by side."""
    return run_shard_subprocess(job)


@task(name="teacher-inference-remote", task_run_name=SHARD_RUN_NAME + " via {deployment}", retries=1,
      retry_delay_seconds=10, cache_policy=NO_CACHE, retry_condition_fn=retry_unless_permanent,
      tags=["teacher-inference"])  # fmt: skip
def infer_shard_remote(job: ShardJob, deployment: str) -> ShardReport:
    """Run the shard as a run of ``deployment`` (any worker of its pool); read the report it left behind."""
    run = run_deployment(deployment, parameters=asdict(job))
    if run.state is None or not run.state.is_completed():
        raise RuntimeError(f"shard {job.shard_index}/{job.num_shards}: run {run.name} ended "
                           f"{run.state and run.state.name}")  # fmt: skip
    return read_shard_report(job)


@task(name="teacher-inference-here", task_run_name=SHARD_RUN_NAME, retries=2, retry_delay_seconds=10,
      cache_policy=NO_CACHE, retry_condition_fn=retry_unless_permanent, tags=["teacher-inference"])  # fmt: skip
def infer_shard_here(job: ShardJob) -> ShardReport:
    """Run the shard in this process (the ``teacher-inference`` flow: one shard per flow run and worker)."""
    return run_shard(job)
