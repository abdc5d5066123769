"""Teacher inference: one task per shard, run in its own process (local) or flow run (any worker)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment

from flows import sharding
from flows.params import DistillParams


# The cache manifest, not Prefect's result cache, says what is done: a retried shard skips what it committed.
@task(
    name="teacher-inference-shard", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE, tags=["teacher-inference"]
)
def infer_shard(params: DistillParams, shard_index: int, num_shards: int) -> sharding.ShardReport:
    """Run shard ``shard_index`` of ``num_shards`` in a subprocess, so that shards really run side by side."""
    return sharding.run_shard_subprocess(params, shard_index, num_shards)


@task(
    name="teacher-inference-remote",
    retries=1,
    retry_delay_seconds=10,
    cache_policy=NO_CACHE,
    tags=["teacher-inference"],
)
def infer_shard_remote(
    params: DistillParams, shard_index: int, num_shards: int, deployment: str
) -> sharding.ShardReport:
    """Run the shard as a run of ``deployment`` (any worker of its pool); read the report it left behind."""
    run = run_deployment(deployment, parameters=sharding.shard_parameters(params, shard_index, num_shards))
    if run.state is None or not run.state.is_completed():
        raise RuntimeError(f"shard {shard_index}/{num_shards}: run {run.name} ended {run.state and run.state.name}")
    return sharding.read_shard_report(params, shard_index, num_shards)


@task(
    name="teacher-inference-here", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE, tags=["teacher-inference"]
)
def infer_shard_here(params: DistillParams, shard_index: int, num_shards: int) -> sharding.ShardReport:
    """Run the shard in this process (the ``teacher-inference`` flow: one shard per flow run and worker)."""
    return sharding.infer_shard_here(params, shard_index, num_shards)
