"""The shard file of the teacher target cache: one immutable HDF5 file of at most ``shard_size`` samples.

Layout of a shard (N samples, K joints, heatmaps H x W):

* file attributes: ``format`` (``SHARD_FORMAT``), ``provenance`` (JSON of :class:`CacheProvenance`) and each
  provenance field as its own attribute (readable with ``h5dump``), ``slot`` ``(shard_index, num_shards)``,
  ``num_samples``, ``compression``, ``created``;
* ``heatmaps`` (N, K, H, W) float16, one chunk per sample, compressed;
* per sample: ``source``, ``root``, ``image``, ``instance_id``, ``fingerprint`` (UTF-8 strings), ``center``,
  ``scale`` (N, 2) float64, ``rotation`` (N,) float64, ``score`` (N,) float32, ``image_id`` (N,) int64,
  ``labelled`` (N,) bool, ``joints`` (N, K, 2) float32 (NaN when unlabeled), ``visibility`` (N, K) float32
  (0 when unlabeled), ``teacher_joints`` (N, K, 2) float32 heatmap px, ``teacher_joints_image`` (N, K, 2)
  float32 image px, ``maxvals`` (N, K) float32, ``file_size`` / ``file_mtime_ns`` (N,) int64 (the image's
  stat when it was fingerprinted, so that planning a later run hashes only files whose stat changed).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from storage.cache.provenance import CacheProvenance

SHARD_FORMAT = "fpd-teacher-shard-1"

QUANTUM = 2.0**-12
"""Absolute step of the ``-q`` options: half of it (1.2e-4) is below float16's own rounding at values in [0.5, 1)."""

COMPRESSIONS: dict[str, tuple[dict[str, object], float]] = {
    "none": ({}, 0.0),
    "lzf": ({"compression": "lzf"}, 0.0),
    "gzip1": ({"compression": "gzip", "compression_opts": 1}, 0.0),
    "gzip4": ({"compression": "gzip", "compression_opts": 4}, 0.0),
    "lzf-q": ({"compression": "lzf"}, QUANTUM),
    "gzip1-q": ({"compression": "gzip", "compression_opts": 1}, QUANTUM),
}
"""Name -> (h5py filter options, quantisation step). Lossless float16 noise does not compress; rounding values to
multiples of ``QUANTUM`` first zeroes the low mantissa bits of small values, which then do. See docs/cache.md for
the measurements behind ``DEFAULT_COMPRESSION``."""

DEFAULT_COMPRESSION = "lzf"

STRING_COLUMNS = ("source", "root", "image", "instance_id", "fingerprint")
NUMERIC_COLUMNS = (
    "center", "scale", "rotation", "score", "image_id", "labelled", "joints", "visibility",
    "teacher_joints", "teacher_joints_image", "maxvals", "file_size", "file_mtime_ns",
)  # fmt: skip


@dataclass(frozen=True)
class ShardBatch:
    """Everything one shard stores, as arrays of N samples (see the module docstring for the shapes)."""

    strings: dict[str, list[str]]
    numeric: dict[str, np.ndarray]
    heatmaps: np.ndarray

    @property
    def num_samples(self) -> int:
        return int(self.heatmaps.shape[0])


def expected_shapes(provenance: CacheProvenance, n: int) -> dict[str, tuple[int, ...]]:
    """Dataset name -> shape that a shard of ``n`` samples made with ``provenance`` must have."""
    k = len(provenance.joint_names)
    w, h = provenance.heatmap_size
    shapes: dict[str, tuple[int, ...]] = {name: (n,) for name in STRING_COLUMNS}
    shapes.update(
        center=(n, 2), scale=(n, 2), rotation=(n,), score=(n,), image_id=(n,), labelled=(n,),
        joints=(n, k, 2), visibility=(n, k), teacher_joints=(n, k, 2), teacher_joints_image=(n, k, 2),
        maxvals=(n, k), file_size=(n,), file_mtime_ns=(n,), heatmaps=(n, k, h, w),
    )  # fmt: skip
    return shapes


def write_shard(
    path: Path,
    provenance: CacheProvenance,
    batch: ShardBatch,
    *,
    slot: tuple[int, int],
    compression: str,
    created: str,
) -> None:
    """Write ``batch`` as a complete shard at ``path`` and fsync it (the caller renames it into place).

    The HDF5 file is built in memory and written with plain file writes: a full disk or an I/O error then
    fails in a plain file write, with the HDF5 file already closed, instead of inside the HDF5 library, which leaves
    a half-flushed file open after such an error and crashes the interpreter when it is freed later.

    Args:
        path: the temporary file name to write (created; an existing file is an error).
        provenance: the cache's provenance, stored as attributes.
        batch: the samples; ``heatmaps`` (N, K, H, W) are stored as float16.
        slot: (shard_index, num_shards) of the writer, for inspection.
        compression: a key of ``COMPRESSIONS``.
        created: ISO time stamp.

    Raises:
        OSError: writing or syncing ``path`` failed (the caller removes the partial file).
    """
    image = io.BytesIO()
    with h5py.File(image, "w", libver="latest") as f:
        _fill_shard(f, provenance, batch, slot, compression, created)
    with open(path, "xb") as out:
        out.write(image.getbuffer())
        out.flush()
        os.fsync(out.fileno())


