"""The detection stage: a torchvision person detector over unlabeled folders, its boxes kept in a store.

Each folder without a user's ``detections.json`` is listed as the folder loader lists it; images the store holds
(same content) are skipped, the others are decoded upright (EXIF) in worker processes, batched through the
detector (fp16 autocast on CUDA when ``amp``), reduced to persons (``select_persons``) and committed part by
part (``storage.detections``): a new folder costs only its images, an edited image is detected again, and a
process killed at any moment loses at most its uncommitted part. ``shard_index``/``num_shards`` split the images
between processes by a stable hash of their names, as teacher inference splits records.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from models.detectors import PERSON_LABEL, resolve_detector_name
from pipeline.data.folders import DETECTIONS_FILE, list_images
from pipeline.data.images import ImageDecodeError, load_image
from pipeline.data.workers import worker_start_method
from pipeline.detection.settings import DetectorSettings
from pipeline.detection.weights import load_detector, locate_detector_weights
from storage.detections import Box, DetectedImage, DetectionStore, matching_entry, slot_of_image
from storage.hashing import file_state, sha256_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderDetections:
    """One folder after a detection run.

    Attributes:
        folder: the folder's resolved path.
        images: images listed in it.
        detected: images this run detected (its slot's new or edited ones).
        reused: images of this slot the store already held.
        with_persons, persons: images with at least one person kept, and the persons kept, over every image the
            store now holds (all slots).
        without_persons: images where the detector kept no person (they give no sample).
        undetected: images the store does not hold yet (other slots, or failed).
        failed: ``(image, reason)`` of each image that could not be listed or decoded (retried next run).
        own_file: the folder has a user's ``detections.json``, used as is (nothing detected, nothing written).
    """

    folder: str
    images: int = 0
    detected: int = 0
    reused: int = 0
    with_persons: int = 0
    persons: int = 0
    without_persons: int = 0
    undetected: int = 0
    failed: tuple[tuple[str, str], ...] = ()
    own_file: bool = False


@dataclass(frozen=True)
class DetectionRun:
    """What ``detect_folders`` did: the detector's identity (as stored; empty when every folder had its own
    ``detections.json`` and no detector was loaded) and each folder's counts."""

    detector: dict[str, object]
    folders: tuple[FolderDetections, ...]
    seconds: float

    def log_lines(self) -> list[str]:
        if not self.detector:
            return [f"{f.folder}: its own {DETECTIONS_FILE} is used" for f in self.folders]
        lines = [f"detector {self.detector['model']} (score >= {self.detector['score_threshold']}, "
                 f"{self.detector['precision']}): {sum(f.detected for f in self.folders)} images detected "
                 f"in {self.seconds:.1f} s"]  # fmt: skip
        for f in self.folders:
            if f.own_file:
                lines.append(f"{f.folder}: its own {DETECTIONS_FILE} is used")
                continue
            failed = f", {len(f.failed)} failed (first: {': '.join(f.failed[0])})" if f.failed else ""
            lines.append(f"{f.folder}: {f.images} images ({f.detected} detected, {f.reused} already), {f.persons} "
                         f"persons in {f.with_persons}, {f.without_persons} without persons{failed}")  # fmt: skip
        return lines


def select_persons(
    output: dict[str, torch.Tensor], *, score_threshold: float, min_box_size: float, max_persons: int
) -> tuple[tuple[Box, float], ...]:
    """The persons of one image's detector output (torchvision's ``boxes`` x1y1x2y2, ``labels``, ``scores``):
    person class, score at least ``score_threshold``, ``sqrt(w * h)`` at least ``min_box_size``, the best
    ``max_persons`` by score; as ``((x, y, w, h), score)``."""
    boxes = output["boxes"].float().cpu()
    scores = output["scores"].float().cpu()
    sizes = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    keep = (output["labels"].cpu() == PERSON_LABEL) & (scores >= score_threshold)
    keep &= (sizes[:, 0] * sizes[:, 1]).sqrt() >= min_box_size
    keep &= (sizes > 0).all(dim=1)
    order = torch.argsort(scores[keep], descending=True, stable=True)[:max_persons]
    xywh = torch.cat([boxes[:, :2], sizes], dim=1)[keep][order].tolist()
    return tuple((tuple(box), float(score)) for box, score in zip(xywh, scores[keep][order].tolist(), strict=True))


