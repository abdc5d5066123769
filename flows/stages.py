"""The plain functions behind each ``distill-flow`` stage: no Prefect here, so they run and test without a server.

``tasks/`` wraps each of them in a Prefect task (retries, caching, logging policy); ``flows/distill.py`` composes
the tasks. Everything passed between stages is a path or a small frozen summary, never a model or a tensor.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flows.params import DistillParams
from pipeline.data.records import SampleRecord
from pipeline.training.config import LabelledSource as TrainLabelled
from storage.atomic import atomic_write

if TYPE_CHECKING:
    from models import ModelPreset
    from storage.cache import TeacherTargetCache


VARIANTS = ("gt_only", "fpd_labelled", "fpd")
"""Students a run can train, in table order: ground truth alone, FPD on labelled images, FPD + unlabeled folders."""


@dataclass(frozen=True)
class SourceSummary:
    """One source as discovery saw it.

    Attributes:
        source: source name (``"mpii/train"``, ``"folder/street"``).
        images: distinct images in the source.
        samples: person instances (one per image for unlabeled folders).
        new_images: images with at least one instance missing from the teacher cache.
        new_samples: instances missing from the teacher cache.
    """

    source: str
    images: int
    samples: int
    new_images: int
    new_samples: int

    @property
    def unlabeled(self) -> bool:
        return self.source.startswith("folder/")

    @property
    def new_folder(self) -> bool:
        """A folder none of whose images the cache has seen: dropped in since the last run."""
        return self.unlabeled and self.samples > 0 and self.new_samples == self.samples


@dataclass(frozen=True)
class Discovery:
    """What the teacher must infer this run, per source."""

    sources: tuple[SourceSummary, ...]

    @property
    def new_samples(self) -> int:
        return sum(s.new_samples for s in self.sources)

    @property
    def unlabeled_sources(self) -> tuple[str, ...]:
        return tuple(s.source for s in self.sources if s.unlabeled and s.samples > 0)

    def digest(self, sources: tuple[str, ...]) -> str:
        """Stable hash of the named sources' sizes: a student trained on them is stale when it changes."""
        sizes = sorted((s.source, s.images, s.samples) for s in self.sources if s.source in sources)
        return hashlib.sha256(json.dumps(sizes).encode()).hexdigest()[:12]

    def log_lines(self) -> list[str]:
        """Human-readable lines for the run log: every source, new folders called out."""
        lines = []
        for s in self.sources:
            tag = " (new folder)" if s.new_folder else ""
            lines.append(
                f"{s.source}{tag}: {s.images} images, {s.samples} samples, {s.new_images} new images "
                f"({s.new_samples} samples) to infer"
            )
        lines.append(f"total to infer: {self.new_samples} samples")
        return lines


def summarise(records: list[SampleRecord], missing: list[SampleRecord]) -> Discovery:
    """Per-source counts of ``records`` and of the ``missing`` subset (in first-seen source order)."""
    order = list(dict.fromkeys(r.source for r in records))
    images = {s: set() for s in order}
    new_images = {s: set() for s in order}
    for r in records:
        images[r.source].add(r.image)
    for r in missing:
        new_images[r.source].add(r.image)
    samples, new_samples = Counter(r.source for r in records), Counter(r.source for r in missing)
    return Discovery(
        tuple(SourceSummary(s, len(images[s]), samples[s], len(new_images[s]), new_samples[s]) for s in order)
    )


def variant_loss(params: DistillParams, variant: str) -> tuple[float, bool, bool]:
    """``(alpha, use_ground_truth, with_unlabeled)`` of a student variant."""
    if variant == "gt_only":
        return 0.0, True, False
    if variant == "fpd_labelled":
        return params.alpha, params.use_ground_truth, False
    if variant == "fpd":
        return params.alpha, params.use_ground_truth, True
    raise ValueError(f"unknown student variant {variant!r}; expected one of {VARIANTS}")


def run_variants(params: DistillParams) -> tuple[str, ...]:
    """Students this run trains: the requested baselines, then the FPD student, in table order."""
    return tuple(v for v in VARIANTS if v == "fpd" or v in params.baselines)


def write_json(path: Path, payload: object) -> Path:
    """Write ``payload`` as indented JSON, atomically (a reader never sees half a file)."""
    with atomic_write(path, "w") as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=True))
    return path


# ---------------------------------------------------------------------------------------------- teacher and cache


def teacher_preset(params: DistillParams) -> ModelPreset:
    """The teacher's preset, checked against the student's: same joints, or the cached heatmaps mean nothing."""
    from models import get_preset

    teacher, student = get_preset(params.teacher.preset), get_preset(params.student.preset)
    if teacher.joint_set != student.joint_set:
        raise ValueError(
            f"teacher {teacher.name} predicts {teacher.joint_set} joints, student {student.name} {student.joint_set}"
        )
    datasets = {s.dataset for s in params.labelled}
    if datasets != {teacher.joint_set}:
        raise ValueError(f"teacher {teacher.name} predicts {teacher.joint_set} joints; labelled data is {datasets}")
    return teacher


def device_name(params: DistillParams) -> str:
    """``cuda`` when asked for, or when ``auto`` and the worker sees a GPU; ``cpu`` otherwise."""
    import torch

    if params.device.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return params.device.device


def train_sources(params: DistillParams) -> tuple[TrainLabelled, ...]:
    """The labelled training splits, in the training recipe's form."""
    return tuple(TrainLabelled(format=s.dataset, root=s.root, split=s.train) for s in params.labelled)


def teacher_records(params: DistillParams) -> list[SampleRecord]:
    """Every sample the teacher covers: labelled training splits, then each folder of each unlabeled root.

    Boxes are fitted to the teacher's input aspect (the crops it sees); the cache stores them with the heatmaps.
    """
    from pipeline.data.folders import scan_unlabeled_root
    from pipeline.data.sources import SourceSpec, load_source

    preset = teacher_preset(params)
    aspect = preset.input_size[0] / preset.input_size[1]
    records = [r for s in params.labelled for r in load_source(SourceSpec(s.dataset, Path(s.root), s.train), aspect)]
    for root in params.unlabeled_roots:
        for scan in scan_unlabeled_root(root, input_aspect=aspect).values():
            records.extend(scan.records)
    return records


def open_cache(params: DistillParams) -> TeacherTargetCache:
    """Open (or create) the cache folder with the teacher's identity; a different teacher is refused."""
    from pipeline.inference import teacher_provenance
    from storage.cache import TeacherTargetCache
    from storage.checkpoints import sha256_file

    provenance = teacher_provenance(teacher_preset(params), sha256_file(params.teacher.checkpoint))
    return TeacherTargetCache(params.cache_dir).open_or_create(provenance)


def discover(params: DistillParams) -> Discovery:
    """Every source's size and what the cache lacks of it (opening, or creating, the cache)."""
    records = teacher_records(params)
    return summarise(records, open_cache(params).missing(records))
