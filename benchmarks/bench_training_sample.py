"""CPU cost of one training sample on the real COCO photos, step by step, beside HRNet's sample and the decode floor.

One sample of ``DistillDataset`` (pipeline/training/data.py) at the COCO recipe's 192x256 input and 48x64 heatmaps,
with its augmentation (``AugmentConfig.for_dataset("coco")``) and a teacher cache of 17x64x48 maps written by the
real cache writer and read back through ``CacheTargets`` (realistic maps: ``bench_cache_compression``'s Gaussians
at the joints with teacher-like peaks and noise std 0.002). Three arms, timed side by side in each round:

- ``now``: the dataset's ``__getitem__`` and each of its steps (decode, crop draw, image warp, joints, cache
  read, teacher matrix, tensor conversion); what it hands to the training step (normalisation, GT target encoding,
  teacher warp: ``step_inputs``) is timed there, per sample of a 12-sample batch on the CPU (on the accelerator in
  training);
- ``before``: the same sample as the worker made it before this benchmark's change (Pillow decode and warp, numpy
  normalisation, float64 targets, the teacher warp per sample), restated below where the code is gone;
- ``hrnet`` (with ``--hrnet-root``, a checkout of github.com/leoxiaobin/deep-high-resolution-net.pytorch): its
  ``COCODataset.__getitem__`` on the same 12 persons with its COCO training augmentation and its
  ``ToTensor + Normalize``.

Floors: the JPEG decode alone, with Pillow, with OpenCV from the file's bytes (what the ``now`` arm decodes with),
and with ``cv2.imread`` (HRNet's). One thread everywhere (torch, OpenCV). Each round runs every timing over the 12
samples (``--passes`` times): the whole samples and the floors take turns sample by sample (in alternating order),
the breakdown's steps one after the other (in reversed order every other round). The figures are medians over
``--rounds``; the goal's ratios are also given as the median of the per-round ratios. The pixel differences between
the arms are measured on every sample drawn.

    PYTHONPATH=. python benchmarks/bench_training_sample.py [--rounds 11] [--hrnet-root DIR] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import default_collate

from benchmarks.bench_cache_compression import teacher_like_heatmaps
from benchmarks.output import publish
from models.joints import COCO
from pipeline.augment import AugmentConfig, crop_params_matrix, sample_crop, transform_joints
from pipeline.codec import HeatmapCodec
from pipeline.data.coco import load_coco
from pipeline.data.images import IMAGENET_MEAN, IMAGENET_STD, load_image, load_image_array
from pipeline.geometry import apply_affine, invert_affine, to_homogeneous, warp_array, warp_image
from pipeline.records import SampleRecord
from pipeline.teacher.plan import plan_inference
from pipeline.teacher.records import shard_batch
from pipeline.training.data import DistillDataset, cached_to_augmented, heatmap_normalizer, step_inputs
from pipeline.training.sources import CacheTargets
from storage.cache import CacheProvenance, TeacherTargetCache

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"
INPUT, HEATMAP = (192, 256), (48, 64)
SEED = 0
STEPS = ("decode", "crop draw", "image warp", "joints + targets", "cache read", "heatmap warp", "tensor conversion")
"""The per-sample steps of a worker; ``now`` moves the targets' encoding and the heatmap warp to the step (its
"joints + targets" and "heatmap warp" rows are the joint transform and the teacher matrix)."""


def build_cache(records: list[SampleRecord], folder: Path) -> CacheTargets:
    """A teacher cache of ``records`` with teacher-like 17x64x48 maps, written and read by the real cache code."""
    heatmaps = teacher_like_heatmaps(records, INPUT, HEATMAP, len(records), 0.002, np.random.default_rng(0))[1]
    provenance = CacheProvenance("bench", "0" * 64, INPUT, HEATMAP, COCO.name, COCO.names, COCO.flip_pairs)
    cache = TeacherTargetCache(folder).open_or_create(provenance)
    plan = plan_inference(records, cache)
    zeros = np.zeros((len(records), COCO.num_joints, 2), dtype=np.float32)
    with cache.writer(shard_size=512) as writer:
        writer.add(shard_batch(list(plan.records), plan.states, heatmaps, zeros, zeros, heatmaps.max(axis=(2, 3))))
    return CacheTargets(cache.dataset(check_checksums=False))


# The previous per-sample path, restated where its code is gone ---------------------------------------------------


def previous_to_tensor(crop: Image.Image) -> torch.Tensor:
    """The network input as the workers made it: numpy float32 normalisation of the Pillow crop, channels first."""
    array = np.asarray(crop, dtype=np.float32) / 255.0
    mean, std = np.asarray(IMAGENET_MEAN, dtype=np.float32), np.asarray(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(((array - mean) / std).transpose(2, 0, 1)))


def previous_encode(codec: HeatmapCodec, joints: np.ndarray, visibility: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``HeatmapCodec.encode`` before its float32 output: the full-size float64 product, then a cast."""
    mu = np.trunc(np.asarray(joints, dtype=np.float64) / np.array(codec.stride) + 0.5)
    radius = codec.sigma * 3.0
    low, high = np.trunc(mu - radius), np.trunc(mu + radius + 1.0)
    (width, height) = codec.heatmap_size
    outside = (low[:, 0] >= width) | (low[:, 1] >= height) | (high[:, 0] < 0) | (high[:, 1] < 0)
    weights = ((np.asarray(visibility, dtype=np.float64) > 0.5) & ~outside).astype(np.float32)
    profiles = []
    for axis, length in ((0, width), (1, height)):
        pos = np.arange(length, dtype=np.float64)
        inside = (pos >= low[:, axis, None]) & (pos < high[:, axis, None])
        profiles.append(np.where(inside, np.exp(-((pos - mu[:, axis, None]) ** 2) / (2.0 * codec.sigma**2)), 0.0))
    gx, gy = profiles
    return (gy[:, :, None] * gx[:, None, :] * weights[:, None, None]).astype(np.float32), weights