def _fill_shard(
    f: h5py.File, provenance: CacheProvenance, batch: ShardBatch, slot: tuple[int, int], compression: str, created: str
) -> None:
    f.attrs["format"] = SHARD_FORMAT
    f.attrs["provenance"] = provenance.to_json()
    for name, value in provenance.to_dict().items():
        f.attrs[f"provenance.{name}"] = json.dumps(value) if isinstance(value, list) else value
    f.attrs["slot"] = np.asarray(slot, dtype=np.int64)
    f.attrs["num_samples"] = batch.num_samples
    f.attrs["compression"] = compression
    f.attrs["created"] = created
    for name in STRING_COLUMNS:
        f.create_dataset(name, data=np.asarray(batch.strings[name], dtype=object), dtype=h5py.string_dtype())
    for name in NUMERIC_COLUMNS:
        f.create_dataset(name, data=batch.numeric[name])
    filters, quantum = COMPRESSIONS[compression]
    heatmaps = np.round(batch.heatmaps / quantum) * quantum if quantum else batch.heatmaps
    # One chunk per sample: a random read decompresses exactly the sample it needs.
    f.create_dataset(
        "heatmaps",
        data=heatmaps.astype(np.float16, copy=False),
        chunks=(1, *batch.heatmaps.shape[1:]),
        shuffle=bool(filters),
        **filters,
    )


def read_columns(path: Path) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """Read every per-sample column except the heatmaps (cheap: a few hundred bytes per sample)."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != SHARD_FORMAT:
            raise OSError(f"{path.name}: not a teacher cache shard (format {f.attrs.get('format')!r})")
        strings = {name: list(f[name].asstr()[:]) for name in STRING_COLUMNS}
        numeric = {name: np.asarray(f[name][:]) for name in NUMERIC_COLUMNS}
    return strings, numeric


@dataclass(frozen=True)
class ShardHeader:
    """A shard's file attributes: the provenance it was written with, writer slot, sample count, time stamp."""

    provenance: CacheProvenance
    slot: tuple[int, int]
    num_samples: int
    created: str


def read_header(path: Path) -> ShardHeader:
    """The attributes of the shard at ``path`` (OSError, KeyError or ValueError when they cannot be parsed)."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != SHARD_FORMAT:
            raise OSError(f"{path.name}: not a teacher cache shard (format {f.attrs.get('format')!r})")
        slot = f.attrs["slot"]
        return ShardHeader(
            CacheProvenance.from_json(str(f.attrs["provenance"])), (int(slot[0]), int(slot[1])),
            int(f.attrs["num_samples"]), str(f.attrs["created"]),
        )  # fmt: skip


def check_structure(path: Path, provenance: CacheProvenance, num_samples: int | None = None) -> list[str]:
    """Problems with a shard's attributes and dataset shapes (empty when it is sound); reads no heatmaps."""
    problems: list[str] = []
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != SHARD_FORMAT:
                return [f"format attribute is {f.attrs.get('format')!r}, expected {SHARD_FORMAT!r}"]
            stored = CacheProvenance.from_json(str(f.attrs["provenance"]))
            problems += [f"provenance: {d}" for d in provenance.diff(stored)]
            n = int(f.attrs["num_samples"])
            if num_samples is not None and n != num_samples:
                problems.append(f"holds {n} samples, the manifest says {num_samples}")
            for name, shape in expected_shapes(provenance, n).items():
                if name not in f:
                    problems.append(f"dataset {name!r} is missing")
                elif f[name].shape != shape:
                    problems.append(f"dataset {name!r} has shape {f[name].shape}, expected {shape}")
    except (OSError, KeyError, ValueError) as exc:
        problems.append(f"cannot be read: {exc}")
    return problems


def concat_batches(parts: Sequence[ShardBatch]) -> ShardBatch:
    """Join batches sample-wise (the writer's buffer)."""
    return ShardBatch(
        strings={name: [s for p in parts for s in p.strings[name]] for name in STRING_COLUMNS},
        numeric={name: np.concatenate([p.numeric[name] for p in parts]) for name in NUMERIC_COLUMNS},
        heatmaps=np.concatenate([p.heatmaps for p in parts]),
    )


def slice_batch(batch: ShardBatch, start: int, stop: int) -> ShardBatch:
    return ShardBatch(
        strings={name: values[start:stop] for name, values in batch.strings.items()},
        numeric={name: values[start:stop] for name, values in batch.numeric.items()},
        heatmaps=batch.heatmaps[start:stop],
    )
