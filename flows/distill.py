"""``distill-flow``: detect persons in the unlabeled folders, discover sources, fill the teacher cache (sharded),
train students, evaluate, report.

The flow only composes tasks from ``tasks/``; each task wraps a plain function of ``pipeline``. Re-running with
nothing new skips inference (the cache manifest says what is done); a retried or re-run flow resumes student
training from each student's own checkpoint.

Run it locally: ``python -m flows.distill --params params.json``; on workers: see ``docs/prefect.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped

from flows.params import (
    Baseline,
    Dataset,
    DetectorParams,
    DeviceParams,
    DistillParams,
    LabelledDataset,
    ScheduleParams,
    StudentParams,
    TeacherParams,
)
from flows.run_logs import forward_pipeline_logs
from pipeline.students import StudentResult, check_teacher_and_student, run_variants, variant_config, variant_init
from pipeline.teacher.discovery import Discovery
from pipeline.teacher.shards import ShardReport
from tasks.detection import detect_persons
from tasks.discovery import discover_sources
from tasks.evaluation import score_model
from tasks.inference import infer_shard, infer_shard_remote
from tasks.reporting import publish_cache_report, publish_metrics, publish_pictures
from tasks.training import train_student


# Threads only wait on shard subprocesses or remote runs, so one per shard is enough; the work runs elsewhere.
@flow(name="distill-flow", task_runner=ThreadPoolTaskRunner(max_workers=32))
def distill_flow(
    teacher: TeacherParams,
    labelled: list[LabelledDataset],
    cache_dir: str,
    output_dir: str,
    student: StudentParams | None = None,
    unlabeled_roots: list[str] | None = None,
    alpha: float = 0.5,
    use_ground_truth: bool = True,
    baselines: list[Baseline] | None = None,
    schedule: ScheduleParams | None = None,
    eval_datasets: list[Dataset] | None = None,
    coco_detections: str | None = None,
    detector: DetectorParams | None = None,
    device: DeviceParams | None = None,
    num_shards: int = 1,
    shard_deployment: str | None = None,
    render_overlays: int = 4,
) -> dict[str, object]:
    """Fast Pose Distillation end to end; the parameters are the fields of :class:`flows.params.DistillParams`.

    Returns:
        ``{"metrics": rows, "students": {variant: weights path}, "inits": {variant: where it started},
        "inferred": new cache samples}``.
    """
    # Unset optional parameters take the DistillParams defaults, so the defaults live in one place.
    given = {name: value for name, value in locals().items() if value is not None}
    return run_distillation(DistillParams.model_validate(given))


def run_distillation(params: DistillParams) -> dict[str, object]:
    """The body of ``distill-flow`` (must run inside a flow run: it calls tasks and creates artifacts)."""
    logger = get_run_logger()
    forward_pipeline_logs()
    # Fail before any work when the teacher, the student and the data disagree on the joints.
    check_teacher_and_student(params.teacher.preset, params.student.preset, [s.dataset for s in params.labelled])
    student = params.student
    variants = run_variants(params.baselines, fpd_init=student.fpd_init, gt_checkpoint=student.gt_checkpoint)
    steps = 3 + len(variants)  # inference, each student, evaluation, report
    progress = create_progress_artifact(0.0, key="distill-progress", description="distill-flow stages done (%)")

    detection = None
    if params.unlabeled_roots and params.detection_store is not None:
        detection = detect_persons(
            params.unlabeled_roots, params.detection_store, params.detector.settings(params.device.amp),
            params.device.device, params.detector.batch_size, params.device.num_workers, params.device.torch_threads,
        )  # fmt: skip
    discovery = discover_sources(
        [s.train_spec for s in params.labelled], params.unlabeled_roots, params.teacher.preset,
        params.teacher.checkpoint, params.cache_dir, str(params.plan_path), params.detection_store,
    )  # fmt: skip
    shards = _infer(params, discovery, progress, 100.0 / steps)
    update_progress_artifact(progress, 100.0 / steps)

    base, trained = params.base_train_config(), {}
    for i, variant in enumerate(variants):  # gt_only first: the FPD students may start from its weights
        init = variant_init(variant, fpd_init=student.fpd_init, gt_checkpoint=student.gt_checkpoint,
                            backbone=student.backbone, gt_student=trained.get("gt_only"))  # fmt: skip
        config = variant_config(
            base, variant, init=init, alpha=params.alpha, use_ground_truth=params.use_ground_truth,
            discovery=discovery, cache_dir=params.cache_dir, teacher=params.teacher.model_dump(),
            students_dir=params.output_path / "students",
        )  # fmt: skip
        trained[variant] = train_student(config, variant, init.description, params.device.torch_threads)
        update_progress_artifact(progress, 100.0 * (2 + i) / steps)

    rows = [
        score_model(label, preset, weights, dataset, source.root, source.val, init=start,
                    detections=params.coco_detections if dataset == "coco" else None,
                    batch_size=params.device.inference_batch_size, device=params.device.device)
        for dataset, source in ((d, params.source(d)) for d in params.eval_datasets)
        for label, preset, weights, start in _models(params, trained)
    ]  # fmt: skip
    update_progress_artifact(progress, 100.0 * (steps - 1) / steps)

    metrics_path = publish_metrics(params.output_dir, rows)
    publish_pictures(params.output_dir, rows, list(trained.values()))
    report_path = publish_cache_report(params.output_dir, params.cache_dir, discovery, shards, params.render_overlays,
                                       list(trained.values()), detection)  # fmt: skip
    update_progress_artifact(progress, 100.0)
    logger.info("metrics: %s; report: %s; cache: %s", metrics_path, report_path, params.cache_dir)
    return {
        "metrics": rows,
        "students": {v: s.weights for v, s in trained.items()},
        "inits": {v: s.init for v, s in trained.items()},
        "inferred": sum(s.new for s in shards),
    }


def _models(params: DistillParams, trained: dict[str, StudentResult]) -> list[tuple[str, str, str, str]]:
    """``(label, preset, weights, init)`` of every model in the table: the teacher (not trained here: init
    ``given checkpoint``), then each student."""
    return [("teacher", params.teacher.preset, params.teacher.checkpoint, "given checkpoint")] + [
        (f"student {variant}", result.preset, result.weights, result.init) for variant, result in trained.items()
    ]


def _infer(params: DistillParams, discovery: Discovery, progress: UUID, step: float) -> list[ShardReport]:
    """Map teacher inference over the shards (or skip it when the cache holds every sample); each finished shard
    advances the ``progress`` artifact by its share of ``step`` percent."""
    logger = get_run_logger()
    if discovery.new_samples == 0:
        logger.info("teacher cache is up to date: inference skipped")
        return []
    jobs = [params.shard_job(i) for i in range(params.num_shards)]
    if params.shard_deployment:
        futures = infer_shard_remote.map(jobs, unmapped(params.shard_deployment))
    else:
        futures = infer_shard.map(jobs)
    reports = []
    for future in as_completed(futures):
        report = future.result()
        reports.append(report)
        update_progress_artifact(progress, step * len(reports) / params.num_shards)
        logger.info("shard %d/%d: %d new, %d skipped, %d failed in %.1f s", report.shard_index, report.num_shards,
                    report.new, report.skipped, report.failed, report.seconds)  # fmt: skip
        for path in report.failed_files:
            logger.warning("teacher could not read %s", path)
    return sorted(reports, key=lambda r: r.shard_index)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the flow once in this process (ephemeral Prefect API unless PREFECT_API_URL is set)."""
    parser = argparse.ArgumentParser(prog="python -m flows.distill", description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="JSON file of distill-flow parameters")
    args = parser.parse_args(argv)
    with open(args.params, encoding="utf-8") as handle:
        result = distill_flow(**json.load(handle))
    print(json.dumps(result["metrics"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
