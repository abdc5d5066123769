"""Teacher-inference shards: one shard's job, its run in this process or a subprocess, and its report file.

Shard ``i`` of ``n`` infers its slot of the run's plan (``pipeline.teacher.plan.select_slot``) and commits its
own cache shards under its slot lock, so shards run side by side in processes on one machine or in flow runs on
many (``teacher-inference`` deployment) against one shared cache folder. A shard reads the plan that discovery
wrote; it never rescans the sources. Each shard leaves a JSON report beside the plan, which the parent flow
reads back, whichever machine ran it.
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pipeline.runtime import load_model, resolve_device, set_torch_threads
from pipeline.teacher.inference import open_teacher_cache, run_teacher_inference
from pipeline.teacher.plan import load_plan
from storage.cache import CacheLockedError, CacheWriteError
from storage.jsonfiles import read_json, write_json


@dataclass(frozen=True)
class ShardJob:
    """Everything one shard needs, as plain values (it crosses process and machine boundaries as JSON).

    Attributes:
        teacher_preset: the teacher's ``models`` preset.
        teacher_checkpoint: its weights (their sha256 is part of the cache identity).
        cache_dir: the teacher cache folder.
        plan_path: the plan discovery wrote (``pipeline.teacher.plan.save_plan``).
        shard_index, num_shards: this shard's slot.
        batch_size: crops per forward pass.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        num_workers: image decoding processes.
        torch_threads: CPU threads (None: torch's default).
        draft_decode: decode JPEGs in draft mode (faster, slightly different targets; recorded in the cache).
    """

    teacher_preset: str
    teacher_checkpoint: str
    cache_dir: str
    plan_path: str
    shard_index: int = 0
    num_shards: int = 1
    batch_size: int = 64
    device: str = "auto"
    num_workers: int = 4
    torch_threads: int | None = None
    draft_decode: bool = False

    @property
    def report_path(self) -> Path:
        return Path(self.plan_path).parent / f"shard-{self.shard_index}-of-{self.num_shards}.json"

    def shard(self, shard_index: int, num_shards: int) -> ShardJob:
        """The same job for another slot."""
        return replace(self, shard_index=shard_index, num_shards=num_shards)


@dataclass(frozen=True)
class ShardReport:
    """What one shard did (``InferenceReport`` plus which slot and how long)."""

    shard_index: int
    num_shards: int
    new: int
    skipped: int
    failed: int
    failed_files: tuple[str, ...]
    seconds: float


def read_shard_report(job: ShardJob) -> ShardReport:
    """The report a finished shard left beside the plan."""
    data = read_json(job.report_path, "teacher-inference shard report")
    return ShardReport(**{**data, "failed_files": tuple(data["failed_files"])})


def run_shard(job: ShardJob) -> ShardReport:
    """Run ``job`` in this process and write its report."""
    start = time.perf_counter()
    set_torch_threads(job.torch_threads)
    preset, model = load_model(job.teacher_preset, job.teacher_checkpoint)
    report = run_teacher_inference(
        model, preset, load_plan(job.plan_path),
        open_teacher_cache(job.cache_dir, preset, job.teacher_checkpoint, draft_decode=job.draft_decode),
        batch_size=job.batch_size, device=resolve_device(job.device), shard_index=job.shard_index,
        num_shards=job.num_shards, num_workers=job.num_workers, progress=False, draft_decode=job.draft_decode,
    )  # fmt: skip
    result = ShardReport(
        job.shard_index, job.num_shards, report.new, report.skipped, report.failed, report.failed_files,
        round(time.perf_counter() - start, 2),
    )  # fmt: skip
    write_json(job.report_path, asdict(result))
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


def run_shard_subprocess(job: ShardJob) -> ShardReport:
    """Run ``job`` as ``python -m pipeline.teacher.shards`` (the job as JSON on stdin) and return its report.

    The shard's log goes beside its report (``shard-<i>-of-<n>.log``).

    Raises:
        RuntimeError: the shard process failed; the message carries the end of its log.
    """
    log_path = job.report_path.with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.teacher.shards"], input=json.dumps(asdict(job)), text=True,
            stdout=subprocess.DEVNULL, stderr=log, env=shard_environment(os.environ, job.shard_index, job.num_shards),
            check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(encoding="utf-8").strip().splitlines()[-20:])
        raise RuntimeError(f"teacher-inference shard {job.shard_index}/{job.num_shards} exited {proc.returncode} "
                           f"(log {log_path}):\n{tail}")  # fmt: skip
    return read_shard_report(job)


def main(argv: Sequence[str] | None = None) -> int:
    """Subprocess entry point: read a ``ShardJob`` as JSON on stdin, run it, print its report."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.teacher.shards", description="one teacher shard")
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    job = ShardJob(**json.loads(sys.stdin.read()))
    try:
        report = run_shard(job)
    except (CacheLockedError, CacheWriteError, ValueError) as exc:
        # The parent shows the end of this log: one line saying what and where (a full disk, a damaged manifest,
        # a bad device), not a traceback through the pipeline.
        print(f"teacher-inference shard {job.shard_index}/{job.num_shards}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