@dataclass(frozen=True)
class _Item:
    store: int
    folder: Path
    name: str


class _DecodedImages(Dataset):
    """Items decoded upright as uint8 CHW tensors, each with its file state (hashed here, in the worker)."""

    def __init__(self, items: Sequence[_Item]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, object]:
        item = self.items[index]
        path = item.folder / item.name
        try:
            state = file_state(path)
            image = load_image(path, exif_orientation=True).image
        except (ImageDecodeError, OSError) as exc:
            return {"index": index, "error": str(exc)}
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        return {"index": index, "image": pixels, "state": state}


def _as_list(batch: list[dict[str, object]]) -> list[dict[str, object]]:
    return batch  # images differ in size: the detector batches them itself


def default_batch_size(device: torch.device) -> int:
    """Images per detector forward: 8 on a GPU; 1 on a CPU, where a batch pads every image to its largest and
    gained nothing on a quiet machine (benchmarks/bench_detector.py, docs/detection.md)."""
    return 8 if device.type == "cuda" else 1


def open_detector(settings: DetectorSettings, device: torch.device) -> tuple[torch.nn.Module, str, Path]:
    """The detector ``settings`` name (``auto`` resolved for ``device``), loaded strictly and moved there, with its
    resolved name and weights file.

    Raises:
        pipeline.detection.weights.DetectorWeightsError: no weights file (the message says where to put it).
    """
    name = resolve_detector_name(settings.model, device.type)
    weights = locate_detector_weights(name, settings.weights)
    model = load_detector(name, weights, score_threshold=settings.score_threshold,
                          nms_threshold=settings.nms_threshold, detections_per_image=max(100, settings.max_persons),
                          min_size=settings.min_size, max_size=settings.max_size).to(device)  # fmt: skip
    return model, name, weights


def detector_precision(settings: DetectorSettings, device: torch.device) -> str:
    """``"fp16"`` (autocast) on CUDA with ``amp``, else ``"fp32"``."""
    return "fp16" if settings.amp and device.type == "cuda" else "fp32"


def detect_persons(
    model: torch.nn.Module, images: Sequence[torch.Tensor], settings: DetectorSettings, device: torch.device
) -> list[tuple[tuple[Box, float], ...]]:
    """The persons (``select_persons``) of each of ``images``: (3, H, W) uint8 RGB tensors of any sizes."""
    fp16 = detector_precision(settings, device) == "fp16"
    autocast = torch.autocast("cuda", dtype=torch.float16) if fp16 else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        outputs = model([image.to(device, non_blocking=True).float().div_(255) for image in images])
    return [select_persons(output, score_threshold=settings.score_threshold, min_box_size=settings.min_box_size,
                           max_persons=settings.max_persons) for output in outputs]  # fmt: skip


def detector_identity(settings: DetectorSettings, name: str, weights: Path, model: torch.nn.Module,
                      precision: str) -> dict[str, object]:  # fmt: skip
    """The fields that decide the boxes: a store holds one identity's boxes, another identity re-detects."""
    identity = asdict(settings)
    identity.pop("amp")
    min_size, max_size = model.transform.min_size, model.transform.max_size
    return {**identity, "model": name, "weights": weights.name, "weights_sha256": sha256_file(weights),
            "min_size": int(min_size[0]), "max_size": int(max_size), "precision": precision,
            "exif_orientation": True}  # fmt: skip