def previous_teacher(heatmaps: np.ndarray, matrix: np.ndarray, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's cached maps warped in the worker: its view channel, its own ``grid_sample``, the flip's swap."""
    maps = torch.from_numpy(np.ascontiguousarray(heatmaps, dtype=np.float32))
    with_view = torch.cat([maps, torch.ones_like(maps[:1])])
    norm_in = heatmap_normalizer((maps.shape[-1], maps.shape[-2]))
    theta = (norm_in @ to_homogeneous(invert_affine(matrix)) @ np.linalg.inv(heatmap_normalizer(HEATMAP)))[:2]
    grid = F.affine_grid(torch.as_tensor(theta[None], dtype=torch.float32), [1, len(with_view), HEATMAP[1],
                         HEATMAP[0]], align_corners=False)  # fmt: skip
    warped = F.grid_sample(with_view[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    teacher = warped[:-1][torch.as_tensor(COCO.flip_permutation())] if flip else warped[:-1]
    return teacher, warped[-1:]


# HRNet's own dataset, from a checkout -----------------------------------------------------------------------------


def hrnet_dataset(hrnet_root: Path, coco_root: Path, annotation_file: Path) -> torch.utils.data.Dataset:
    """HRNet's ``COCODataset`` in training mode with its COCO 256x192 settings (``w32_256x192_adam_lr1e-3.yaml``)."""
    from torchvision import transforms

    # HRNet's modules import each other as top-level packages (dataset, utils, nms) from its lib/ folder.
    sys.path.insert(0, str(hrnet_root / "lib"))
    # Only its evaluation needs the compiled NMS and json_tricks; stand-ins let the dataset module import.
    nms = types.ModuleType("nms.nms")
    nms.oks_nms = nms.soft_oks_nms = None
    sys.modules.setdefault("nms", types.ModuleType("nms"))
    sys.modules.setdefault("nms.nms", nms)
    sys.modules.setdefault("json_tricks", types.ModuleType("json_tricks"))
    if not hasattr(np, "float"):
        np.float = float  # its _get_db uses the alias that NumPy 1.24 removed
    from dataset.coco import COCODataset

    class SubsetCOCO(COCODataset):
        def _get_ann_file_keypoint(self) -> str:
            return str(annotation_file)

    ns = types.SimpleNamespace
    cfg = ns(
        OUTPUT_DIR="", DATASET=ns(DATA_FORMAT="jpg", SCALE_FACTOR=0.35, ROT_FACTOR=45, FLIP=True,
                                  NUM_JOINTS_HALF_BODY=8, PROB_HALF_BODY=0.3, COLOR_RGB=True, SELECT_DATA=False),
        MODEL=ns(TARGET_TYPE="gaussian", IMAGE_SIZE=list(INPUT), HEATMAP_SIZE=list(HEATMAP), SIGMA=2),
        LOSS=ns(USE_DIFFERENT_JOINTS_WEIGHT=False),
        TEST=ns(NMS_THRE=1.0, IMAGE_THRE=0.0, SOFT_NMS=False, OKS_THRE=0.9, IN_VIS_THRE=0.2, COCO_BBOX_FILE="",
                USE_GT_BBOX=True),
    )  # fmt: skip
    normalize = transforms.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    return SubsetCOCO(cfg, str(coco_root), "val2017", True, transforms.Compose([transforms.ToTensor(), normalize]))


# The rounds -------------------------------------------------------------------------------------------------------


def round_timings(
    records: list[SampleRecord], datasets: dict[str, DistillDataset], targets: CacheTargets, hrnet: object,
    epoch: int, passes: int, reverse: bool, pixels: dict[str, list[float]],
) -> dict[tuple[str, str], float]:  # fmt: skip
    """One round: every (arm, step) timed over the 12 samples of ``epoch``'s draws; ms per sample."""
    dataset = datasets["cache"]
    augment, codec = dataset.augment, dataset.codec
    for each in datasets.values():
        each.set_epoch(epoch)
    arrays = [load_image_array(r.path, "RGB") for r in records]
    pictures = [load_image(r.path).image for r in records]
    params = [sample_crop(r, augment, np.random.default_rng([SEED, epoch, i]), a.shape[1], COCO, INPUT)
              for i, (r, a) in enumerate(zip(records, arrays, strict=True))]  # fmt: skip
    widths = [a.shape[1] for a in arrays]
    m_in = [crop_params_matrix(p, INPUT, w) for p, w in zip(params, widths, strict=True)]
    crops = [warp_array(a, m, INPUT) for a, m in zip(arrays, m_in, strict=True)]
    cached = [targets(r) for r in records]
    m_teacher = [cached_to_augmented(c, crop_params_matrix(p, HEATMAP, w), HEATMAP)
                 for c, p, w in zip(cached, params, widths, strict=True)]  # fmt: skip
    items = [dataset[i] for i in range(len(records))]

    def draw(i: int) -> None:
        rng = np.random.default_rng([SEED, epoch, i])
        crop_params_matrix(sample_crop(records[i], augment, rng, widths[i], COCO, INPUT), INPUT, widths[i])

    def joints_now(i: int) -> None:
        transform_joints(records[i].joints, records[i].visibility, params[i], INPUT, widths[i], COCO)

    def joints_before(i: int) -> None:
        joints, vis = transform_joints(records[i].joints, records[i].visibility, params[i], INPUT, widths[i], COCO)
        previous_encode(codec, joints, vis)

    def before_sample(i: int) -> dict[str, object]:
        """The previous worker's whole sample, in its order."""
        record, picture = records[i], load_image(records[i].path).image
        rng = np.random.default_rng([SEED, epoch, i])
        crop_params = sample_crop(record, augment, rng, picture.width, COCO, INPUT)
        crop = warp_image(picture, crop_params_matrix(crop_params, INPUT, picture.width), INPUT)
        joints, vis = transform_joints(record.joints, record.visibility, crop_params, INPUT, picture.width, COCO)
        target, weight = previous_encode(codec, joints, vis)
        entry = targets(record)
        matrix = cached_to_augmented(entry, crop_params_matrix(crop_params, HEATMAP, picture.width), HEATMAP)
        teacher, seen = previous_teacher(entry.heatmaps, matrix, crop_params.flip)
        return {"image": previous_to_tensor(crop), "target": torch.from_numpy(target),
                "target_weight": torch.from_numpy(weight), "labelled": True, "teacher": teacher, "teacher_seen": seen,
                "index": i}  # fmt: skip

    before_items = [before_sample(i) for i in range(len(records))]
    _record_pixels(pixels, pictures, arrays, m_in, crops, items, before_items, codec)

    def step_share(_: int) -> None:
        step_inputs(default_collate(items), codec, torch.device("cpu"), cached_teacher=True)

    per_sample: dict[tuple[str, str], Callable[[int], object]] = {
        ("floor", "Pillow decode"): lambda i: Image.open(records[i].path).load(),
        ("floor", "OpenCV decode"): lambda i: cv2.imdecode(np.frombuffer(records[i].path.read_bytes(), np.uint8),
                                                           cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION),
        ("floor", "cv2.imread"): lambda i: cv2.imread(str(records[i].path),
                                                      cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION),
        ("now", "decode"): lambda i: load_image_array(records[i].path, "RGB"),
        ("now", "crop draw"): draw,
        ("now", "image warp"): lambda i: warp_array(arrays[i], m_in[i], INPUT),
        ("now", "joints + targets"): joints_now,
        ("now", "cache read"): lambda i: targets(records[i]),
        ("now", "heatmap warp"): lambda i: cached_to_augmented(cached[i], crop_params_matrix(params[i], HEATMAP,
                                                                                             widths[i]), HEATMAP),
        ("now", "tensor conversion"): lambda i: (torch.from_numpy(crops[i]), torch.from_numpy(m_teacher[i])),
        ("now", "__getitem__"): lambda i: dataset[i],
        ("now", "__getitem__, cache in memory"): lambda i: datasets["memory"][i],
        ("now", "__getitem__, no teacher"): lambda i: datasets["none"][i],
        ("before", "decode"): lambda i: load_image(records[i].path),
        ("before", "crop draw"): draw,
        ("before", "image warp"): lambda i: warp_image(pictures[i], m_in[i], INPUT),
        ("before", "joints + targets"): joints_before,
        ("before", "cache read"): lambda i: targets(records[i]),
        ("before", "heatmap warp"): lambda i: previous_teacher(cached[i].heatmaps, m_teacher[i], params[i].flip),
        ("before", "tensor conversion"): lambda i: previous_to_tensor(Image.fromarray(crops[i])),
        ("before", "__getitem__"): before_sample,
    }
    # Once per batch, reported per sample: what the training step and the DataLoader's collate now do.
    per_batch: dict[tuple[str, str], Callable[[int], object]] = {
        ("now", "training step share"): step_share,
        ("now", "collate"): lambda _: default_collate(items),
        ("before", "collate"): lambda _: default_collate(before_items),
    }
    if hrnet is not None:
        per_sample[("hrnet", "__getitem__")] = lambda i: hrnet[i]
        np.random.seed(epoch)
        random.seed(epoch)
    # The whole samples and the decode floors are compared: they take turns sample by sample, so that a change of
    # the machine's load hits them alike; the breakdown's steps are timed one after the other over all samples.
    headline = [key for key in per_sample if key[0] in ("floor", "hrnet") or key[1].startswith("__getitem__")]
    result = dict.fromkeys(headline, 0.0)
    for _ in range(passes):
        for i in range(len(records)):
            turn = headline[::-1] if (i + reverse) % 2 else headline
            for key in turn:
                start = time.perf_counter()
                per_sample[key](i)
                result[key] += time.perf_counter() - start
    result = {key: value * 1e3 / (passes * len(records)) for key, value in result.items()}
    steps = [(key, fn) for key, fn in per_sample.items() if key not in result] + [(key, None) for key in per_batch]
    for key, fn in reversed(steps) if reverse else steps:
        start = time.perf_counter()
        for _ in range(passes):
            if fn is None:
                per_batch[key](0)
            else:
                for i in range(len(records)):
                    fn(i)
        result[key] = (time.perf_counter() - start) * 1e3 / (passes * len(records))
    return result


def _record_pixels(
    pixels: dict[str, list[float]], pictures: list, arrays: list, m_in: list, crops: list, items: list,
    before_items: list, codec: HeatmapCodec,
) -> None:  # fmt: skip
    """What the faster path changes: crop pixels (OpenCV vs Pillow warp), targets, teacher maps and their joints."""
    for picture, array, matrix, crop in zip(pictures, arrays, m_in, crops, strict=True):
        diff = np.abs(np.asarray(warp_image(picture, matrix, INPUT)).astype(np.int16) - crop).max(axis=2)
        h, w = array.shape[:2]
        grid = np.stack(np.meshgrid(np.arange(INPUT[0]), np.arange(INPUT[1])), axis=-1).reshape(-1, 2)
        source = apply_affine(grid.astype(np.float64), invert_affine(matrix)).reshape(INPUT[1], INPUT[0], 2)
        interior = np.all((source >= 0.5) & (source <= np.array([w, h]) - 1.5), axis=2)
        outside = np.any((source < -1.0) | (source > np.array([w, h])), axis=2)
        pixels["crop_diff"].extend(diff.ravel().tolist())
        pixels["crop_diff_interior"].extend(diff[interior].ravel().tolist())
        pixels["crop_diff_border"].extend(diff[~interior & ~outside].ravel().tolist())
    now = step_inputs(default_collate(items), codec, torch.device("cpu"), cached_teacher=True)
    before = default_collate(before_items)
    pixels["target_diff"].append(float((now.target - before["target"]).abs().max()))
    pixels["target_weight_diff"].append(float((now.target_weight - before["target_weight"]).abs().max()))
    pixels["teacher_diff"].append(float((now.teacher - before["teacher"]).abs().max()))
    pixels["seen_diff"].append(float((now.teacher_seen - before["teacher_seen"]).abs().max()))
    pixels["input_diff"].append(float((now.images - before["image"]).abs().max()))
    for now_maps, old_maps, name in ((now.target, before["target"], "gt"), (now.teacher, before["teacher"], "tea")):
        (now_xy, _), (old_xy, _) = codec.decode(now_maps), codec.decode(old_maps)
        pixels[f"{name}_joint_diff"].append(float((now_xy - old_xy).norm(dim=-1).max()))


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    coco_root = args.data / "coco"
    annotations = coco_root / "annotations" / "person_keypoints_val2017_subset4.json"
    records = load_coco(coco_root, "val2017", annotation_file=annotations, input_aspect=INPUT[0] / INPUT[1])
    hrnet = hrnet_dataset(args.hrnet_root, coco_root, annotations) if args.hrnet_root else None
    if hrnet is not None and len(hrnet) != len(records):
        raise SystemExit(f"HRNet's dataset has {len(hrnet)} persons, ours {len(records)}")
    load = [os.getloadavg()[0]]
    pixels: dict[str, list[float]] = {name: [] for name in (
        "crop_diff", "crop_diff_interior", "crop_diff_border", "target_diff", "target_weight_diff", "teacher_diff",
        "seen_diff", "input_diff", "gt_joint_diff", "tea_joint_diff")}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        targets = build_cache(records, Path(tmp) / "cache")
        in_memory = {r.key: targets(r) for r in records}  # the same maps without the storage read
        datasets = {name: DistillDataset(records, joint_set=COCO, input_size=INPUT, heatmap_size=HEATMAP,
                                         color_order="RGB", codec=HeatmapCodec(INPUT, HEATMAP), teacher=teacher,
                                         augment=AugmentConfig.for_dataset("coco"), seed=SEED)
                    for name, teacher in (("cache", targets), ("memory", lambda r: in_memory[r.key]),
                                          ("none", None))}  # fmt: skip
        round_timings(records, datasets, targets, hrnet, 0, 1, False, {k: [] for k in pixels})  # warm-up
        rounds = []
        for r in range(args.rounds):
            rounds.append(round_timings(records, datasets, targets, hrnet, r, args.passes, r % 2 == 1, pixels))
            load.append(os.getloadavg()[0])
    medians = {f"{arm}/{step}": statistics.median(t[(arm, step)] for t in rounds) for arm, step in rounds[0]}
    paired = {f"{arm}_over_floor": statistics.median(t[(arm, name)] / t[("floor", "OpenCV decode")] for t in rounds)
              for arm, name in (("now", "__getitem__"), ("before", "__getitem__"))}  # fmt: skip
    if hrnet is not None:
        paired["now_over_hrnet"] = statistics.median(t[("now", "__getitem__")] / t[("hrnet", "__getitem__")]
                                                     for t in rounds)  # fmt: skip
    return {"setting": {"images": 4, "persons": len(records), "input_size": INPUT, "heatmap_size": HEATMAP,
                        "rounds": args.rounds, "passes": args.passes, "threads": 1, "cpu_count": os.cpu_count(),
                        "torch": torch.__version__, "opencv": cv2.__version__, "pillow": Image.__version__,
                        "hrnet_root": str(args.hrnet_root) if args.hrnet_root else None},
            "median_ms_per_sample": medians, "summary": summarize(medians), "median_of_round_ratios": paired,
            "pixels": summarize_pixels(pixels),
            "load_1min": load}  # fmt: skip


def summarize(medians: dict[str, float]) -> dict[str, float | bool | None]:
    """The goal's figures: our sample against HRNet's and against 1.5x the decode floor of the same library."""
    now, floor = medians["now/__getitem__"], medians["floor/OpenCV decode"]
    hrnet = medians.get("hrnet/__getitem__")
    return {"now_ms": now, "before_ms": medians["before/__getitem__"], "hrnet_ms": hrnet, "decode_floor_ms": floor,
            "now_over_floor": now / floor, "before_over_pillow_floor": medians["before/__getitem__"]
            / medians["floor/Pillow decode"], "now_over_hrnet": now / hrnet if hrnet else None,
            "memory_cache_over_floor": medians["now/__getitem__, cache in memory"] / floor,
            "no_teacher_over_floor": medians["now/__getitem__, no teacher"] / floor,
            "goal_floor_met": now <= 1.5 * floor, "goal_hrnet_met": now <= hrnet if hrnet else None}  # fmt: skip


def summarize_pixels(pixels: dict[str, list[float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("crop_diff", "crop_diff_interior", "crop_diff_border"):
        values = np.asarray(pixels[name])
        out.update({f"{name}_max": float(values.max()), f"{name}_mean": float(values.mean()),
                    f"{name}_share_nonzero": float((values > 0).mean()),
                    f"{name}_pixels": int(values.size)})  # fmt: skip
    out.update({f"{name}_max": max(pixels[name]) for name in (
        "target_diff", "target_weight_diff", "teacher_diff", "seen_diff", "input_diff", "gt_joint_diff",
        "tea_joint_diff")})  # fmt: skip
    return out


def format_table(result: dict) -> str:
    med, s, px = result["median_ms_per_sample"], result["summary"], result["pixels"]
    lines = [f"{'ms per sample (median of ' + str(result['setting']['rounds']) + ' rounds)':44}{'before':>9}{'now':>9}"]
    for step in (*STEPS, "__getitem__", "collate"):
        lines.append(f"{step:44}{med[f'before/{step}']:9.3f}{med[f'now/{step}']:9.3f}")
    for name in ("__getitem__, cache in memory", "__getitem__, no teacher"):
        lines.append(f"{name:44}{'-':>9}{med[f'now/{name}']:9.3f}")
    lines.append(f"{'training step (normalise, encode, warp), CPU':44}{'-':>9}{med['now/training step share']:9.3f}")
    if s["hrnet_ms"] is not None:
        lines.append(f"{'HRNet COCODataset.__getitem__':44}{s['hrnet_ms']:18.3f}")
    for name in ("Pillow decode", "OpenCV decode", "cv2.imread"):
        lines.append(f"{'floor: ' + name:44}{med[f'floor/{name}']:18.3f}")
    lines.append(f"now / OpenCV decode floor: {s['now_over_floor']:.2f}x (goal <= 1.5x: {s['goal_floor_met']}; "
                 f"cache in memory {s['memory_cache_over_floor']:.2f}x, no teacher {s['no_teacher_over_floor']:.2f}x); "
                 f"before / Pillow floor: {s['before_over_pillow_floor']:.2f}x")  # fmt: skip
    if s["hrnet_ms"] is not None:
        lines.append(f"now / HRNet: {s['now_over_hrnet']:.2f}x (goal <= 1: {s['goal_hrnet_met']})")
    lines.append("median of the rounds' ratios: " + ", ".join(f"{k} {v:.2f}x"
                                                             for k, v in result["median_of_round_ratios"].items()))
    lines.append(f"crop, OpenCV vs Pillow warp (grey levels): max {px['crop_diff_max']:.0f} mean "
                 f"{px['crop_diff_mean']:.3f}; interior max {px['crop_diff_interior_max']:.0f} mean "
                 f"{px['crop_diff_interior_mean']:.3f} ({px['crop_diff_interior_share_nonzero']:.1%} of pixels "
                 f"differ); border band max {px['crop_diff_border_max']:.0f} mean {px['crop_diff_border_mean']:.2f}")
    lines.append(f"targets max |diff| {px['target_diff_max']:.2g}, teacher maps {px['teacher_diff_max']:.2g}, seen "
                 f"{px['seen_diff_max']:.2g}; decoded joints: GT {px['gt_joint_diff_max']:.2g} px, teacher "
                 f"{px['tea_joint_diff_max']:.2g} px")  # fmt: skip
    load = result["load_1min"]
    lines.append(f"load (1-min average): min {min(load):.2f} max {max(load):.2f} on "
                 f"{result['setting']['cpu_count']} cores")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the real sample data folder")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--passes", type=int, default=2, help="passes over the 12 samples per timing")
    parser.add_argument("--hrnet-root", type=Path, help="a checkout of HRNet's repository, to time its sample")
    parser.add_argument("--json-out", type=Path, help="also write the result as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print its table and return the result (also written to ``--json-out``)."""
    args = parse_args(argv)
    result = run(args)
    publish(result, format_table(result), args.json_out)
    return result


if __name__ == "__main__":
    main()
