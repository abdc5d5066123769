"""Teacher-inference shards: the plain shard run, its subprocess launcher and its report file.

Shard ``i`` of ``n`` infers every ``n``-th missing sample (``pipeline.inference.run_teacher_inference``) and
commits its own cache shards under its slot lock, so shards run side by side in processes on one machine or in
flow runs on many (``teacher-inference`` deployment) against one shared cache folder. Each shard leaves a JSON
report in ``<output_dir>/inference/`` that the parent flow reads back, whichever machine ran it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from flows import stages
from flows.params import DistillParams


@dataclass(frozen=True)
class ShardReport:
    """What one shard did (``InferenceReport`` plus where and how long)."""

    shard_index: int
    num_shards: int
    new: int
    skipped: int
    failed: int
    failed_files: tuple[str, ...]
    seconds: float


def report_path(params: DistillParams, shard_index: int, num_shards: int) -> Path:
    return params.output_path / "inference" / f"shard-{shard_index}-of-{num_shards}.json"


def read_shard_report(params: DistillParams, shard_index: int, num_shards: int) -> ShardReport:
    data = json.loads(report_path(params, shard_index, num_shards).read_text())
    return ShardReport(**{**data, "failed_files": tuple(data["failed_files"])})


def shard_parameters(params: DistillParams, shard_index: int, num_shards: int) -> dict[str, object]:
    """Parameters of a ``teacher-inference`` flow run for one shard (JSON-safe)."""
    return {"params": params.model_dump(mode="json"), "shard_index": shard_index, "num_shards": num_shards}


def infer_shard_here(params: DistillParams, shard_index: int, num_shards: int) -> ShardReport:
    """Run shard ``shard_index`` of ``num_shards`` in this process and write its report."""
    import torch

    from models import create_from_preset
    from pipeline.inference import run_teacher_inference
    from storage.checkpoints import load_checkpoint

    start = time.perf_counter()
    if params.device.torch_threads:
        torch.set_num_threads(params.device.torch_threads)
    preset = stages.teacher_preset(params)
    model = create_from_preset(preset)
    load_checkpoint(model, params.teacher.checkpoint)
    report = run_teacher_inference(
        model, preset, stages.teacher_records(params), stages.open_cache(params),
        batch_size=params.device.inference_batch_size, device=stages.device_name(params),
        shard_index=shard_index, num_shards=num_shards, num_workers=params.device.num_workers, progress=False,
    )  # fmt: skip
    result = ShardReport(
        shard_index,
        num_shards,
        report.new,
        report.skipped,
        report.failed,
        tuple(str(f) for f in report.failed_files),
        round(time.perf_counter() - start, 2),
    )
    stages.write_json(report_path(params, shard_index, num_shards), asdict(result))
    return result


def shard_environment(environ: Mapping[str, str], shard_index: int, num_shards: int) -> dict[str, str]:
    """The shard's environment: its share of the visible GPUs, or of the CPU cores.

    GPUs listed in ``CUDA_VISIBLE_DEVICES`` are dealt round-robin (shard ``i`` gets every ``n``-th one); without
    GPUs each shard gets ``cores / n`` threads so that ``n`` shards do not oversubscribe the machine.
    """
    env = dict(environ)
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if len(visible) >= num_shards > 1:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[shard_index::num_shards])
    threads = max(1, (os.cpu_count() or 1) // num_shards)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


def run_shard_subprocess(params: DistillParams, shard_index: int, num_shards: int) -> ShardReport:
    """Run one shard as ``python -m flows.sharding`` (parameters on stdin) and return its report.

    The shard's log goes to ``<output_dir>/inference/shard-<i>-of-<n>.log``.

    Raises:
        RuntimeError: the shard process failed; the message carries the end of its log.
    """
    log_path = report_path(params, shard_index, num_shards).with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "flows.sharding", "--shard-index", str(shard_index), "--num-shards",
               str(num_shards)]  # fmt: skip
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(
            command, input=params.model_dump_json(), text=True, stdout=subprocess.DEVNULL, stderr=log,
            env=shard_environment(os.environ, shard_index, num_shards), check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(encoding="utf-8").strip().splitlines()[-20:])
        raise RuntimeError(f"teacher-inference shard {shard_index}/{num_shards} exited {proc.returncode} "
                           f"(log {log_path}):\n{tail}")  # fmt: skip
    return read_shard_report(params, shard_index, num_shards)


def main(argv: Sequence[str] | None = None) -> int:
    """Subprocess entry point: read ``DistillParams`` JSON on stdin, run one shard, print its report."""
    parser = argparse.ArgumentParser(prog="python -m flows.sharding", description="one teacher-inference shard")
    parser.add_argument("--shard-index", type=int, required=True)
    parser.add_argument("--num-shards", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    params = DistillParams.model_validate_json(sys.stdin.read())
    print(json.dumps(asdict(infer_shard_here(params, args.shard_index, args.num_shards))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
