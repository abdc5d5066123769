"""Pictures of poses: cached teacher targets (the crop the teacher saw, its heatmaps, its joints and the ground
truth) and predictions on whole pictures (``render_poses``: boxes, left/right limbs, per-joint confidence).

``render_cache`` writes one PNG per chosen sample and an ``index.html`` that shows them under the cache's
statistics. Each picture re-makes the input crop from the record (same crop matrix as inference), lays the
maximum over joints of the teacher heatmaps on it as a colour layer, draws the decoded teacher skeleton in one
colour and, for labelled samples, the ground-truth skeleton in another, with a legend. Pillow only.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from models.joints import JointSet, get_joint_set
from pipeline.data.crops import crop_record
from pipeline.data.folders import WHOLE_IMAGE
from pipeline.data.images import ImageDecodeError
from pipeline.geometry import BOX_PADDING, apply_affine, scale_matrix, warp_image
from pipeline.metrics.coco import VIS_THRESHOLD
from pipeline.records import PIXEL_STD, SampleRecord
from pipeline.teacher.records import cached_record
from storage.cache import TeacherTargetCache, TeacherTargetDataset

logger = logging.getLogger(__name__)

TEACHER_COLOUR = (0, 229, 255)
TRUTH_COLOUR = (255, 64, 160)
BOX_COLOUR = (255, 200, 40)
SIDE_COLOURS = {"left": (255, 140, 0), "right": (40, 160, 255), "centre": (60, 220, 90)}
"""Limb colours of ``draw_pose`` by body side (the person's own left and right)."""
MIN_WIDTH = 320
"""Pictures are enlarged by an integer factor to at least this width, so tiny 128-pixel crops stay legible."""
LEGEND_HEIGHT = 34
POSE_PICTURE_WIDTH = 560
"""``render_poses`` enlarges narrower pictures by an integer factor to at least this width (its legend's)."""


@dataclass(frozen=True)
class RenderedSample:
    """One written picture and what it shows."""

    file: str
    source: str
    image: str
    instance_id: str
    labelled: bool
    mean_maxval: float


def heat_colours(values: np.ndarray) -> np.ndarray:
    """A blue-green-yellow-red ramp for values in [0, 1]: (...,) -> (..., 3) uint8."""
    stops = np.array([0.0, 0.35, 0.65, 1.0])
    colours = np.array([[20, 40, 200], [0, 200, 120], [250, 220, 0], [240, 20, 20]], dtype=np.float64)
    v = np.clip(values, 0.0, 1.0)
    return np.stack([np.interp(v, stops, colours[:, c]) for c in range(3)], axis=-1).astype(np.uint8)


def render_sample(data: TeacherTargetDataset, i: int, out_path: Path) -> RenderedSample:
    """Draw sample ``i`` of ``data`` to ``out_path`` (PNG).

    Raises:
        ImageDecodeError: the sample's image can no longer be read.
    """
    provenance = data.provenance
    joint_set = get_joint_set(provenance.joint_set)
    record = cached_record(data.index, i)
    item = data[i]
    matrix, crop = crop_record(record, provenance.input_size, use_draft=provenance.draft_decode)
    factor = max(1, -(-MIN_WIDTH // provenance.input_size[0]))
    size = (provenance.input_size[0] * factor, provenance.input_size[1] * factor)

    # Heatmap pixel j lies at input pixel stride * j (the codec's convention), so the layer is warped with that
    # scale about pixel centres rather than resized edge to edge, which would shift it by (stride - 1) / 2.
    peak = item["heatmaps"].numpy().max(axis=0)
    to_picture = scale_matrix(factor * provenance.input_size[0] / provenance.heatmap_size[0],
                              factor * provenance.input_size[1] / provenance.heatmap_size[1])  # fmt: skip
    layer = warp_image(Image.fromarray(heat_colours(peak)), to_picture, size)
    alpha = warp_image(Image.fromarray((np.clip(peak, 0.0, 1.0) * 200).astype(np.uint8)), to_picture, size)
    picture = warp_image(crop.convert("RGB"), scale_matrix(factor), size)
    picture.paste(layer, (0, 0), alpha)

    canvas = Image.new("RGB", (size[0], size[1] + LEGEND_HEIGHT), (24, 24, 24))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    radius = max(2, factor + 1)
    if record.joints is not None:
        visible = np.asarray(record.visibility) > 0
        _skeleton(draw, apply_affine(record.joints, matrix) * factor, visible, joint_set.skeleton, TRUTH_COLOUR, radius)
    box = _detector_box(record)
    if box is not None:
        corners = apply_affine(box, matrix) * factor
        draw.rectangle([tuple(corners[0]), tuple(corners[1])], outline=BOX_COLOUR, width=max(1, radius - 1))
    teacher = apply_affine(item["teacher_joints_image"].numpy(), matrix) * factor
    confident = item["maxvals"].numpy() > 0.0
    _skeleton(draw, teacher, confident, joint_set.skeleton, TEACHER_COLOUR, radius)
    _legend(draw, size, labelled=record.joints is not None, box_score=None if box is None else record.score)
    canvas.save(out_path)
    return RenderedSample(out_path.name, record.source, record.image, record.instance_id, record.joints is not None,
                          float(item["maxvals"].mean()))  # fmt: skip


def _skeleton(
    draw: ImageDraw.ImageDraw,
    points: np.ndarray,
    shown: np.ndarray,
    edges: tuple[tuple[int, int], ...],
    colour: tuple[int, int, int],
    radius: int,
) -> None:
    for a, b in edges:
        if shown[a] and shown[b]:
            draw.line([tuple(points[a]), tuple(points[b])], fill=colour, width=max(1, radius - 1))
    for (x, y), ok in zip(points, shown, strict=True):
        if ok:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=(0, 0, 0))


def joint_sides(joint_set: JointSet) -> list[str]:
    """``"left"``, ``"right"`` or ``"centre"`` per joint, from its name (``l_hip`` / ``left_hip``...)."""
    sides = []
    for name in joint_set.names:
        sides.append("left" if name.startswith(("l_", "left_")) else "right" if name.startswith(("r_", "right_"))
                     else "centre")  # fmt: skip
    return sides


def draw_pose(
    draw: ImageDraw.ImageDraw,
    points: np.ndarray,
    confidences: np.ndarray,
    joint_set: JointSet,
    radius: int,
    vis_threshold: float = VIS_THRESHOLD,
) -> None:
    """One pose: limbs in the colour of their side, each joint filled by its confidence (``heat_colours``).

    A joint below ``vis_threshold`` (HRNet's rescoring threshold: it does not count towards the pose score) is a
    hollow ring and its limbs are not drawn.

    Args:
        draw: where to draw.
        points: (K, 2) joint positions in the picture's pixels.
        confidences: (K,) heatmap maxima.
        joint_set: names and skeleton of the K joints.
        radius: joint radius in pixels; limbs are ``radius - 1`` wide.
        vis_threshold: lowest confidence drawn as a visible joint.
    """
    sides = joint_sides(joint_set)
    shown = np.asarray(confidences) >= vis_threshold
    for a, b in joint_set.skeleton:
        if shown[a] and shown[b]:
            side = sides[a] if sides[a] == sides[b] else "centre"
            draw.line([tuple(points[a]), tuple(points[b])], fill=SIDE_COLOURS[side], width=max(1, radius - 1))
    fills = heat_colours(np.asarray(confidences, dtype=np.float64))
    for (x, y), ok, fill, side in zip(points, shown, fills, sides, strict=True):
        ring = [x - radius, y - radius, x + radius, y + radius]
        if ok:
            draw.ellipse(ring, fill=tuple(int(c) for c in fill), outline=SIDE_COLOURS[side])
        else:
            draw.ellipse(ring, outline=tuple(int(c) for c in fill))


def render_poses(
    image: Image.Image,
    poses: list[dict],
    boxes: list[tuple[tuple[float, float, float, float], float]],
    joint_set: JointSet,
    out_path: Path,
) -> None:
    """Draw a picture's person boxes (``(x, y, w, h), score``; none for a whole picture) and poses (COCO result
    dicts: ``keypoints`` x, y, confidence per joint, and ``score``) with a legend strip below; PNG."""
    factor = max(1, -(-POSE_PICTURE_WIDTH // image.width))  # small pictures enlarged so the legend fits
    size = (image.width * factor, image.height * factor)
    picture = warp_image(image.convert("RGB"), scale_matrix(factor), size)
    radius = max(2, round(max(size) / 250))
    canvas = Image.new("RGB", (size[0], size[1] + LEGEND_HEIGHT), (24, 24, 24))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    to_picture = scale_matrix(factor)
    for (x, y, w, h), score in boxes:
        corners = apply_affine(np.array([[x, y], [x + w, y + h]]), to_picture)
        draw.rectangle([tuple(corners[0]), tuple(corners[1])], outline=BOX_COLOUR, width=max(1, radius // 2))
        draw.text((corners[0][0] + 3, corners[0][1] + 2), f"{score:.2f}", fill=BOX_COLOUR)
    for pose in poses:
        keypoints = np.asarray(pose["keypoints"], dtype=np.float64).reshape(-1, 3)
        draw_pose(draw, apply_affine(keypoints[:, :2], to_picture), keypoints[:, 2], joint_set, radius)
    top, x = size[1] + 4, 6
    for side, colour in SIDE_COLOURS.items():
        draw.rectangle([x, top + 4, x + 12, top + 16], fill=colour)
        draw.text((x + 16, top + 4), side, fill=(235, 235, 235))
        x += 24 + int(draw.textlength(side))
    _ramp(draw, x, top, f"joint confidence 0..1 (ring: < {VIS_THRESHOLD})")
    canvas.save(out_path)


def _detector_box(record: SampleRecord) -> np.ndarray | None:
    """The person box (two corners, image pixels) a detector gave an unlabeled record, before the crop's padding;
    None for labelled records and whole images."""
    if record.labelled or not record.source.startswith("folder/") or record.instance_id.endswith(WHOLE_IMAGE):
        return None
    half = np.asarray(record.scale) * PIXEL_STD / BOX_PADDING / 2
    return np.stack([np.asarray(record.center) - half, np.asarray(record.center) + half])


def _legend(draw: ImageDraw.ImageDraw, size: tuple[int, int], *, labelled: bool, box_score: float | None) -> None:
    top = size[1] + 4
    x = 6
    entries = [(TEACHER_COLOUR, "teacher")] + ([(TRUTH_COLOUR, "ground truth")] if labelled else [])
    entries += [(BOX_COLOUR, f"person box {box_score:.2f}")] if box_score is not None else []
    for colour, label in entries:
        draw.rectangle([x, top + 4, x + 12, top + 16], fill=colour)
        draw.text((x + 16, top + 4), label, fill=(235, 235, 235))
        x += 24 + int(draw.textlength(label))
    _ramp(draw, x, top, "heatmap max 0..1")


def _ramp(draw: ImageDraw.ImageDraw, x: int, top: int, label: str) -> None:
    """The ``heat_colours`` scale, 60 px wide, and its label."""
    for j, colour in enumerate(heat_colours(np.linspace(0.0, 1.0, 60))):
        draw.line([(x + j, top + 4), (x + j, top + 16)], fill=tuple(int(c) for c in colour))
    draw.text((x + 64, top + 4), label, fill=(235, 235, 235))


def choose_samples(data: TeacherTargetDataset, source: str | None, n: int, *, lowest: bool = False) -> list[int]:
    """``n`` samples of the cache (or of one source): spread evenly in dataset order, or with ``lowest`` the ``n``
    the teacher is least sure of (lowest mean over joints of the heatmap maxima), weakest first.

    Raises:
        ValueError: ``source`` is not a source of the cache (the message lists those it has).
    """
    sources = data.index.strings["source"]
    candidates = np.flatnonzero(sources == source) if source is not None else np.arange(len(data))
    if source is not None and not len(candidates):
        raise ValueError(f"the cache has no samples of source {source!r}; its sources: "
                         f"{', '.join(sorted(set(map(str, sources)))) or 'none'}")  # fmt: skip
    if lowest:
        confidence = data.index.numeric["maxvals"].reshape(len(data), -1).mean(axis=1)
        return candidates[np.argsort(confidence[candidates], kind="stable")[:n]].tolist()
    if len(candidates) <= n:
        return candidates.tolist()
    return candidates[np.linspace(0, len(candidates) - 1, n).round().astype(int)].tolist()


def render_cache(
    cache_path: str | Path, out_dir: str | Path, *, source: str | None = None, n: int = 16, lowest: bool = False
) -> Path:
    """Write ``n`` sample pictures (``choose_samples``) and ``index.html`` to ``out_dir``; returns the index path.

    Samples whose image cannot be read any more are listed in the index instead of drawn.
    """
    cache = TeacherTargetCache(cache_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = cache.dataset()
    rendered: list[RenderedSample] = []
    unreadable: list[str] = []
    for k, i in enumerate(choose_samples(data, source, n, lowest=lowest)):
        record = cached_record(data.index, i)
        name = f"{k:03d}_{_slug(record.source)}_{_slug(Path(record.image).stem)}_{_slug(record.instance_id)}.png"
        try:
            rendered.append(render_sample(data, i, out_dir / name))
        except ImageDecodeError as exc:
            logger.warning("cannot render %s: %s", record.key, exc)
            unreadable.append(str(exc))
    data.close()
    index = out_dir / "index.html"
    index.write_text(_index_html(cache, rendered, unreadable))
    return index


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60]


def _index_html(cache: TeacherTargetCache, rendered: list[RenderedSample], unreadable: list[str]) -> str:
    summary = cache.inspect()
    esc = html.escape
    prov_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in summary.provenance.items())
    source_rows = "".join(f"<tr><th>{esc(s)}</th><td>{c}</td></tr>" for s, c in summary.per_source.items())
    joint_rows = "".join(
        f"<tr><th>{esc(j.joint)}</th><td>{j.mean:.3f}</td><td>{j.p10:.3f}</td><td>{j.p50:.3f}</td></tr>"
        for j in summary.joint_confidence
    )
    figures = "".join(
        f'<figure><img src="{esc(r.file)}" alt="{esc(r.image)}"><figcaption>{esc(r.source)}<br>{esc(r.image)} '
        f"#{esc(r.instance_id)}<br>mean maxval {r.mean_maxval:.3f}{' (labelled)' if r.labelled else ''}"
        "</figcaption></figure>"
        for r in rendered
    )
    missing = "".join(f"<li>{esc(m)}</li>" for m in unreadable)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Teacher cache {esc(summary.path)}</title>
<style>body{{font-family:sans-serif;background:#181818;color:#eee}} table{{border-collapse:collapse;margin:8px 0}}
td,th{{border:1px solid #444;padding:2px 8px;text-align:left}} figure{{display:inline-block;margin:6px}}
figcaption{{font-size:12px;max-width:340px}}</style></head><body>
<h1>Teacher cache</h1><p>{esc(summary.path)}: {summary.num_samples} samples ({summary.labelled} labelled,
{summary.unlabeled} unlabeled), {summary.num_shards} shards, {summary.disk_bytes / 2**20:.1f} MiB,
{summary.bytes_per_sample:.0f} bytes/sample, {summary.num_superseded} superseded records.</p>
<h2>Provenance</h2><table>{prov_rows}</table>
<h2>Samples per source</h2><table>{source_rows}</table>
<h2>Teacher confidence (heatmap maximum) per joint</h2>
<table><tr><th>joint</th><th>mean</th><th>p10</th><th>p50</th></tr>{joint_rows}</table>
<h2>Samples</h2>{figures}
{f"<h2>Unreadable images</h2><ul>{missing}</ul>" if missing else ""}
</body></html>
"""
