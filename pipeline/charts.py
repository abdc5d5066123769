"""Pictures of a run: training curves per student, and the teacher/student comparison (per-joint PCKh, COCO AP).

Drawn with matplotlib's object API (``Figure`` + Agg canvas, no pyplot): no global state, so the flow's task
threads can draw at the same time, and no display is needed. Files are written atomically.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.metrics.coco import STATS_KEYS
from storage.atomic import atomic_write

MPII_JOINT_COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")
"""HRNet's PCKh table columns (``Mean`` is PCKh@0.5 over the 14 scored joints)."""
COCO_COLUMNS = STATS_KEYS[:6]
"""AP, AP .5, AP .75, AP (M), AP (L), AR: pycocotools' first six statistics."""
VALIDATION_KEYS = (("AP", "OKS AP"), ("Mean", "PCKh@0.5"))
"""(metric key in the log, axis label): COCO's when its records have it, else MPII's."""
LOSS_SERIES = (("loss", "total"), ("loss_teacher", "teacher term"), ("loss_ground_truth", "ground-truth term"))


def _save(figure: Figure, out_path: str | Path) -> Path:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    with atomic_write(out_path) as handle:
        handle.write(buffer.getvalue())
    return Path(out_path)


def training_curves(
    log: Sequence[Mapping[str, object]],
    out_path: str | Path,
    *,
    title: str,
    final: Mapping[str, object] | None = None,
) -> Path:
    """Loss terms, learning rate and validation metric per epoch, from the records of a run's ``log.jsonl``.

    Args:
        log: one record per epoch (``epoch``, ``lr``, ``loss`` and, when computed, ``loss_teacher``,
            ``loss_ground_truth``, ``metrics``), as ``pipeline.training.loop`` writes them.
        out_path: the PNG to write.
        title: shown above the panels (e.g. the variant and preset).
        final: the flip-test evaluation of the final weights (a metrics row with ``AP`` or ``Mean``), drawn at the
            last epoch: runs that are not validated per epoch (the flow's students) still show where they ended.

    Raises:
        ValueError: ``log`` is empty.
    """
    if not log:
        raise ValueError(f"no epochs to draw for {title}")
    epochs = [int(r["epoch"]) + 1 for r in log]
    figure = Figure(figsize=(13, 3.8), layout="constrained")
    loss_axes, lr_axes, metric_axes = figure.subplots(1, 3, sharex=True)  # one epoch axis, even for one point
    for key, label in LOSS_SERIES:
        values = [(e, float(r[key])) for e, r in zip(epochs, log, strict=True) if r.get(key) is not None]
        if values:
            loss_axes.plot(*zip(*values, strict=True), marker="o", markersize=3, label=label)
    loss_axes.set(title="training loss (MSE on heatmaps)", xlabel="epoch", yscale="log")
    loss_axes.legend(fontsize=8)
    lr_axes.plot(epochs, [float(r["lr"]) for r in log], marker="o", markersize=3, color="tab:gray")
    lr_axes.set(title="learning rate", xlabel="epoch", yscale="log")
    validated = [r["metrics"] for r in log if r.get("metrics")] + ([final] if final else [])
    key, label = next(((k, name) for k, name in VALIDATION_KEYS if any(k in m for m in validated)),
                      VALIDATION_KEYS[-1])  # fmt: skip
    scored = [(e, float(r["metrics"][key])) for e, r in zip(epochs, log, strict=True)
              if key in (r.get("metrics") or {})]  # fmt: skip
    if scored:
        metric_axes.plot(*zip(*scored, strict=True), marker="o", color="tab:green")
        for epoch, value in scored[-1:]:
            metric_axes.annotate(f"{value:.4g}", (epoch, value), textcoords="offset points", xytext=(0, 6),
                                 ha="center", fontsize=8)  # fmt: skip
    if final is not None and final.get(key) is not None:
        value = float(final[key])  # type: ignore[arg-type]
        metric_axes.plot([epochs[-1]], [value], marker="*", markersize=12, linestyle="none", color="tab:red",
                         label="final weights")  # fmt: skip
        metric_axes.annotate(f"{value:.4g}", (epochs[-1], value), textcoords="offset points", xytext=(0, 8),
                             ha="center", fontsize=8)  # fmt: skip
        metric_axes.legend(fontsize=8)
    elif not scored:
        metric_axes.text(0.5, 0.5, "not validated during training", ha="center", va="center",
                         transform=metric_axes.transAxes, color="gray")  # fmt: skip
    metric_axes.set(title=f"{label} (flip test)", xlabel="epoch", ylim=(0, None))
    metric_axes.set_ylim(top=metric_axes.get_ylim()[1] * 1.1)  # room for the last value's label
    for axes in (loss_axes, lr_axes, metric_axes):
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    return _save(figure, out_path)


def comparison_chart(rows: Sequence[Mapping[str, object]], out_path: str | Path, *, title: str) -> Path:
    """Grouped bars of the metric rows (``pipeline.reporting.metrics_row``), one panel per dataset.

    MPII: PCKh@0.5 per joint and the mean; COCO: AP, AP .5, AP .75, AP (M), AP (L), AR. pycocotools reports -1 for a
    statistic with no ground truth in its range (e.g. no large person in a small validation set): such bars are
    left out and the panel says so, rather than drawn below zero.

    Raises:
        ValueError: no row of a known dataset.
    """
    datasets = [d for d in dict.fromkeys(str(r["dataset"]) for r in rows) if d in ("mpii", "coco")]
    if not datasets:
        raise ValueError("no MPII or COCO rows to compare")
    figure = Figure(figsize=(12, 3.8 * len(datasets)), layout="constrained")
    panels = figure.subplots(len(datasets), 1, squeeze=False)[:, 0]
    for axes, dataset in zip(panels, datasets, strict=True):
        columns = MPII_JOINT_COLUMNS if dataset == "mpii" else COCO_COLUMNS
        models = [r for r in rows if r["dataset"] == dataset]
        width = 0.8 / len(models)
        missing = set()
        for i, row in enumerate(models):
            xs, heights = [], []
            for j, column in enumerate(columns):
                value = row.get(column)
                if value is None or float(value) < 0:
                    missing.add(column)
                    continue
                xs.append(j - 0.4 + width * (i + 0.5))
                heights.append(float(value))
            axes.bar(xs, heights, width, label=f"{row['model']} ({row['preset']})")
        names = [("PCKh@0.5" if c == "Mean" else c) for c in columns]
        axes.set_xticks(range(len(columns)), names)
        axes.set_ylabel("PCKh@0.5 (%)" if dataset == "mpii" else "OKS")
        axes.set_title(dataset.upper())
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        if missing:
            axes.text(0.0, -0.18, f"not drawn: {', '.join(sorted(missing))} (pycocotools' -1: no ground truth "
                      "in that range)", transform=axes.transAxes, fontsize=8, color="gray")  # fmt: skip
    figure.suptitle(title)
    return _save(figure, out_path)
