"""Teacher cache compression: bytes, write and random-read speed, and what each option does to the heatmaps and
to the joints decoded from them.

Realistic teacher heatmaps without a trained teacher: for every real person of the sample data (12 COCO
val2017 persons at 256x192 -> 64x48 heatmaps, 5 MPII persons at 256x256 -> 64x64), Gaussians of the codec's
sigma (2) are drawn at the ground-truth joints in the crop (at their sub-pixel positions, not cut off at 3 sigma),
each scaled to a teacher-like peak in [0.4, 0.95]; joints without a position get a weak (0.15) blob at a random
spot, as a teacher always answers something; then Gaussian noise (std ``--noise``: 0, 0.002 and 0.01 by default)
is added, the low-level clutter of real network output. Persons are repeated with random shifts of up to 8 px to
reach ``--samples`` per dataset.

Per dataset, noise level and option of ``storage.cache.COMPRESSIONS``:

* bytes per sample of the shard files (every dataset of them) and their share of the raw float16 heatmaps;
* write samples/s: ``shard_batch`` (which makes the float32 maps float16, as in teacher inference) into the real
  ``CacheWriter`` (8-bit encoding, filters and fsync in its background thread);
* read samples/s: random items of ``TeacherTargetDataset`` on one thread (files in the page cache: this measures
  decoding + h5py overhead, not the disk), per wall-clock second and per CPU second of the process (the
  latter is what one core delivers, whatever other jobs take of a shared machine);
* heatmap error: max and mean |stored - float32 maps| over every sample;
* decoded joints: every stored sample decoded with ``HeatmapCodec.decode`` (``hrnet``: argmax + quarter-pixel
  step; ``dark``), against the same decoding of the ``none`` (plain float16) stored maps: how many joints
  move, by how much at most and on average (heatmap px). Two reference lines: ``none`` against the float32 maps
  (what float16 itself moves), and the 8-bit codes alone, without format 2's float16 window around each peak
  (``storage.cache.shards.encode_u8`` / ``decode_u8`` of the float16 maps, not written to a file).

Speeds are medians over ``--repeats`` rounds in which the options take turns (the order rotates every round), so
that a load change from other jobs hits them alike; torch runs on one thread.

    .venv/bin/python -m benchmarks.bench_cache_compression --json-out results.json    # 1024 samples, ~30 min
    .venv/bin/python -m benchmarks.bench_cache_compression --smoke                    # 16 samples, seconds
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks.output import publish
from models.joints import COCO, MPII
from pipeline.codec import DECODE_METHODS, HeatmapCodec
from pipeline.data.coco import load_coco
from pipeline.data.mpii import load_mpii
from pipeline.geometry import apply_affine, crop_matrix
from pipeline.records import SampleRecord
from pipeline.teacher.plan import plan_inference
from pipeline.teacher.records import shard_batch
from storage.cache import COMPRESSIONS, CacheProvenance, TeacherTargetCache, TeacherTargetDataset
from storage.cache.shards import decode_u8, encode_u8

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"
LOSSLESS = ("none", "lzf", "gzip1", "gzip4")
"""Options that store exactly the float16 values ``none`` stores."""


def teacher_like_heatmaps(
    records: list[SampleRecord], input_size: tuple[int, int], heatmap_size: tuple[int, int], n: int, noise: float,
    rng: np.random.Generator,
) -> tuple[list[SampleRecord], np.ndarray]:  # fmt: skip
    """``n`` (record, heatmaps) pairs cycling over ``records``; heatmaps (n, K, H, W) float32.

    The blobs are centred where the joints are, between pixels, as a network's output is: HRNet's training targets
    (``HeatmapCodec.encode``) sit on whole pixels with exactly equal neighbours, which would leave the quarter-pixel
    step of the decoding to the noise alone and exaggerate how often any rounding moves a joint.
    """
    sigma = HeatmapCodec(input_size, heatmap_size).sigma
    stride = np.array(input_size, dtype=np.float64) / np.array(heatmap_size)
    chosen = [records[i % len(records)] for i in range(n)]
    k = chosen[0].joints.shape[0]
    joints = np.empty((n, k, 2))
    for i, record in enumerate(chosen):
        matrix = crop_matrix(record.center, record.scale, 0.0, input_size)
        joints[i] = apply_affine(record.joints, matrix) + rng.uniform(-8, 8, size=2)
        absent = record.visibility <= 0
        joints[i, absent] = rng.uniform(0, input_size[0], size=(int(absent.sum()), 2))
    centre = joints / stride  # heatmap px, pixel centres on integers (the codec's convention)
    gx = np.exp(-((np.arange(heatmap_size[0]) - centre[..., 0, None]) ** 2) / (2 * sigma**2))  # (n, K, W)
    gy = np.exp(-((np.arange(heatmap_size[1]) - centre[..., 1, None]) ** 2) / (2 * sigma**2))  # (n, K, H)
    visible = np.stack([r.visibility > 0 for r in chosen])
    peaks = np.where(visible, rng.uniform(0.4, 0.95, size=(n, k)), 0.15)
    heatmaps = gy[..., :, None] * gx[..., None, :] * peaks[..., None, None]
    heatmaps += rng.normal(0.0, noise, size=heatmaps.shape)
    # Distinct instance ids: the repeated persons are separate samples.
    chosen = [SampleRecord(**{**r.__dict__, "instance_id": f"{r.instance_id}/{i}"}) for i, r in enumerate(chosen)]
    return chosen, heatmaps.astype(np.float32)


def write_cache(
    path: Path, name: str, provenance: CacheProvenance, records: list[SampleRecord], heatmaps: np.ndarray
) -> tuple[tuple[float, float], float]:
    """Write every sample with option ``name`` into a new cache at ``path``: ((wall, CPU) seconds, shard bytes per
    sample)."""
    cache = TeacherTargetCache(path).open_or_create(provenance)
    n, k = heatmaps.shape[:2]
    zeros = np.zeros((n, k, 2), dtype=np.float32)
    plan = plan_inference(records, cache)  # fingerprints the images once, as inference does before writing
    todo = list(plan.records)
    start, cpu = time.perf_counter(), time.process_time()
    with cache.writer(shard_size=512, compression=name) as writer:
        for s in range(0, n, 64):
            part = slice(s, s + 64)
            writer.add(shard_batch(todo[part], plan.states, heatmaps[part], zeros[part], zeros[part],
                                   heatmaps[part].max(axis=(2, 3))))  # fmt: skip
    seconds = (time.perf_counter() - start, time.process_time() - cpu)
    return seconds, sum(e.size for e in cache.manifest().shards) / n


def time_reads(data: TeacherTargetDataset, order: np.ndarray) -> tuple[float, float]:
    """(wall, CPU) seconds for ``data[i]`` over ``order`` (the files are open already)."""
    start, cpu = time.perf_counter(), time.process_time()
    for i in order:
        data[int(i)]
    return time.perf_counter() - start, time.process_time() - cpu


def joint_change(coords: torch.Tensor, reference: torch.Tensor) -> dict[str, float | int]:
    """How far (N, K, 2) decoded joints lie from ``reference``: joints moved (any difference), max and mean shift."""
    shift = (coords - reference).norm(dim=-1)
    moved = int((shift > 0).sum())
    return {"moved": moved, "joints": shift.numel(), "moved_fraction": moved / shift.numel(),
            "max_shift_px": float(shift.max()), "mean_shift_px": float(shift.mean())}  # fmt: skip


def _rates(count: int, seconds: list[tuple[float, float]]) -> dict[str, object]:
    """Samples per wall-clock and per CPU second: medians (``s``, ``cpu_s``) and every round's (``..._runs``)."""
    wall, cpu = [count / s for s, _ in seconds], [count / max(c, 1e-9) for _, c in seconds]
    return {"s": statistics.median(wall), "cpu_s": statistics.median(cpu), "s_runs": wall, "cpu_s_runs": cpu}


