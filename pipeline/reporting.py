"""What a distillation run reports: the metric rows and table, and the teacher-cache report with overlays."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from pipeline.charts import comparison_chart, training_curves
from pipeline.detection.run import DetectionRun
from pipeline.metrics.coco import STATS_KEYS
from pipeline.render import render_cache
from pipeline.teacher.discovery import Discovery
from pipeline.teacher.shards import ShardReport
from storage.atomic import atomic_write
from storage.cache import TeacherTargetCache
from storage.jsonfiles import write_json

HEADLINE = {"mpii": ("Mean", "Mean@0.1"), "coco": ("AP", "AP .5", "AP .75", "AR")}
"""Columns of the comparison table per dataset (PCKh@0.5 and @0.1; OKS AP and AR)."""


def metrics_row(label: str, preset: str, dataset: str, metrics: dict[str, float], *, init: str) -> dict[str, object]:
    """One table row: the model, where its training started (``init``), then every metric rounded for display
    (``metrics.json`` keeps the same)."""
    return {"model": label, "preset": preset, "init": init, "dataset": dataset,
            **{k: round(v, 4) for k, v in metrics.items()}}  # fmt: skip


def format_table(rows: Sequence[dict[str, object]]) -> str:
    """Plain-text comparison table: one line per model, the headline columns of each dataset, then its init.

    The init comes last because checkpoint names are long (FPD's MPII GT student is
    ``bs4_hourglass_128_4_1_16_0.00025_0_140_87.934_model_best.pth``): the numbers stay aligned.
    """
    lines = []
    for dataset in dict.fromkeys(str(r["dataset"]) for r in rows):
        columns = HEADLINE.get(dataset, ())
        names = {"Mean": "PCKh@0.5", "Mean@0.1": "PCKh@0.1"}
        lines.append(f"{dataset.upper():<28}" + "".join(f"{names.get(c, c):>10}" for c in columns) + "  init")
        for row in (r for r in rows if r["dataset"] == dataset):
            values = "".join(f"{float(row.get(c, float('nan'))):>10.4f}" for c in columns)
            lines.append(f"  {row['model']!s:<26}{values}  {row.get('init', '-')}")
    return "\n".join(lines)


def table_columns(row: Mapping[str, object]) -> dict[str, object]:
    """A metrics row without COCO's AR breakdown (AR .5, .75, M, L; ``metrics.json`` keeps them), so that the UI's
    table fits a 1600-pixel window."""
    return {key: value for key, value in row.items() if key not in STATS_KEYS[6:]}


def write_metrics(output_dir: str | Path, rows: Sequence[dict[str, object]]) -> Path:
    """``<output_dir>/metrics.json``: the rows, one per model and dataset."""
    return write_json(Path(output_dir) / "metrics.json", list(rows))


def cache_report(
    cache_dir: str | Path,
    discovery: Discovery,
    shards: Sequence[ShardReport],
    overlays: Path | None,
    n_overlays: int,
    detection: DetectionRun | None = None,
) -> str:
    """Markdown: the persons detected in the unlabeled folders (when a detector ran), what this run inferred, the
    cache's statistics and (``n_overlays`` > 0) overlays drawn from it."""
    summary = TeacherTargetCache(cache_dir).inspect(lowest=5)
    prov = summary.provenance
    lines = [
        "# Teacher cache", "",
        f"`{summary.path}`: teacher **{prov['teacher_preset']}** (sha256 `{prov['checkpoint_sha256'][:12]}`), "
        f"input {prov['input_size']}, heatmaps {prov['heatmap_size']}, flip test {prov['flip_test']}.", "",
        f"{summary.num_samples} samples ({summary.labelled} labelled, {summary.unlabeled} unlabeled) in "
        f"{summary.num_shards} shards, {summary.disk_bytes / 2**20:.1f} MiB ({summary.bytes_per_sample:.0f} B/sample).",
        *_detection_rows(detection),
        "", "## This run", "",
        "| source | images | samples | new images | new samples | of which edited / moved | inputs skipped |",
        "|---|---|---|---|---|---|---|",
        *(f"| {s.source}{' (new folder)' if s.new_folder else ''} | {s.images} | {s.samples} | {s.new_images} | "
          f"{s.new_samples} | {s.edited} / {s.moved} | {len(s.skipped)} |" for s in discovery.sources),
        "",
        *(f"- shard {r.shard_index}/{r.num_shards}: {r.new} new, {r.skipped} skipped, {r.failed} failed, "
          f"{r.seconds:.1f} s" for r in shards),
        *(["- nothing new: teacher inference skipped"] if not shards else []),
        *_skipped_inputs(discovery, shards),
        "", "## Teacher confidence per joint", "", "| joint | mean | p10 | p50 |", "|---|---|---|---|",
        *(f"| {j.joint} | {j.mean:.3f} | {j.p10:.3f} | {j.p50:.3f} |" for j in summary.joint_confidence),
    ]  # fmt: skip
    if n_overlays and overlays is not None:
        shutil.rmtree(overlays, ignore_errors=True)  # this run's picks only, not those of earlier runs
        index = render_cache(cache_dir, overlays, n=n_overlays)
        lines += ["", "## Overlays", "", f"{n_overlays} cached samples drawn over their crops: `{index}`"]
    return "\n".join(lines) + "\n"


SHOWN_SKIPPED = 20


