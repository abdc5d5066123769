"""Poses on pictures: image files, folders or videos -> person boxes -> a pose network -> keypoints and pictures.

``predict_pictures`` is what ``fpd predict`` runs. Person boxes come from a ``BoxSource``: the detection stage's
detector, a boxes file in the COCO results format, or the whole picture. Each box is cropped exactly as evaluation
crops a record (HRNet's padding 1.25 for boxes, none for a whole picture), the network runs with flip test, the one
codec decodes the joints, and each picture's poses are rescored and OKS-NMS'd as HRNet's COCO evaluation does
(``pipeline.metrics.coco.keypoint_results``; no NMS for MPII joints, which have no OKS sigmas).

Outputs in ``out_dir``: ``keypoints.json`` (COCO keypoint results, ``pycocotools`` ``loadRes`` reads it),
``images.json`` (the COCO ``images`` list of those ids: ``id, file_name, width, height``, ``frame`` for a video
frame), ``render/*.png`` (each picture with its boxes and poses) and ``summary.json``. A file that cannot be read
is reported by name and skipped; the run goes on.

Image ids are the numeric file stems when every picture is a file named so (``000000000785.jpg`` -> 785, as
COCO names them, so the results line up with COCO's ground truth), else 1, 2, ... in input order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from models.joints import get_joint_set
from models.presets import ModelPreset
from pipeline.codec import HeatmapCodec
from pipeline.data.coco import parse_box
from pipeline.data.folders import list_images
from pipeline.data.images import ImageDecodeError, load_image, to_tensor
from pipeline.data.workers import worker_start_method
from pipeline.detection.run import detect_persons
from pipeline.detection.settings import DetectorSettings
from pipeline.flip import final_heatmaps, flip_test
from pipeline.geometry import BOX_PADDING, box_to_center_scale, crop_matrix, warp_image
from pipeline.metrics.coco import NMS_THRESHOLD, keypoint_results
from pipeline.render import render_poses
from storage.jsonfiles import read_json, write_json

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg"})
Person = tuple[tuple[float, float, float, float], float]
"""A person box ``(x, y, w, h)`` in picture pixels and its score."""


@dataclass(frozen=True)
class Picture:
    """One picture to predict on: an image file, or frame ``frame`` of a video file.

    Attributes:
        name: unique among the inputs (``<folder>/<relative path>`` for a folder's file, ``clip.mp4#000012``).
        path: the file.
        image_id: its id in the outputs.
        frame: the frame index in a video; None for an image file.
        relative: a folder's file relative to the folder (how a boxes file names it), else ``name``.
    """

    name: str
    path: Path
    image_id: int
    frame: int | None = None
    relative: str = ""


@dataclass(frozen=True)
class BoxSource:
    """Where the person boxes of a batch of pictures come from.

    Attributes:
        kind: ``"detector"``, ``"file"`` or ``"whole-image"`` (reported in the summary).
        find: the persons of each picture, given the pictures and their decoded images.
        padding: box padding before the crop (HRNet's 1.25 for boxes; 1 for a whole picture).
    """

    kind: str
    find: Callable[[Sequence[Picture], Sequence[Image.Image]], list[list[Person]]]
    padding: float = BOX_PADDING


def whole_picture_boxes() -> BoxSource:
    """Each picture is one person, box = the whole picture (crops of single persons)."""
    return BoxSource("whole-image", lambda _, images: [[((0.0, 0.0, *map(float, im.size)), 1.0)] for im in images],
                     padding=1.0)  # fmt: skip


def detector_boxes(model: nn.Module, settings: DetectorSettings, device: torch.device) -> BoxSource:
    """The detection stage's persons (``pipeline.detection.run.detect_persons``) of each picture."""

    def find(_: Sequence[Picture], images: Sequence[Image.Image]) -> list[list[Person]]:
        pixels = [torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1) for im in images]
        return [list(persons) for persons in detect_persons(model, pixels, settings, device)]

    return BoxSource("detector", find)


def file_boxes(path: str | Path, score_threshold: float = 0.0) -> BoxSource:
    """Boxes from a COCO-results-style json list, each ``{"file_name" or "image_id", "bbox": [x, y, w, h],
    "score"}`` (``score`` optional, default 1; entries of another ``category_id`` than 1 are not persons), keyed by
    the picture's name or id; boxes scoring below ``score_threshold`` are dropped (HRNet's ``image_thre``).

    Raises:
        FileNotFoundError, ValueError: the file is missing, not json, or an entry is malformed (the message names
            the file and entry).
    """
    entries = read_json(path, "boxes file")
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a json list of {{file_name or image_id, bbox, score}}")
    by_key: dict[object, list[Person]] = {}
    for i, entry in enumerate(entries):
        what = f"{path} entry {i}"
        if not isinstance(entry, dict) or not ({"file_name", "image_id"} & entry.keys()):
            raise ValueError(f"{what}: expected an object with file_name or image_id and bbox")
        if entry.get("category_id", 1) != 1:
            continue
        score = float(entry.get("score", 1.0))
        if score >= score_threshold:
            key = entry["file_name"] if "file_name" in entry else int(entry["image_id"])
            by_key.setdefault(key, []).append((parse_box(entry.get("bbox"), f"{what} field 'bbox'"), score))

    def find(pictures: Sequence[Picture], _: Sequence[Image.Image]) -> list[list[Person]]:
        return [by_key.get(p.relative or p.name, by_key.get(p.name, by_key.get(p.image_id, []))) for p in pictures]

    return BoxSource("file", find)


@dataclass(frozen=True)
class PredictionRun:
    """What ``predict_pictures`` did.

    Attributes:
        pictures: pictures predicted on (video frames included).
        persons: person boxes cropped.
        poses: poses written after rescoring and OKS-NMS.
        failed: ``(name, reason)`` of each file that could not be read (skipped).
        seconds: wall time of the whole run (decode, boxes, network, writing, rendering).
        pose_seconds: time in cropping, the pose network and decoding alone.
        out_dir, boxes, preset, flip, device: what ran where.
    """

    pictures: int
    persons: int
    poses: int
    failed: tuple[tuple[str, str], ...]
    seconds: float
    pose_seconds: float
    out_dir: str
    boxes: str
    preset: str
    flip: bool
    device: str
    files: dict[str, str] = field(default_factory=dict)

    @property
    def pictures_per_second(self) -> float:
        return self.pictures / self.seconds if self.seconds > 0 else 0.0

    @property
    def persons_per_second(self) -> float:
        """Persons per second of the pose stage alone (crop, network, decode)."""
        return self.persons / self.pose_seconds if self.pose_seconds > 0 else 0.0


def list_pictures(inputs: Sequence[str | Path]) -> tuple[list[Picture], list[Path], list[tuple[str, str]]]:
    """The image files of ``inputs`` (files, and folders searched recursively), the video files, and the inputs
    skipped ``(name, reason)``; pictures named by file name, or ``<folder>/<relative path>`` inside a folder.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: two inputs give the same picture name (outputs are named after it).
    """
    found: list[tuple[str, Path, str]] = []
    videos: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            names, left_out = list_images(item)
            found.extend((f"{item.resolve().name}/{name}", item / name, name) for name in names)
            skipped.extend((f"{item.name}/{name}", reason) for name, reason in left_out)
        elif item.suffix.lower() in VIDEO_SUFFIXES and item.is_file():
            videos.append(item)
        elif item.is_file():
            found.append((item.name, item, item.name))  # any suffix: a file named on purpose is tried (or reported)
        else:
            raise FileNotFoundError(f"input not found: {item}")
    names = [name for name, _, _ in found] + [video.name for video in videos]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"two inputs give the picture name {duplicates[0]!r}; pass their folders instead")
    stems = [Path(name).stem for name, _, _ in found]
    numeric = not videos and all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems)
    pictures = [Picture(name, path, int(Path(name).stem) if numeric else i + 1, relative=relative)
                for i, (name, path, relative) in enumerate(found)]  # fmt: skip
    return pictures, videos, skipped