def detect_folders(
    folders: Sequence[tuple[Path, bool]],
    store_root: str | Path,
    settings: DetectorSettings,
    *,
    device: torch.device,
    batch_size: int | None = None,
    num_workers: int = 2,
    shard_index: int = 0,
    num_shards: int = 1,
    progress: bool = True,
) -> DetectionRun:
    """Detect the persons of every image of ``folders`` that ``store_root`` lacks, for this slot.

    Args:
        folders: ``(folder, recursive)`` pairs, e.g. ``pipeline.data.folders.unlabeled_folders(root)``.
        store_root: the detection store (created if missing).
        settings: the detector and its person selection.
        device: where the detector runs.
        batch_size: images per forward pass; None: ``default_batch_size(device)``.
        num_workers: decoding processes (0: in this process).
        shard_index, num_shards: this process's slot of the images.
        progress: a tqdm bar over the images to detect.

    Raises:
        pipeline.detection.weights.DetectorWeightsError: no weights file (the message says where to put it).
        storage.detections.DetectionStoreError: another process writes the same slot of a folder.
    """
    start = time.perf_counter()
    own = [f for f, _ in folders if (f / DETECTIONS_FILE).is_file()]
    results = [FolderDetections(str(f.resolve()), own_file=True) for f in own]
    listing = {f: list_images(f, recursive=r) for f, r in folders if f not in own}
    listed = [(f, found) for f, found in listing.items() if found[0] or found[1]]  # an empty root is no folder
    if not listed:  # no detector needed, so none is loaded (no weights file asked for)
        return DetectionRun({}, tuple(results), round(time.perf_counter() - start, 2))
    model, name, weights = open_detector(settings, device)
    on_cuda = device.type == "cuda"
    precision = detector_precision(settings, device)
    identity = detector_identity(settings, name, weights, model, precision)
    stores = [DetectionStore(store_root, f, identity) for f, _ in listed]
    items, reused = _missing(stores, [names for _, (names, _) in listed], shard_index, num_shards)
    failed = [list(skipped) for _, (_, skipped) in listed]
    detected = [0] * len(listed)
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(s.writer(shard_index=shard_index, num_shards=num_shards)) for s in stores]
        for batch in _batches(items, batch_size or default_batch_size(device), num_workers, on_cuda, progress):
            good = [b for b in batch if "image" in b]
            for b in batch:
                if "error" in b:
                    item = items[b["index"]]
                    failed[item.store].append((item.name, str(b["error"])))
            if not good:
                continue
            found = detect_persons(model, [b["image"] for b in good], settings, device)
            for b, persons in zip(good, found, strict=True):
                item = items[b["index"]]
                size = (int(b["image"].shape[2]), int(b["image"].shape[1]))
                writers[item.store].add([DetectedImage(item.name, b["state"], size, persons)])
                detected[item.store] += 1
    for s, store in enumerate(stores):
        store.compact()
        results.append(_folder_counts(store, listed[s][1][0], detected[s], reused[s], failed[s]))
    run = DetectionRun(identity, tuple(results), round(time.perf_counter() - start, 2))
    for line in run.log_lines():
        logger.info(line)
    return run


def _missing(
    stores: Sequence[DetectionStore], names: Sequence[list[str]], shard_index: int, num_shards: int
) -> tuple[list[_Item], list[int]]:
    """The images of this slot each store lacks (new or edited), and per store how many it already holds."""
    items: list[_Item] = []
    reused = [0] * len(stores)
    for s, (store, images) in enumerate(zip(stores, names, strict=True)):
        held = store.images()
        for image in images:
            if slot_of_image(image, num_shards) != shard_index:
                continue
            if matching_entry(held.get(image, ()), store.folder / image) is None:
                items.append(_Item(s, store.folder, image))
            else:
                reused[s] += 1
    return items, reused


def _batches(
    items: Sequence[_Item], batch_size: int, num_workers: int, pin: bool, progress: bool
) -> Iterator[list[dict[str, object]]]:
    """Decoded batches of ``items`` (workers decode ahead of the detector), advancing a progress bar."""
    workers = num_workers if items else 0
    loader = DataLoader(
        _DecodedImages(items), batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_as_list,
        pin_memory=pin, prefetch_factor=2 if workers else None, multiprocessing_context=worker_start_method(workers),
    )  # fmt: skip
    with tqdm(total=len(items), desc="detect", unit="img", disable=not progress) as bar:
        for batch in loader:
            yield batch
            bar.update(len(batch))


def _folder_counts(
    store: DetectionStore, names: list[str], detected: int, reused: int, failed: list[tuple[str, str]]
) -> FolderDetections:
    """The folder's counts over every image the store holds now (every slot's)."""
    held = store.images()
    entries = [matching_entry(held.get(n, ()), store.folder / n) for n in names]
    found = [e for e in entries if e is not None]
    return FolderDetections(
        str(store.folder), len(names), detected, reused, sum(bool(e.persons) for e in found),
        sum(len(e.persons) for e in found), sum(not e.persons for e in found), len(names) - len(found),
        tuple(failed),
    )  # fmt: skip
