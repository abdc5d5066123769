"""Teacher inference into the target cache: crop, flip-test forward, decode, stream to shards.

Worker processes decode and crop images (``CropDataset``) while the model runs; the model sees one doubled
batch per step (image + mirror, ``pipeline.flip.flip_test``) in ``torch.inference_mode``, channels-last, under
bf16 autocast on CUDA. JPEGs are decoded in full unless ``draft_decode`` asks for libjpeg's faster reduced-size
decoding, which the cache then records (its targets differ: docs/cache.md). Records are split between
``num_shards`` processes by a stable hash of their key, so several processes (or machines sharing a folder) can
fill one cache side by side, each in its own lock slot.
What to infer comes from a plan (``pipeline.teacher.plan``): re-running skips what the cache already holds.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from models.joints import get_joint_set
from models.presets import ModelPreset
from pipeline.codec import HeatmapCodec
from pipeline.data.crops import CropDataset
from pipeline.data.workers import worker_start_method
from pipeline.flip import final_heatmaps, flip_test
from pipeline.teacher.plan import InferencePlan, select_slot, still_missing
from pipeline.teacher.records import shard_batch
from storage.cache import DEFAULT_COMPRESSION, CacheMismatchError, CacheProvenance, TeacherTargetCache
from storage.hashing import sha256_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceReport:
    """Outcome of one inference run over this process's slot.

    Attributes:
        new: samples inferred and written by this run.
        skipped: samples of this slot already in the cache (same key and image content).
        failed: samples whose image could not be decoded (not written; a later run retries them).
        failed_files: the paths of the images that failed, each once, in the order met.
        shards: names of the shards this run committed.
    """

    new: int
    skipped: int
    failed: int
    failed_files: tuple[str, ...]
    shards: tuple[str, ...] = ()


def teacher_provenance(
    preset: ModelPreset,
    checkpoint_sha256: str,
    *,
    flip: bool = True,
    flip_shift: bool = True,
    decode: str = "hrnet",
    draft_decode: bool = False,
) -> CacheProvenance:
    """The cache identity of ``preset`` with the weights hashed to ``checkpoint_sha256``, its inputs decoded in
    full (or as JPEG drafts with ``draft_decode``)."""
    joints = get_joint_set(preset.joint_set)
    return CacheProvenance(
        teacher_preset=preset.name,
        checkpoint_sha256=checkpoint_sha256,
        input_size=preset.input_size,
        heatmap_size=preset.heatmap_size,
        joint_set=preset.joint_set,
        joint_names=joints.names,
        flip_pairs=joints.flip_pairs,
        flip_test=flip,
        flip_shift=flip_shift,
        decode=decode,
        color_order=preset.color_order,
        draft_decode=draft_decode,
    )


def _refusal(path: str | Path, differences: list[str], draft_decode: bool) -> CacheMismatchError:
    """The mismatch error, saying what to do when the JPEG decoding is (one of) the differences."""
    cached, asked = ("full", "draft") if draft_decode else ("draft", "full")
    advice = "drop --draft-decode / draft_decode=True" if draft_decode else "pass --draft-decode / draft_decode=True"
    explained = [
        f"{d} (the cache holds targets of {cached} JPEG decodes and this run would add {asked} decodes: use a new "
        f"cache folder, or {advice} to extend this one)" if d.startswith("draft_decode:") else d
        for d in differences
    ]  # fmt: skip
    return CacheMismatchError(str(path), explained)


def open_teacher_cache(
    cache_dir: str | Path,
    preset: ModelPreset,
    checkpoint: str | Path,
    *,
    decode: str = "hrnet",
    draft_decode: bool = False,
) -> TeacherTargetCache:
    """Open (or create) the cache folder with this teacher's identity; a cache of another teacher is refused.

    Like another teacher, another JPEG decoding (``draft_decode``) is refused rather than re-inferred: the cache
    keeps one kind of targets, and which of them to keep is the user's choice (a new folder, or the other flag).

    Raises:
        CacheMismatchError: the folder holds a cache made otherwise (the message names each difference).
    """
    provenance = teacher_provenance(preset, sha256_file(checkpoint), decode=decode, draft_decode=draft_decode)
    try:
        return TeacherTargetCache(cache_dir).open_or_create(provenance)
    except CacheMismatchError as exc:
        raise _refusal(cache_dir, exc.differences, draft_decode) from None


def run_teacher_inference(
    model: nn.Module,
    preset: ModelPreset,
    plan: InferencePlan,
    cache: TeacherTargetCache,
    *,
    batch_size: int,
    device: str | torch.device,
    shard_index: int = 0,
    num_shards: int = 1,
    num_workers: int = 2,
    shard_size: int = 512,
    progress: bool = True,
    compression: str = DEFAULT_COMPRESSION,
    draft_decode: bool = False,
) -> InferenceReport:
    """Infer teacher heatmaps for the records of this slot that the cache lacks, and store them.

    The cache must have been opened with this teacher's provenance (``cache.open_or_create``); its flip,
    shift and decode settings are the ones applied here. Images that cannot be decoded are counted and
    named in the report; they never stop the run.

    Args:
        model: the teacher, weights loaded; returns (N, K, H, W) heatmaps or a list of them (hourglass).
        preset: the teacher's preset (input/heatmap size, joint set, colour order).
        plan: what the cache lacked when planned (``plan_inference``); this process takes its slot's part.
        cache: the target cache.
        batch_size: crops per forward (the flip test doubles it inside the model).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        shard_index: this process's slot.
        num_shards: number of processes filling the cache side by side.
        num_workers: DataLoader processes decoding and cropping (0: in this process).
        shard_size: samples per shard file (bounds the writer's memory).
        progress: show a tqdm bar.
        compression: shard compression, a key of ``storage.cache.COMPRESSIONS`` (see docs/cache.md).
        draft_decode: decode JPEGs in draft mode (faster, slightly different targets); must match the cache's.

    Returns:
        New, skipped and failed counts, the failed file names and the committed shards.
    """
    provenance = cache.provenance
    expected = teacher_provenance(preset, provenance.checkpoint_sha256, flip=provenance.flip_test,
                                  flip_shift=provenance.flip_shift, decode=provenance.decode,
                                  draft_decode=draft_decode)  # fmt: skip
    differences = provenance.diff(expected)
    if differences:
        raise _refusal(cache.path, differences, draft_decode)

    mine = select_slot(plan, shard_index, num_shards)
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    codec = HeatmapCodec(preset.input_size, preset.heatmap_size)
    permutation = get_joint_set(preset.joint_set).flip_permutation()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
    failed = [str(r.path) for r in mine.unreadable]
    new = 0
    # The writer is opened first: it adopts shards an interrupted run renamed but did not list, so that the
    # check below does not infer their samples again (a retried shard resumes after its own commits).
    with cache.writer(shard_index=shard_index, num_shards=num_shards, shard_size=shard_size,
                      compression=compression) as writer:  # fmt: skip
        mine = still_missing(mine, cache)
        todo = list(mine.records)
        skipped = len(mine.cached)
        logger.info("slot %d/%d: %d records, %d cached, %d to infer", shard_index, num_shards,
                    len(todo) + skipped + len(mine.unreadable), skipped, len(todo))  # fmt: skip
        loader = DataLoader(
            CropDataset(todo, preset.input_size, preset.color_order, use_draft=draft_decode),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers if todo else 0,
            pin_memory=on_cuda,
            prefetch_factor=4 if num_workers > 0 and todo else None,
            multiprocessing_context=worker_start_method(num_workers if todo else 0),
        )
        with torch.inference_mode(), tqdm(total=len(todo), desc="teacher", unit="crop", disable=not progress) as bar:
            for batch in loader:
                ok = batch["ok"]
                for i, good in zip(batch["index"].tolist(), ok.tolist(), strict=True):
                    if not good:
                        failed.append(str(todo[i].path))
                bar.update(len(ok))
                if not ok.any():
                    continue
                batch_records = [todo[i] for i in batch["index"][ok].tolist()]
                images = batch["image"][ok].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                with autocast:
                    if provenance.flip_test:
                        heatmaps = flip_test(model, images, permutation, shift=provenance.flip_shift)
                    else:
                        heatmaps = final_heatmaps(model(images))
                heatmaps = heatmaps.float()
                coords, maxvals = codec.decode(heatmaps, method=provenance.decode)
                centers, scales = [r.center for r in batch_records], [r.scale for r in batch_records]
                writer.add(shard_batch(batch_records, mine.states, heatmaps.cpu().numpy(), coords.cpu().numpy(),
                                       codec.to_image(coords, centers, scales), maxvals.cpu().numpy()))  # fmt: skip
                new += len(batch_records)
    failed_files = tuple(dict.fromkeys(failed))
    if failed_files:
        logger.warning("%d crops failed to decode (%d files), first: %s", len(failed), len(failed_files),
                       failed_files[0])  # fmt: skip
    return InferenceReport(new, skipped, len(failed), failed_files, tuple(e.name for e in writer.committed))