class _DecodedFiles(Dataset):
    """Pictures decoded upright (EXIF), in worker processes; an unreadable file gives its error instead."""

    def __init__(self, pictures: Sequence[Picture]) -> None:
        self.pictures = list(pictures)

    def __len__(self) -> int:
        return len(self.pictures)

    def __getitem__(self, index: int) -> tuple[Picture, Image.Image | None, str]:
        picture = self.pictures[index]
        try:
            return picture, load_image(picture.path, exif_orientation=True).image, ""
        except ImageDecodeError as exc:
            return picture, None, str(exc)


def _video_frames(
    video: Path, first_id: int, stride: int, max_frames: int | None
) -> Iterator[tuple[Picture, Image.Image | None, str]]:
    """Every ``stride``-th frame of ``video`` (at most ``max_frames``), decoded by PyAV; a video that cannot be
    opened or decoded gives one error item (frames decoded before a damaged part are kept)."""
    try:
        import av
    except ImportError:
        raise ValueError(f"{video}: reading videos needs PyAV: pip install 'fast-pose-distillation[video]'") from None
    picture_id, kept = first_id, 0
    try:
        with av.open(str(video)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index % stride:
                    continue
                if max_frames is not None and kept >= max_frames:
                    return
                picture = Picture(f"{video.name}#{index:06d}", video, picture_id, index)
                yield picture, frame.to_image().convert("RGB"), ""
                picture_id, kept = picture_id + 1, kept + 1
    except (av.error.FFmpegError, OSError) as exc:
        yield Picture(video.name, video, picture_id), None, f"{video}: cannot decode video ({exc})"


def _decoded(
    pictures: Sequence[Picture], videos: Sequence[Path], num_workers: int, stride: int, max_frames: int | None
) -> Iterator[tuple[Picture, Image.Image | None, str]]:
    if pictures:
        loader = DataLoader(_DecodedFiles(pictures), batch_size=None, num_workers=num_workers,
                            multiprocessing_context=worker_start_method(num_workers))  # fmt: skip
        yield from loader
    next_id = len(pictures) + 1
    for video in videos:
        for item in _video_frames(video, next_id, stride, max_frames):
            next_id = item[0].image_id + 1
            yield item


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def render_name(picture: Picture) -> str:
    """The PNG file name of a picture's rendering (its name with folders and ``#`` flattened)."""
    return picture.name.replace("/", "__").replace("#", "_") + ".png"


def predict_pictures(
    model: nn.Module,
    preset: ModelPreset,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    boxes: BoxSource,
    *,
    flip: bool = True,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    num_workers: int = 2,
    render: bool = True,
    render_threshold: float = 0.3,
    video_stride: int = 1,
    max_frames: int | None = None,
    progress: bool = True,
) -> PredictionRun:
    """Predict every person of every picture of ``inputs`` and write the outputs (module notes) to ``out_dir``.

    Args:
        model: a pose network of ``preset`` (eval mode is set here and restored after).
        preset: input/heatmap size, colour order and joint set of the model.
        inputs: image files, folders of images, video files.
        out_dir: where the outputs go (created).
        boxes: where person boxes come from (``detector_boxes``, ``file_boxes``, ``whole_picture_boxes``).
        flip: HRNet's flip test.
        batch_size: pictures per step, and crops per forward pass (a flip test doubles it).
        device: where the pose network runs.
        num_workers: image decoding processes.
        render: write ``render/*.png``.
        render_threshold: the pictures show the boxes and poses scoring at least this (the json has them all:
            AP needs the low-scoring ones too).
        video_stride: keep every ``video_stride``-th video frame.
        max_frames: at most this many frames per video.
        progress: a tqdm bar over the pictures.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    (out_dir / "render").mkdir(parents=True, exist_ok=True)
    pictures, videos, failed = list_pictures(inputs)
    joint_set = get_joint_set(preset.joint_set)
    codec = HeatmapCodec(preset.input_size, preset.heatmap_size)
    nms = NMS_THRESHOLD if joint_set.sigmas else None
    results: list[dict] = []
    images: list[dict] = []
    persons = 0
    pose_seconds = 0.0
    was_training = model.training
    model.to(device).eval()
    bar = tqdm(total=len(pictures) or None, desc="predict", unit="picture", disable=not progress)
    try:
        for chunk in _chunks(_decoded(pictures, videos, num_workers, video_stride, max_frames), batch_size):
            failed.extend((picture.name, error) for picture, image, error in chunk if image is None)
            good = [(picture, image) for picture, image, _ in chunk if image is not None]
            bar.update(len(chunk))
            if not good:
                continue
            found = boxes.find([p for p, _ in good], [im for _, im in good])
            tick = time.perf_counter()
            poses = _poses(model, preset, codec, good, found, boxes.padding, flip, batch_size, device)
            pose_seconds += time.perf_counter() - tick
            for (picture, image), people, (coords, maxvals, centers, scales) in zip(good, found, poses, strict=True):
                persons += len(people)
                kept = keypoint_results(coords, maxvals, centers, scales, np.array([s for _, s in people]),
                                        [picture.image_id] * len(people), nms_threshold=nms,
                                        sigmas=joint_set.sigmas) if people else []  # fmt: skip
                results.extend(kept)
                entry = {"id": picture.image_id, "file_name": picture.name, "width": image.width,
                         "height": image.height}  # fmt: skip
                images.append(entry if picture.frame is None else {**entry, "frame": picture.frame})
                if render:
                    shown = [p for p in people if p[1] >= render_threshold] if boxes.kind != "whole-image" else []
                    render_poses(image, [r for r in kept if r["score"] >= render_threshold], shown, joint_set,
                                 out_dir / "render" / render_name(picture))  # fmt: skip
    finally:
        bar.close()
        model.train(was_training)
    files = {"keypoints": str(write_json(out_dir / "keypoints.json", results)),
             "images": str(write_json(out_dir / "images.json", images))}  # fmt: skip
    if render:
        files["render"] = str(out_dir / "render")
    run = PredictionRun(
        len(images), persons, len(results), tuple(failed), round(time.perf_counter() - start, 3),
        round(pose_seconds, 3), str(out_dir), boxes.kind, preset.name, flip, str(device), files,
    )  # fmt: skip
    summary = {**asdict(run), "pictures_per_second": run.pictures_per_second,
               "persons_per_second": run.persons_per_second}  # fmt: skip
    files["summary"] = str(write_json(out_dir / "summary.json", summary))
    for name, reason in failed:
        logger.warning("skipped %s: %s", name, reason)
    return run


def _poses(
    model: nn.Module,
    preset: ModelPreset,
    codec: HeatmapCodec,
    good: Sequence[tuple[Picture, Image.Image]],
    found: Sequence[Sequence[Person]],
    padding: float,
    flip: bool,
    batch_size: int,
    device: str | torch.device,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(coords (n, K, 2), maxvals (n, K), centers (n, 2), scales (n, 2)) of each picture's n persons."""
    crops, centers, scales = [], [], []
    for (_, image), people in zip(good, found, strict=True):
        for box, _ in people:
            center, scale = box_to_center_scale(*box, aspect_ratio=preset.input_aspect, padding=padding)
            matrix = crop_matrix(center, scale, 0.0, preset.input_size)
            crops.append(to_tensor(warp_image(image, matrix, preset.input_size), preset.color_order))
            centers.append(center)
            scales.append(scale)
    centers_arr = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    scales_arr = np.asarray(scales, dtype=np.float64).reshape(-1, 2)
    coords = np.zeros((len(crops), preset.num_joints, 2))
    maxvals = np.zeros((len(crops), preset.num_joints), dtype=np.float32)
    permutation = get_joint_set(preset.joint_set).flip_permutation()
    with torch.inference_mode():
        for begin in range(0, len(crops), batch_size):
            batch = torch.stack(crops[begin:begin + batch_size]).to(device)
            heatmaps = flip_test(model, batch, permutation) if flip else final_heatmaps(model(batch))
            batch_coords, batch_maxvals = codec.decode(heatmaps)
            end = begin + len(batch)
            coords[begin:end] = codec.to_image(batch_coords, centers_arr[begin:end], scales_arr[begin:end])
            maxvals[begin:end] = batch_maxvals.cpu().numpy()
    out, begin = [], 0
    for people in found:
        end = begin + len(people)
        out.append((coords[begin:end], maxvals[begin:end], centers_arr[begin:end], scales_arr[begin:end]))
        begin = end
    return out
