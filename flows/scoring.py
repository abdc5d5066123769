"""Scoring and reporting for ``distill-flow``: flip-test evaluation, metric rows, the teacher-cache report."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import asdict

from flows import stages
from flows.params import Dataset, DistillParams
from flows.sharding import ShardReport

HEADLINE = {"mpii": ("Mean", "Mean@0.1"), "coco": ("AP", "AP .5", "AP .75", "AR")}
"""Columns of the comparison table per dataset (PCKh@0.5 and @0.1; OKS AP and AR)."""


def evaluate(params: DistillParams, dataset: Dataset, preset_name: str, weights: str) -> dict[str, float]:
    """Score ``weights`` on the validation split of ``dataset`` with flip test (PCKh table or COCO AP table).

    Flip test is the evaluators' default (HRNet's ``FLIP_TEST``), the same for the teacher and every student.
    """
    import torch

    from models import create_from_preset, get_preset
    from pipeline import evaluate as evaluation
    from storage.checkpoints import load_checkpoint

    preset = get_preset(preset_name)
    model = create_from_preset(preset)
    load_checkpoint(model, weights)
    device = torch.device(stages.device_name(params))
    model.to(device).eval()
    source = params.source(dataset)
    batch = params.device.inference_batch_size
    if dataset == "mpii":
        result = evaluation.evaluate_mpii(model, preset, source.root, split=source.val, batch_size=batch, device=device)
    else:
        result = evaluation.evaluate_coco(model, preset, source.root, source.val, detections=params.coco_detections,
                                          batch_size=batch, device=device)  # fmt: skip
    return {str(k): float(v) for k, v in result.items()}


def metrics_row(label: str, preset: str, dataset: str, metrics: dict[str, float]) -> dict[str, object]:
    """One table row: the model, then every metric rounded for display (``metrics.json`` keeps the same)."""
    return {"model": label, "preset": preset, "dataset": dataset, **{k: round(v, 4) for k, v in metrics.items()}}


def format_table(rows: Sequence[dict[str, object]]) -> str:
    """Plain-text comparison table: one line per model, the headline columns of each dataset."""
    lines = []
    for dataset in dict.fromkeys(str(r["dataset"]) for r in rows):
        columns = HEADLINE.get(dataset, ())
        names = {"Mean": "PCKh@0.5", "Mean@0.1": "PCKh@0.1"}
        lines.append(f"{dataset.upper():<28}" + "".join(f"{names.get(c, c):>10}" for c in columns))
        for row in (r for r in rows if r["dataset"] == dataset):
            values = "".join(f"{float(row.get(c, float('nan'))):>10.4f}" for c in columns)
            lines.append(f"  {row['model']!s:<26}{values}")
    return "\n".join(lines)


def cache_report(params: DistillParams, discovery: stages.Discovery, shards: Sequence[ShardReport]) -> str:
    """Markdown: what this run inferred, the cache's statistics and the overlays rendered from it."""
    from storage.cache import TeacherTargetCache

    summary = TeacherTargetCache(params.cache_dir).inspect(lowest=5)
    prov = summary.provenance
    lines = [
        "# Teacher cache", "",
        f"`{summary.path}`: teacher **{prov['teacher_preset']}** (sha256 `{prov['checkpoint_sha256'][:12]}`), "
        f"input {prov['input_size']}, heatmaps {prov['heatmap_size']}, flip test {prov['flip_test']}.", "",
        f"{summary.num_samples} samples ({summary.labelled} labelled, {summary.unlabeled} unlabeled) in "
        f"{summary.num_shards} shards, {summary.disk_bytes / 2**20:.1f} MiB ({summary.bytes_per_sample:.0f} B/sample).",
        "", "## This run", "",
        "| source | images | samples | new images | new samples |", "|---|---|---|---|---|",
        *(f"| {s.source}{' (new folder)' if s.new_folder else ''} | {s.images} | {s.samples} | {s.new_images} | "
          f"{s.new_samples} |" for s in discovery.sources),
        "",
        *(f"- shard {r.shard_index}/{r.num_shards}: {r.new} new, {r.skipped} skipped, {r.failed} failed, "
          f"{r.seconds:.1f} s" for r in shards),
        *(["- nothing new: teacher inference skipped"] if not shards else []),
        "", "## Teacher confidence per joint", "", "| joint | mean | p10 | p50 |", "|---|---|---|---|",
        *(f"| {j.joint} | {j.mean:.3f} | {j.p10:.3f} | {j.p50:.3f} |" for j in summary.joint_confidence),
    ]  # fmt: skip
    if params.render_overlays:
        from pipeline.render import render_cache

        overlays = params.output_path / "overlays"
        shutil.rmtree(overlays, ignore_errors=True)  # this run's picks only, not those of earlier runs
        index = render_cache(params.cache_dir, overlays, n=params.render_overlays)
        lines += ["", "## Overlays", "", f"{params.render_overlays} cached samples drawn over their crops: `{index}`"]
    return "\n".join(lines) + "\n"


def run_summary(discovery: stages.Discovery, shards: Sequence[ShardReport]) -> dict[str, object]:
    """JSON-safe record of what this run found and inferred (``run.json``)."""
    return {
        "sources": [asdict(s) | {"new_folder": s.new_folder} for s in discovery.sources],
        "shards": [asdict(r) for r in shards],
        "inferred": sum(r.new for r in shards),
    }