def _detection_rows(detection: DetectionRun | None) -> list[str]:
    """Markdown section of the detection stage: the detector, then one row per folder."""
    if detection is None:
        return []
    if not detection.detector:
        return ["", "## Person detection", "", *(f"- `{f.folder}`: its own detections.json" for f in detection.folders)]
    d = detection.detector
    return [
        "", "## Person detection", "",
        f"`{d['model']}` (weights `{d['weights']}`, sha256 `{str(d['weights_sha256'])[:12]}`), score >= "
        f"{d['score_threshold']}, NMS {d['nms_threshold']}, sqrt(w*h) >= {d['min_box_size']} px, at most "
        f"{d['max_persons']} per image, input {d['min_size']}/{d['max_size']}, {d['precision']}; "
        f"{detection.seconds:.1f} s.", "",
        "| folder | images | detected this run | persons | images with persons | images without persons | failed |",
        "|---|---|---|---|---|---|---|",
        *(f"| `{f.folder}` | {f.images} | {f.detected} | {f.persons} | {f.with_persons} | {f.without_persons} | "
          f"{len(f.failed)} |" if not f.own_file else f"| `{f.folder}` | its own detections.json | | | | | |"
          for f in detection.folders),
    ]  # fmt: skip


def _skipped_inputs(discovery: Discovery, shards: Sequence[ShardReport]) -> list[str]:
    """Markdown rows of the inputs left out (unreadable files, bad boxes or annotations, images that failed to
    decode), the first :data:`SHOWN_SKIPPED`; all of them are in ``run.json``."""
    rows = [(s.source, name, reason) for s in discovery.sources for name, reason in s.skipped]
    rows += [(f"shard {r.shard_index}/{r.num_shards}", path, "image could not be decoded (retried next run)")
             for r in shards for path in r.failed_files]  # fmt: skip
    if not rows:
        return []
    cells = [f"| {source} | `{name}` | {reason.replace('|', '/')} |" for source, name, reason in rows[:SHOWN_SKIPPED]]
    more = ["", f"... and {len(rows) - SHOWN_SKIPPED} more (run.json)"] if len(rows) > SHOWN_SKIPPED else []
    return ["", f"## Inputs skipped ({len(rows)})", "", "| source | file or item | reason |", "|---|---|---|",
            *cells, *more]  # fmt: skip


def run_summary(
    discovery: Discovery,
    shards: Sequence[ShardReport],
    students: Sequence[Mapping[str, object]],
    detection: DetectionRun | None = None,
) -> dict[str, object]:
    """JSON-safe record of what this run found, inferred and trained (``run.json``).

    ``students``: one mapping per student (the fields of ``pipeline.students.StudentResult``: variant, preset,
    weights, output_dir, init), in training order.
    """
    return {
        "detection": None if detection is None else asdict(detection),
        "sources": [asdict(s) | {"new_folder": s.new_folder} for s in discovery.sources],
        "shards": [asdict(r) for r in shards],
        "inferred": sum(r.new for r in shards),
        "students": [dict(s) for s in students],
    }


def write_cache_report(
    output_dir: str | Path,
    cache_dir: str | Path,
    discovery: Discovery,
    shards: Sequence[ShardReport],
    n_overlays: int,
    students: Sequence[Mapping[str, object]],
    detection: DetectionRun | None = None,
) -> tuple[Path, str]:
    """Write ``report.md`` (detection, cache statistics, overlays under ``overlays/``) and ``run.json`` (with
    ``students`` and ``detection``, see :func:`run_summary`); return the report."""
    output_dir = Path(output_dir)
    write_json(output_dir / "run.json", run_summary(discovery, shards, students, detection))
    markdown = cache_report(cache_dir, discovery, shards, output_dir / "overlays", n_overlays, detection)
    path = output_dir / "report.md"
    with atomic_write(path, "w") as handle:
        handle.write(markdown)
    return path, markdown


def write_pictures(
    output_dir: str | Path, rows: Sequence[Mapping[str, object]], students: Sequence[Mapping[str, object]]
) -> tuple[list[Path], str]:
    """``<output_dir>/comparison.png`` (the metric rows as bars) and ``curves.png`` in each student's folder (from
    its ``log.jsonl``); the pictures' paths and a markdown page showing them inline (base64 PNGs, so that the
    Prefect UI shows them without serving files).

    Args:
        output_dir: the run's output folder.
        rows: the metric rows (``metrics_row``).
        students: one dict per trained student with ``variant``, ``preset`` and ``output_dir``.
    """
    comparison = comparison_chart(rows, Path(output_dir) / "comparison.png",
                                  title=f"{Path(output_dir).name}: teacher and students, flip test")  # fmt: skip
    pictures = [("teacher and students", comparison)]
    for student in students:
        log_path = Path(str(student["output_dir"])) / "log.jsonl"
        if not log_path.is_file():  # trained elsewhere (torchrun left no log here): nothing to draw
            continue
        log = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        if log:
            title = f"student {student['variant']} ({student['preset']})"
            # its first evaluated dataset's row: where the student ended, for runs not validated per epoch
            final = next((r for r in rows if r.get("model") == f"student {student['variant']}"), None)
            pictures.append((title, training_curves(log, log_path.with_name("curves.png"), title=title, final=final)))
    sections = []
    for title, path in pictures:
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        sections.append(f"### {title}\n\n`{path}`\n\n![{title}](data:image/png;base64,{encoded})")
    return [path for _, path in pictures], "\n\n".join(sections) + "\n"