def rotated(names: Sequence[str], r: int) -> list[str]:
    return [*names[r % len(names) :], *names[: r % len(names)]]


def run_setup(
    provenance: CacheProvenance, records: list[SampleRecord], heatmaps: np.ndarray, args: argparse.Namespace,
    work: Path,
) -> tuple[list[dict], dict]:  # fmt: skip
    """The rows of one dataset and noise level (one per option) and the reference lines (module docstring)."""
    names, n = list(args.compressions), len(records)
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    sizes: dict[str, float] = {}
    for r in range(args.repeats):
        for name in rotated(names, r):
            path = work / f"{name}-{r}"
            took, sizes[name] = write_cache(path, name, provenance, records, heatmaps)
            seconds[name].append(took)
            if r:  # the first round's caches serve the reads; later ones only time the writes
                shutil.rmtree(path)
    datasets = {name: TeacherTargetDataset(work / f"{name}-0", check_checksums=False) for name in names}
    order = np.random.default_rng(0).integers(0, n, size=args.reads)
    read_s: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for data in datasets.values():
        data[int(order[0])]  # open the files outside the timing
    for r in range(args.repeats):
        for name in rotated(names, r):
            read_s[name].append(time_reads(datasets[name], order))

    codec = HeatmapCodec(provenance.input_size, provenance.heatmap_size)
    truth = torch.from_numpy(heatmaps)
    decoded: dict[str, dict[str, torch.Tensor]] = {}
    stored_none: torch.Tensor | None = None
    rows = []
    for name in ["none", *[m for m in names if m != "none"]]:
        stored = torch.stack([datasets[name][i]["heatmaps"] for i in range(n)])
        datasets[name].close()
        if name == "none":
            stored_none = stored
        error = (stored - truth).abs()
        if name != "none" and name in LOSSLESS and torch.equal(stored, stored_none):
            decoded[name] = decoded["none"]  # the same maps decode to the same joints
        else:
            decoded[name] = {method: codec.decode(stored, method)[0] for method in DECODE_METHODS}
        write, read = _rates(n, seconds[name]), _rates(args.reads, read_s[name])
        rows.append({
            "option": name, "bytes_per_sample": sizes[name], "raw_float16_bytes_per_sample": heatmaps[0].size * 2,
            "share_of_raw": sizes[name] / (heatmaps[0].size * 2),
            **{f"write_samples_per_{k}": v for k, v in write.items()},
            **{f"read_samples_per_{k}": v for k, v in read.items()},
            "heatmap_max_abs_error": float(error.max()), "heatmap_mean_abs_error": float(error.mean()),
            "decoded_vs_none": {m: joint_change(decoded[name][m], decoded["none"][m]) for m in DECODE_METHODS},
        })  # fmt: skip
    exact = {method: codec.decode(truth, method)[0] for method in DECODE_METHODS}
    codes_only = torch.from_numpy(decode_u8(*encode_u8(stored_none.numpy())))
    references = {
        "float16_vs_float32": {m: joint_change(decoded["none"][m], exact[m]) for m in DECODE_METHODS},
        "u8_without_peak_window": {
            "heatmap_max_abs_error": float((codes_only - truth).abs().max()),
            "heatmap_mean_abs_error": float((codes_only - truth).abs().mean()),
            "decoded_vs_none": {m: joint_change(codec.decode(codes_only, m)[0], decoded["none"][m])
                                for m in DECODE_METHODS},
        },
    }  # fmt: skip
    order_of = {name: i for i, name in enumerate(names)}
    return sorted(rows, key=lambda row: order_of[row["option"]]), references


