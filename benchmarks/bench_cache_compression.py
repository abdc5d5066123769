"""Teacher cache compression: bytes per sample, write time and random-read speed per HDF5 filter.

Realistic teacher heatmaps without a trained teacher: for every real person of the sample data (12 COCO
val2017 persons at 256x192 -> 64x48 heatmaps, 5 MPII persons at 256x256 -> 64x64), the codec draws HRNet
Gaussians (sigma 2) at the ground-truth joints in the crop, each scaled to a teacher-like peak in [0.4, 0.95];
joints without a position get a weak (0.15) blob at a random spot, as a teacher always answers something;
then Gaussian noise (std ``--noise``: 0, 0.002 and 0.01 by default) is added, the low-level clutter of real
network output. Persons are repeated with random shifts of up to 8 px to reach ``--samples`` per dataset.
Files are written by the real ``CacheWriter`` and read back through ``TeacherTargetDataset`` in random order
(files in the page cache: this measures decompression + h5py overhead, not the disk).

Run: ``.venv/bin/python benchmarks/bench_cache_compression.py [--samples 1024] [--reads 2000]``
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np

from models.joints import COCO, MPII
from pipeline.codec import HeatmapCodec
from pipeline.data.coco import load_coco
from pipeline.data.mpii import load_mpii
from pipeline.geometry import apply_affine, crop_matrix
from pipeline.records import SampleRecord
from pipeline.teacher.plan import plan_inference
from pipeline.teacher.records import shard_batch
from storage.cache import COMPRESSIONS, CacheProvenance, TeacherTargetCache

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


def teacher_like_heatmaps(
    records: list[SampleRecord], input_size: tuple[int, int], heatmap_size: tuple[int, int], n: int, noise: float,
    rng: np.random.Generator,
) -> tuple[list[SampleRecord], np.ndarray]:  # fmt: skip
    """``n`` (record, heatmaps) pairs cycling over ``records``; heatmaps (n, K, H, W) float32."""
    codec = HeatmapCodec(input_size, heatmap_size)
    chosen = [records[i % len(records)] for i in range(n)]
    k = chosen[0].joints.shape[0]
    joints = np.empty((n, k, 2))
    for i, record in enumerate(chosen):
        matrix = crop_matrix(record.center, record.scale, 0.0, input_size)
        joints[i] = apply_affine(record.joints, matrix) + rng.uniform(-8, 8, size=2)
        absent = record.visibility <= 0
        joints[i, absent] = rng.uniform(0, input_size[0], size=(int(absent.sum()), 2))
    targets, _ = codec.encode(joints, np.ones((n, k)))
    visible = np.stack([r.visibility > 0 for r in chosen])
    peaks = np.where(visible, rng.uniform(0.4, 0.95, size=(n, k)), 0.15)
    heatmaps = targets * peaks[..., None, None] + rng.normal(0.0, noise, size=targets.shape)
    return chosen, heatmaps.astype(np.float32)


def measure(
    name: str, provenance: CacheProvenance, records: list[SampleRecord], heatmaps: np.ndarray, reads: int, tmp: Path
) -> dict[str, float]:
    cache = TeacherTargetCache(tmp / name).open_or_create(provenance)
    n, k = heatmaps.shape[:2]
    zeros = np.zeros((n, k, 2), dtype=np.float32)
    # Distinct instance ids: the repeated persons are separate samples.
    records = [SampleRecord(**{**r.__dict__, "instance_id": f"{r.instance_id}/{i}"}) for i, r in enumerate(records)]
    plan = plan_inference(records, cache)  # fingerprints the images once, as inference does before writing
    records = list(plan.records)
    start = time.perf_counter()
    with cache.writer(shard_size=512, compression=name) as writer:
        for s in range(0, n, 64):
            writer.add(shard_batch(records[s : s + 64], plan.states, heatmaps[s : s + 64], zeros[s : s + 64],
                                   zeros[s : s + 64], heatmaps[s : s + 64].max(axis=(2, 3))))  # fmt: skip
    write_s = time.perf_counter() - start
    shard_bytes = sum(e.size for e in cache.manifest().shards)
    data = cache.dataset(check_checksums=False)
    order = np.random.default_rng(0).integers(0, n, size=reads)
    data[int(order[0])]  # open the files outside the timing
    start = time.perf_counter()
    for i in order:
        data[int(i)]
    read_s = time.perf_counter() - start
    error = max(float(np.abs(data[i]["heatmaps"].numpy() - heatmaps[i]).max()) for i in range(0, n, max(1, n // 50)))
    data.close()
    return {"bytes": shard_bytes / n, "raw": heatmaps[0].size * 2.0, "write": n / write_s, "read": reads / read_s,
            "error": error}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1024, help="samples per dataset (default 1024)")
    parser.add_argument("--reads", type=int, default=2000, help="random reads timed per option (default 2000)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.002, 0.01], help="heatmap noise std(s)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    annotations = REAL / "coco" / "annotations" / "person_keypoints_val2017_subset4.json"
    coco = load_coco(REAL / "coco", "val2017", annotation_file=annotations)
    mpii = load_mpii(REAL / "mpii", "valid_first5")
    setups = [
        ("COCO 256x192 -> 64x48, 17 joints", coco, (192, 256), (48, 64), COCO),
        ("MPII 256x256 -> 64x64, 16 joints", mpii, (256, 256), (64, 64), MPII),
    ]
    print(f"{args.samples} samples per dataset, {args.reads} random reads")
    for (title, records, input_size, heatmap_size, joints), noise in itertools.product(setups, args.noise):
        chosen, heatmaps = teacher_like_heatmaps(records, input_size, heatmap_size, args.samples, noise, rng)
        provenance = CacheProvenance("bench", "0" * 64, input_size, heatmap_size, joints.name, joints.names,
                                     joints.flip_pairs)  # fmt: skip
        print(f"\n{title}, noise std {noise}")
        print(f"{'filter':8} {'bytes/sample':>13} {'ratio':>7} {'write samples/s':>16} {'read samples/s':>15} "
              f"{'max abs err':>12}")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            for name in COMPRESSIONS:
                m = measure(name, provenance, chosen, heatmaps, args.reads, Path(tmp))
                print(f"{name:8} {m['bytes']:13.0f} {m['raw'] / m['bytes']:7.2f} {m['write']:16.0f} "
                      f"{m['read']:15.0f} {m['error']:12.5f}")  # fmt: skip


if __name__ == "__main__":
    main()
