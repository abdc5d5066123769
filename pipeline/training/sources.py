"""From a recipe to training samples and validation numbers: records, cached teacher targets, evaluation.

Labelled records come from the dataset loaders (the authority on ground truth); unlabeled ones from the teacher
cache (by source name) or from a folder scan. Cached heatmaps are looked up by ``record.key``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from models.joints import JointSet, get_joint_set
from models.presets import ModelPreset
from pipeline.codec import HeatmapCodec
from pipeline.data.sources import SourceSpec, load_source
from pipeline.evaluation import evaluate_model
from pipeline.records import SampleRecord
from pipeline.teacher.records import cached_records
from pipeline.training.config import ConfigError, TrainConfig
from pipeline.training.data import CachedTarget, DistillDataset
from storage.cache import TeacherTargetCache, TeacherTargetDataset

logger = logging.getLogger(__name__)


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
        item = self.dataset[self._row[record.key]]
        return CachedTarget(
            heatmaps=item["heatmaps"].numpy(),
            center=(float(item["center"][0]), float(item["center"][1])),
            scale=(float(item["scale"][0]), float(item["scale"][1])),
            rotation=float(item["rotation"]),
        )

    def records_of_source(self, source: str) -> list[SampleRecord]:
        """Every cached record of ``source`` (e.g. ``"folder/street"``), sorted by key.

        Sorted, not in cache order: shards filled side by side commit in any order, and the training order (so the
        curve of a seeded run) must not depend on which shard finished first.
        """
        return sorted(cached_records(self.dataset.index, source), key=lambda record: record.key)


def build_records(config: TrainConfig, input_aspect: float, cache: CacheTargets | None) -> list[SampleRecord]:
    """Labelled records of every source, then unlabeled ones (cache source names first, else folder paths)."""
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
    """The :class:`DistillDataset` of a recipe (records, cached teacher targets, augmentation, codec)."""
    joint_set = get_joint_set(preset.joint_set)
    cache = _open_cache(config, joint_set) if config.data.teacher_cache and not config.teacher_online else None
    records = build_records(config, preset.input_aspect, cache)
    if cache is not None:
        missing = [r for r in records if r not in cache]
        if missing:
            logger.warning("%d of %d training records have no cached teacher heatmaps and are left out (first: %s); "
                           "run `fpd cache` on them", len(missing), len(records), missing[0].key)
            records = [r for r in records if r in cache]
    if not records:
        raise ConfigError("no training records (empty sources, or none of them in the teacher cache)")
    return DistillDataset(
        records, joint_set=joint_set, input_size=preset.input_size, heatmap_size=preset.heatmap_size,
        color_order=preset.color_order, codec=HeatmapCodec(preset.input_size, preset.heatmap_size),
        teacher=cache, augment=config.data.augment.resolve(joint_set.name),
        seed=config.seed,
    )


def _open_cache(config: TrainConfig, joint_set: JointSet) -> CacheTargets:
    cache = TeacherTargetCache(config.data.teacher_cache)
    if not cache.exists():
        raise ConfigError(f"data.teacher_cache: no teacher cache at {config.data.teacher_cache}")
    names = tuple(cache.provenance.joint_names)
    if names != tuple(joint_set.names):
        raise ConfigError(f"data.teacher_cache: its joints {names} are not the student's {joint_set.names}")
    return CacheTargets(cache.dataset())


def evaluate(model: nn.Module, config: TrainConfig, preset: ModelPreset, device: torch.device) -> dict[str, float]:
    """Validation table of ``model`` (flip test per ``config.eval``): PCKh for MPII, COCO keypoint AP for COCO."""
    ev = config.eval
    return evaluate_model(model, preset, ev.dataset, ev.root, ev.split, detections=ev.detections,
                          batch_size=ev.batch_size, device=device, flip=ev.flip,
                          num_workers=config.data.workers)  # fmt: skip
