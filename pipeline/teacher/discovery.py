"""Discovery: every source of a run, what the teacher cache lacks of it, and the plan the shards will share.

A run scans each source once, here: labelled splits and every folder under the unlabeled roots are read, their
images fingerprinted where the cache cannot vouch for them (``plan.plan_inference``), and the missing records
written as one plan file. Everything returned is small and frozen: counts for the log, the UI and the report.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.sources import LoadedSource, SourceSpec, load_sources
from pipeline.records import SampleRecord
from pipeline.teacher.plan import InferencePlan, plan_inference, save_plan
from storage.cache import TeacherTargetCache


@dataclass(frozen=True)
class SourceSummary:
    """One source as discovery saw it.

    Attributes:
        source: display name, unique in the run (``"mpii/train"``, ``"folder/street"``, ``"folder/cam2/frames"``
            when two folders are called ``frames``).
        images: distinct images in the source.
        samples: person instances (one per image for unlabeled folders).
        new_images: images with at least one instance missing from the teacher cache.
        new_samples: instances missing from the teacher cache.
        root: the source's resolved root (its identity, with the records' source name).
        edited: instances re-inferred because their image changed since it was cached.
        moved: instances re-inferred because their crop (person box) changed since it was cached.
        skipped: ``(file or item, reason)`` of each input of the source left out while reading it.
    """

    source: str
    images: int
    samples: int
    new_images: int
    new_samples: int
    root: str = ""
    edited: int = 0
    moved: int = 0
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def unlabeled(self) -> bool:
        return self.source.startswith("folder/")

    @property
    def new_folder(self) -> bool:
        """A folder none of whose images the cache has seen: dropped in since the last run."""
        return self.unlabeled and self.samples > 0 and self.new_samples == self.samples


@dataclass(frozen=True)
class Discovery:
    """What the teacher must infer this run, per source, and where the plan for the shards lies."""

    sources: tuple[SourceSummary, ...]
    plan_path: str = ""

    @property
    def new_samples(self) -> int:
        return sum(s.new_samples for s in self.sources)

    @property
    def unlabeled_sources(self) -> tuple[str, ...]:
        """The unlabeled folders with samples, as their resolved paths (names can be shared, paths cannot)."""
        return tuple(s.root or s.source for s in self.sources if s.unlabeled and s.samples > 0)

    def digest(self, sources: Sequence[str]) -> str:
        """Stable hash of the sizes of the sources named (display name or root): a student trained on them is stale
        when it changes."""
        named = set(sources)
        sizes = sorted((s.source, s.root, s.images, s.samples) for s in self.sources if named & {s.source, s.root})
        return hashlib.sha256(json.dumps(sizes).encode()).hexdigest()[:12]

    def log_lines(self) -> list[str]:
        """Human-readable lines for the run log: every source, new folders called out."""
        lines = []
        for s in self.sources:
            tag = " (new folder)" if s.new_folder else ""
            counts = ((s.edited, "of edited images"), (s.moved, "with a moved box"))
            stale = ", ".join(f"{n} {what}" for n, what in counts if n)
            skipped = f"; {len(s.skipped)} input(s) skipped (first: {': '.join(s.skipped[0])})" if s.skipped else ""
            lines.append(
                f"{s.source}{tag}: {s.images} images, {s.samples} samples, {s.new_images} new images "
                f"({s.new_samples} samples{f', {stale}' if stale else ''}) to infer"
                f"{skipped}"
            )
        lines.append(f"total to infer: {self.new_samples} samples")
        return lines


def summarise(
    loaded: Sequence[LoadedSource], plan: InferencePlan, plan_path: str | Path = ""
) -> Discovery:
    """Per-source counts of the ``loaded`` sources and of what ``plan`` must infer (in source order)."""

    def identity(record: SampleRecord) -> tuple[str, str]:
        return record.source, record.key[1]

    missing: list[SampleRecord] = [*plan.records, *plan.unreadable]
    new_images: dict[tuple[str, str], set[str]] = {}
    for r in missing:
        new_images.setdefault(identity(r), set()).add(r.image)
    new_samples = Counter(identity(r) for r in missing)
    edited, moved = set(plan.edited), set(plan.moved)
    summaries = []
    for source in loaded:
        images = {r.image for r in source.records}
        root = source.root or (source.records[0].key[1] if source.records else "")
        ident = (source.name, root)
        summaries.append(SourceSummary(
            source.display, len(images), len(source.records), len(new_images.get(ident, ())), new_samples[ident],
            ident[1], sum(r.key in edited for r in source.records), sum(r.key in moved for r in source.records),
            tuple((str(name), str(reason)) for name, reason in source.skipped),
        ))  # fmt: skip
    return Discovery(tuple(summaries), str(plan_path))


def discover(
    specs: Sequence[SourceSpec],
    unlabeled_roots: Sequence[str | Path],
    input_aspect: float,
    cache: TeacherTargetCache,
    plan_path: str | Path,
    *,
    detections: str | Path | None = None,
    detection_store: str | Path | None = None,
) -> Discovery:
    """Read every source once, plan what ``cache`` lacks, write the plan to ``plan_path`` and count it all.

    Args:
        specs: labelled splits (and single folders) to cover.
        unlabeled_roots: folders whose every sub-folder is a source (a folder dropped in later is picked up).
        input_aspect: the teacher's input width / height (person boxes are fitted to it).
        cache: the teacher cache, opened with the teacher's provenance.
        plan_path: where the shards will read the plan.
        detections: person detections for the COCO specs (None: ground-truth boxes).
        detection_store: the person boxes ``fpd detect`` found in the folders without a ``detections.json``
            (None: each of their images is one person).
    """
    loaded = load_sources(specs, input_aspect, unlabeled_roots=unlabeled_roots, detections=detections,
                          detection_store=detection_store)  # fmt: skip
    plan = plan_inference([r for source in loaded for r in source.records], cache)
    save_plan(plan_path, plan)
    return summarise(loaded, plan, plan_path)