def run(args: argparse.Namespace) -> dict:
    """Every dataset and noise level; the result as ``main`` returns and writes it."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    coco = load_coco(REAL / "coco", "val2017",
                     annotation_file=REAL / "coco" / "annotations" / "person_keypoints_val2017_subset4.json")
    mpii = load_mpii(REAL / "mpii", "valid_first5")
    setups = [
        ("COCO", "COCO 256x192 -> 64x48, 17 joints", coco, (192, 256), (48, 64), COCO),
        ("MPII", "MPII 256x256 -> 64x64, 16 joints", mpii, (256, 256), (64, 64), MPII),
    ]  # fmt: skip
    load, results = [os.getloadavg()], []
    for (short, title, records, input_size, heatmap_size, joints), noise in itertools.product(setups, args.noise):
        chosen, heatmaps = teacher_like_heatmaps(records, input_size, heatmap_size, args.samples, noise, rng)
        provenance = CacheProvenance("bench", "0" * 64, input_size, heatmap_size, joints.name, joints.names,
                                     joints.flip_pairs)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            rows, references = run_setup(provenance, chosen, heatmaps, args, Path(tmp))
        load.append(os.getloadavg())
        results.append({"dataset": short, "title": title, "noise": noise, "rows": rows, **references})
        print(format_setup(results[-1]), flush=True)
    setting = {"samples": args.samples, "reads": args.reads, "repeats": args.repeats, "noise": list(args.noise),
               "compressions": list(args.compressions), "torch_threads": 1, "torch": torch.__version__,
               "cpu_count": os.cpu_count(), "date": datetime.date.today().isoformat()}  # fmt: skip
    return {"setting": setting, "load": [list(sample) for sample in load], "setups": results}


def format_setup(setup: dict) -> str:
    """The printed table of one dataset and noise level."""
    lines = [f"\n{setup['title']}, noise std {setup['noise']}",
             f"{'option':9}{'bytes':>8}{'of raw':>8}{'write/s':>9}{'read/s':>8}{'/cpu-s':>8}{'max err':>9}"
             f"{'mean err':>10}"
             f"{'hrnet moved':>13}{'max px':>7}{'dark moved':>12}{'max px':>7}{'mean px':>9}"]  # fmt: skip
    for row in setup["rows"]:
        hrnet, dark = row["decoded_vs_none"]["hrnet"], row["decoded_vs_none"]["dark"]
        lines.append(f"{row['option']:9}{row['bytes_per_sample']:8.0f}{row['share_of_raw']:8.1%}"
                     f"{row['write_samples_per_s']:9.0f}{row['read_samples_per_s']:8.0f}"
                     f"{row['read_samples_per_cpu_s']:8.0f}"
                     f"{row['heatmap_max_abs_error']:9.5f}{row['heatmap_mean_abs_error']:10.6f}"
                     f"{hrnet['moved']:>7}/{hrnet['joints']:<5}{hrnet['max_shift_px']:7.3f}"
                     f"{dark['moved']:>6}/{dark['joints']:<5}{dark['max_shift_px']:7.3f}{dark['mean_shift_px']:9.5f}")
    lines.append(f"none vs the float32 maps: {_moves(setup['float16_vs_float32'])}")
    codes = setup["u8_without_peak_window"]
    lines.append(f"8-bit codes without the peak window: max err {codes['heatmap_max_abs_error']:.5f}, "
                 f"{_moves(codes['decoded_vs_none'])}")  # fmt: skip
    return "\n".join(lines)


def _moves(change: dict) -> str:
    hrnet, dark = change["hrnet"], change["dark"]
    return (f"hrnet {hrnet['moved']}/{hrnet['joints']} joints moved (max {hrnet['max_shift_px']:.3f} px), "
            f"dark {dark['moved']} (max {dark['max_shift_px']:.4f}, mean {dark['mean_shift_px']:.6f} px)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024, help="samples per dataset (default 1024)")
    parser.add_argument("--reads", type=int, default=2000, help="random reads per option and round (default 2000)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of writes and of reads (default 3)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.002, 0.01], help="heatmap noise std(s)")
    parser.add_argument("--compressions", nargs="+", choices=list(COMPRESSIONS), default=list(COMPRESSIONS))
    parser.add_argument("--smoke", action="store_true", help="16 samples, 50 reads, 1 round, noise 0.002")
    parser.add_argument("--json-out", type=Path, help="also write the result as JSON")
    args = parser.parse_args(argv)
    if args.smoke:
        args.samples, args.reads, args.repeats, args.noise = 16, 50, 1, [0.002]
    if "none" not in args.compressions:
        args.compressions = ["none", *args.compressions]  # the reference of the decoded joints
    if min(args.samples, args.reads, args.repeats) < 1:
        parser.error("--samples, --reads and --repeats must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print its tables and return the result (also written to ``--json-out``)."""
    args = parse_args(argv)
    result = run(args)
    loads = [sample[0] for sample in result["load"]]
    print(f"\nload (1-min average, {len(loads)} samples): min {min(loads):.2f} mean {statistics.fmean(loads):.2f} "
          f"max {max(loads):.2f} on {result['setting']['cpu_count']} cores")  # fmt: skip
    publish(result, None, args.json_out)
    return result


if __name__ == "__main__":
    main()
