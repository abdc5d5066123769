"""From a recipe to training samples and validation numbers: records, cached teacher targets, evaluation.

Labelled records come from the dataset loaders (the authority on ground truth); unlabeled ones from the teacher
cache (by folder path or source name) or from a folder scan. Cached heatmaps are looked up by ``record.key``; the
cache's teacher is checked against the recipe's, and records the cache no longer describes are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from models.joints import JointSet, get_joint_set
from models.presets import ModelPreset, get_preset
from pipeline.codec import HeatmapCodec
from pipeline.data.sources import SourceSpec, load_source
from pipeline.evaluation import evaluate_model
from pipeline.records import SampleRecord, resolved_root
from pipeline.teacher.inference import teacher_provenance
from pipeline.teacher.records import cached_record
from pipeline.training.config import ConfigError, TrainConfig
from pipeline.training.data import CachedTarget, DistillDataset
from storage.cache import CacheProvenance, TeacherTargetCache, TeacherTargetDataset
from storage.hashing import file_state, sha256_file

logger = logging.getLogger(__name__)

TEACHER_FIELDS = ("teacher_preset", "checkpoint_sha256", "input_size", "heatmap_size", "joint_set", "joint_names",
                  "flip_pairs", "color_order")  # fmt: skip
"""The provenance fields a recipe's ``teacher_preset`` and ``teacher_checkpoint`` determine."""


class CacheTargets:
    """Cached teacher heatmaps by record key, over a ``storage.cache.TeacherTargetDataset``.

    Args:
        dataset: the cache's dataset view (lazy HDF5 reads, safe in DataLoader workers).
    """

    def __init__(self, dataset: TeacherTargetDataset) -> None:
        self.dataset = dataset
        self._row = {dataset.index.key(i): i for i in range(len(dataset))}

    def __contains__(self, record: SampleRecord) -> bool:
        return record.key in self._row

    def __call__(self, record: SampleRecord) -> CachedTarget:
        # The heatmaps and the crop alone: a training sample needs nothing else of the cached item.
        row = self._row[record.key]
        numeric = self.dataset.index.numeric
        center, scale = numeric["center"][row].tolist(), numeric["scale"][row].tolist()  # one call each
        return CachedTarget(heatmaps=self.dataset.heatmaps(row), center=(center[0], center[1]),
                            scale=(scale[0], scale[1]), rotation=float(numeric["rotation"][row]))  # fmt: skip

    def records_of_source(self, source: str) -> list[SampleRecord]:
        """Every cached record of ``source``: an unlabeled folder's path, or a source name (``"folder/street"``).

        Sorted by key, not in cache order: shards filled side by side commit in any order, and the training order
        (so the curve of a seeded run) must not depend on which shard finished first.

        Raises:
            ConfigError: ``source`` is a name that folders at several paths share (the message lists them).
        """
        index = self.dataset.index
        sources, roots = index.strings["source"], index.strings["root"]
        if Path(source).is_absolute() or Path(source).is_dir():
            root = resolved_root(Path(source))
            rows = [i for i in range(len(index)) if roots[i] == root and str(sources[i]).startswith("folder/")]
        else:
            rows = [i for i in range(len(index)) if sources[i] == source]
            shared = sorted({str(roots[i]) for i in rows})
            if len(shared) > 1:
                raise ConfigError(f"data.unlabeled: {source!r} names {len(shared)} folders of the teacher cache "
                                  f"({', '.join(shared)}); give the folder's path instead")  # fmt: skip
        return sorted((cached_record(index, i) for i in rows), key=lambda record: record.key)

    def stale(self, records: Sequence[SampleRecord]) -> tuple[list[SampleRecord], list[SampleRecord]]:
        """The cached ``records`` whose image was edited, and those whose crop moved, since the teacher saw them.

        An image whose size and mtime are the cached ones is taken as unchanged (as planning does); only touched
        files are hashed.
        """
        index = self.dataset.index
        edited, moved = [], []
        for record in records:
            cached = index.cached_sample(self._row[record.key])
            try:
                fingerprint = file_state(record.path, cached.state).fingerprint
            except OSError:
                fingerprint = ""  # gone or unreadable: the cached heatmaps describe a file we cannot read
            change = cached.change(fingerprint, record.center, record.scale, record.rotation)
            if change is not None:
                (edited if change == "edited" else moved).append(record)
        return edited, moved


def build_records(config: TrainConfig, input_aspect: float, cache: CacheTargets | None) -> list[SampleRecord]:
    """Labelled records of every source, then unlabeled ones (from the cache by path or name, else a folder scan)."""
    records: list[SampleRecord] = []
    for spec in config.data.labelled:  # already SourceSpecs (kind mpii or coco), checked by the config
        records.extend(load_source(spec, input_aspect))
    for entry in config.data.unlabeled:
        cached = cache.records_of_source(entry) if cache is not None else []
        if cached:
            records.extend(cached)
        elif Path(entry).is_dir():
            records.extend(load_source(SourceSpec("folder", Path(entry)), input_aspect))
        else:
            raise ConfigError(f"data.unlabeled: {entry!r} is neither a source of the teacher cache nor a folder")
    return records


