"""``teacher-inference``: one shard of teacher inference as its own flow, for fleets of workers.

``distill-flow`` with ``shard_deployment="teacher-inference/default"`` starts one run of this flow per shard
(``run_deployment``); each worker that picks one up fills its slot of the shared cache folder.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow

from flows.params import DistillParams
from tasks.inference import infer_shard_here


@flow(name="teacher-inference")
def teacher_inference_flow(params: DistillParams, shard_index: int = 0, num_shards: int = 1) -> dict[str, object]:
    """Infer shard ``shard_index`` of ``num_shards`` of the samples ``params`` names into its cache folder."""
    return asdict(infer_shard_here(params, shard_index, num_shards))
