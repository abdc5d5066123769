"""``teacher-inference``: one shard of teacher inference as its own flow, for fleets of workers.

``distill-flow`` with ``shard_deployment="teacher-inference/shard"`` starts one run of this flow per shard
(``run_deployment``, the parameters being the fields of ``pipeline.teacher.shards.ShardJob``); each worker that
picks one up reads the plan discovery wrote and fills its slot of the shared cache folder.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow

from flows.run_logs import forward_pipeline_logs
from pipeline.teacher.shards import ShardJob
from tasks.inference import infer_shard_here


@flow(name="teacher-inference", flow_run_name="teacher shard {shard_index}/{num_shards}")
def teacher_inference_flow(
    teacher_preset: str,
    teacher_checkpoint: str,
    cache_dir: str,
    plan_path: str,
    shard_index: int = 0,
    num_shards: int = 1,
    batch_size: int = 64,
    device: str = "auto",
    num_workers: int = 4,
    torch_threads: int | None = None,
    draft_decode: bool = False,
) -> dict[str, object]:
    """Infer shard ``shard_index`` of ``num_shards`` of the plan at ``plan_path`` into ``cache_dir``."""
    forward_pipeline_logs()
    job = ShardJob(
        teacher_preset=teacher_preset, teacher_checkpoint=teacher_checkpoint, cache_dir=cache_dir,
        plan_path=plan_path, shard_index=shard_index, num_shards=num_shards, batch_size=batch_size, device=device,
        num_workers=num_workers, torch_threads=torch_threads, draft_decode=draft_decode,
    )  # fmt: skip
    return asdict(infer_shard_here(job))