def build_train_dataset(config: TrainConfig, preset: ModelPreset) -> DistillDataset:
    """The :class:`DistillDataset` of a recipe (records, cached teacher targets, augmentation, codec).

    With a teacher cache, its teacher is checked against the recipe's (:func:`check_cache_teacher`), and records
    that the cache does not serve (never inferred, image edited or box moved since) are left out, counted in one
    warning that says how to infer them.
    """
    joint_set = get_joint_set(preset.joint_set)
    cache = open_cache_targets(config, joint_set) if config.data.teacher_cache and not config.teacher_online else None
    records = build_records(config, preset.input_aspect, cache)
    if cache is not None:
        if cache.dataset.provenance.exif_orientation != "folders" and any(r.apply_exif_orientation for r in records):
            raise ConfigError(f"data.teacher_cache {config.data.teacher_cache}: its folder photos were inferred "
                              "without their EXIF orientation, training crops them upright; infer the unlabeled "
                              "folders into a new cache")  # fmt: skip
        records = served_by_cache(records, cache)
    if not records:
        raise ConfigError("no training records (empty sources, or none of them in the teacher cache)")
    return DistillDataset(
        records, joint_set=joint_set, input_size=preset.input_size, heatmap_size=preset.heatmap_size,
        color_order=preset.color_order, codec=HeatmapCodec(preset.input_size, preset.heatmap_size),
        teacher=cache, augment=config.data.augment.resolve(joint_set.name),
        seed=config.seed,
    )


def served_by_cache(records: list[SampleRecord], cache: CacheTargets) -> list[SampleRecord]:
    """``records`` less those without current cached targets, with one warning that counts them."""
    present = [r for r in records if r in cache]
    edited, moved = cache.stale(present)
    dropped = {id(r) for r in (*edited, *moved)}
    kept = [r for r in present if id(r) not in dropped]
    if len(kept) < len(records):
        absent = [r for r in records if r not in cache]
        groups = ((absent, "never inferred"), (edited, "image edited since"), (moved, "person box moved since"))
        parts = [f"{len(found)} {what} (first: {found[0].path})" for found, what in groups if found]
        logger.warning("%d of %d training records have no current cached teacher heatmaps and are left out: %s; "
                       "run `fpd infer` over the same sources into this cache to infer them", len(records) - len(kept),
                       len(records), "; ".join(parts))  # fmt: skip
    return kept


def open_cache_targets(config: TrainConfig, joint_set: JointSet) -> CacheTargets:
    """The recipe's teacher cache, refused when it holds targets of another teacher than the recipe names."""
    cache = TeacherTargetCache(config.data.teacher_cache)
    if not cache.exists():
        raise ConfigError(f"data.teacher_cache: no teacher cache at {config.data.teacher_cache}")
    provenance = cache.provenance
    names = tuple(provenance.joint_names)
    if names != tuple(joint_set.names):
        raise ConfigError(f"data.teacher_cache: its joints {names} are not the student's {joint_set.names}")
    check_cache_teacher(config, provenance)
    return CacheTargets(cache.dataset())


def check_cache_teacher(config: TrainConfig, provenance: CacheProvenance) -> None:
    """Refuse a cache whose teacher is not the recipe's ``teacher_preset`` / ``teacher_checkpoint`` (when set).

    The preset fixes the input and heatmap sizes, joints, flip pairs and colour order; the checkpoint's SHA-256
    the weights. A recipe naming neither trains on whatever teacher the cache holds (the weights' record names it).

    Raises:
        ConfigError: each difference named, or a ``teacher_checkpoint`` file that does not exist.
    """
    if config.teacher_preset is None and config.teacher_checkpoint is None:
        return
    sha = provenance.checkpoint_sha256
    if config.teacher_checkpoint is not None:
        if not Path(config.teacher_checkpoint).is_file():
            raise ConfigError(f"teacher_checkpoint: no file {config.teacher_checkpoint} (the teacher of "
                              f"data.teacher_cache {config.data.teacher_cache} is checked against it)")  # fmt: skip
        sha = sha256_file(config.teacher_checkpoint)
    try:
        preset = get_preset(config.teacher_preset or provenance.teacher_preset)
    except ValueError as exc:
        raise ConfigError(f"teacher_preset: {exc}") from None
    expected = teacher_provenance(preset, sha)
    differences = [d for d in provenance.diff(expected) if d.split(":", 1)[0] in TEACHER_FIELDS]
    if differences:
        raise ConfigError(f"data.teacher_cache {config.data.teacher_cache} holds targets of another teacher than "
                          "the recipe's teacher_preset / teacher_checkpoint (cache != recipe): "
                          + "; ".join(differences))  # fmt: skip


def cache_teacher(config: TrainConfig) -> dict[str, object] | None:
    """The teacher whose cached targets a recipe trains on, for the student's record (None without a cache)."""
    if config.data.teacher_cache is None or config.teacher_online:
        return None
    provenance = TeacherTargetCache(config.data.teacher_cache).provenance
    return {"cache": str(config.data.teacher_cache), "preset": provenance.teacher_preset,
            "checkpoint_sha256": provenance.checkpoint_sha256, "flip_test": provenance.flip_test}  # fmt: skip


def evaluate(model: nn.Module, config: TrainConfig, preset: ModelPreset, device: torch.device) -> dict[str, float]:
    """Validation table of ``model`` (flip test per ``config.eval``): PCKh for MPII, COCO keypoint AP for COCO."""
    ev = config.eval
    return evaluate_model(model, preset, ev.dataset, ev.root, ev.split, detections=ev.detections,
                          batch_size=ev.batch_size, device=device, flip=ev.flip,
                          num_workers=config.data.workers)  # fmt: skip
