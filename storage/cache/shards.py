"""The shard file of the teacher target cache: one immutable HDF5 file of at most ``shard_size`` samples.

Layout of a shard (N samples, K joints, heatmaps H x W):

* file attributes: ``format``, ``provenance`` (JSON of :class:`CacheProvenance`) and each provenance field as its
  own attribute (readable with ``h5dump``), ``slot`` ``(shard_index, num_shards)``, ``num_samples``,
  ``compression`` (the ``COMPRESSIONS`` name it was written with, for inspection), ``created``;
* ``heatmaps`` (N, K, H, W), one chunk per sample, compressed, in one of two formats (``SHARD_FORMATS``):

  * ``"fpd-teacher-shard-1"``: float16;
  * ``"fpd-teacher-shard-2"``: uint8 codes ``q = round((h - lo) / step)`` with ``heatmaps_lo`` and
    ``heatmaps_step`` (N, K) float32, per sample and joint: ``lo`` is the map's minimum and ``step`` its range /
    255 (0 for a constant map), so that negative outputs and any peak height are kept; a value reads back as
    ``lo + q * step``, within ``step / 2`` of what was written. Each map's 3 x 3 pixels around its maximum are
    also kept in float16, ``heatmaps_peak`` (N, K, 3, 3), at ``heatmaps_peak_at`` (N, K, 2) int16 (x, y of the
    window's first pixel), and replace the codes there on reading: the maximum and the neighbours that the
    HRNet decoding compares read back as format 1 stores them, so its joints do not move unless a second maximum
    outside the window comes within half a step of the first (8-bit codes alone move a few percent of them by a
    quarter pixel or more, see docs/cache.md). Code that knows only format 1 refuses these shards instead of
    misreading their codes as heatmaps;

* per sample: ``source``, ``root``, ``image``, ``instance_id``, ``fingerprint`` (UTF-8 strings), ``center``,
  ``scale`` (N, 2) float64, ``rotation`` (N,) float64, ``score`` (N,) float32, ``image_id`` (N,) int64,
  ``labelled`` (N,) bool, ``joints`` (N, K, 2) float32 (NaN when unlabeled), ``visibility`` (N, K) float32
  (0 when unlabeled), ``teacher_joints`` (N, K, 2) float32 heatmap px, ``teacher_joints_image`` (N, K, 2)
  float32 image px, ``maxvals`` (N, K) float32, ``file_size`` / ``file_mtime_ns`` (N,) int64 (the image's
  stat when it was fingerprinted, so that planning a later run hashes only files whose stat changed).

The format is a property of each shard, not of the cache: one cache may hold shards of both (an old float16
cache extended with the 8-bit default), and every reader here accepts both.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from storage.cache.provenance import CacheProvenance

FLOAT16_FORMAT = "fpd-teacher-shard-1"
UINT8_FORMAT = "fpd-teacher-shard-2"
SHARD_FORMATS: dict[str, dict[str, np.dtype]] = {
    FLOAT16_FORMAT: {"heatmaps": np.dtype(np.float16)},
    UINT8_FORMAT: {"heatmaps": np.dtype(np.uint8), "heatmaps_lo": np.dtype(np.float32),
                   "heatmaps_step": np.dtype(np.float32), "heatmaps_peak": np.dtype(np.float16),
                   "heatmaps_peak_at": np.dtype(np.int16)},
}  # fmt: skip
"""Format attribute -> the heatmap datasets such a shard holds and their dtypes."""

PEAK_WINDOW = 3
"""Side of the window around each map's maximum that format 2 keeps in float16 (smaller maps: all of a side)."""

QUANTUM = 2.0**-12
"""Absolute step of the ``-q`` options: half of it (1.2e-4) is below float16's own rounding at values in [0.5, 1)."""


@dataclass(frozen=True)
class Compression:
    """How a shard stores its heatmaps.

    Attributes:
        filters: h5py filter options of the ``heatmaps`` dataset.
        quantum: float16 options only: round values to multiples of it first (0: no rounding).
        uint8: store 8-bit codes with a per (sample, joint) offset and step, plus the float16 pixels around each
            maximum (format 2), instead of float16 maps.
    """

    filters: Mapping[str, object] = field(default_factory=dict)
    quantum: float = 0.0
    uint8: bool = False

    @property
    def shard_format(self) -> str:
        return UINT8_FORMAT if self.uint8 else FLOAT16_FORMAT


_LZF = {"compression": "lzf"}
_GZIP1 = {"compression": "gzip", "compression_opts": 1}
COMPRESSIONS: dict[str, Compression] = {
    "none": Compression(),
    "lzf": Compression(_LZF),
    "gzip1": Compression(_GZIP1),
    "gzip4": Compression({"compression": "gzip", "compression_opts": 4}),
    "lzf-q": Compression(_LZF, quantum=QUANTUM),
    "gzip1-q": Compression(_GZIP1, quantum=QUANTUM),
    "u8": Compression(uint8=True),
    "lzf-u8": Compression(_LZF, uint8=True),
    "gzip1-u8": Compression(_GZIP1, uint8=True),
}
"""The shard compressions by name. Lossless float16 noise does not compress; rounding values to multiples of
``QUANTUM`` first zeroes the low mantissa bits of small values, which then do; 8-bit codes halve the bytes before
any filter. See docs/cache.md for the measurements behind ``DEFAULT_COMPRESSION``."""

DEFAULT_COMPRESSION = "gzip1-u8"

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


def encode_u8(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-bit codes of heatmaps with an affine scale per map (format 2).

    Args:
        heatmaps: (..., H, W) float maps (any leading shape, e.g. (N, K)).

    Returns:
        codes (..., H, W) uint8, lo (...) float32 (each map's minimum) and step (...) float32 (its range / 255,
        0 for a constant map); ``decode_u8`` of them is within ``step / 2`` of ``heatmaps``.
    """
    # One float32 copy, worked on in place: a shard's maps are hundreds of MB, and this runs in the writer thread.
    maps = np.array(heatmaps, dtype=np.float32)
    lo = maps.min(axis=(-2, -1))
    step = (maps.max(axis=(-2, -1)) - lo) / np.float32(255)
    # A constant map has step 0: dividing by 1 instead codes it as all zeros, which decodes to lo exactly.
    divisor = np.where(step > 0, step, np.float32(1))[..., None, None]
    maps -= lo[..., None, None]
    maps /= divisor
    np.rint(maps, out=maps)
    # The clip only catches float32 rounding of the top value (codes are in [0, 255] in exact arithmetic).
    np.clip(maps, 0, 255, out=maps)
    return maps.astype(np.uint8), lo, step


def decode_u8(codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``lo + codes * step`` as float32 (shapes as ``encode_u8`` returns them)."""
    maps = codes.astype(np.float32)
    maps *= step[..., None, None]
    maps += lo[..., None, None]
    return maps


def peak_windows(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float16 pixels around each map's maximum (format 2).

    Args:
        heatmaps: (..., H, W) float maps.

    Returns:
        windows (..., 3, 3) float16 (``PEAK_WINDOW``; fewer rows or columns for maps smaller than that), centred on
        the maximum unless it lies on the border, and at (..., 2) int16: x, y of each window's first pixel.
    """
    maps = np.asarray(heatmaps)
    *lead, height, width = maps.shape
    wh, ww = min(PEAK_WINDOW, height), min(PEAK_WINDOW, width)
    peak = maps.reshape(*lead, height * width).argmax(axis=-1)
    x0 = np.clip(peak % width - ww // 2, 0, width - ww)
    y0 = np.clip(peak // width - wh // 2, 0, height - wh)
    at = np.stack([x0, y0], axis=-1).astype(np.int16)
    windows = maps.reshape(-1, height, width)[_window_index(at.reshape(-1, 2), wh, ww)]
    return windows.reshape(*lead, wh, ww).astype(np.float16), at


def paste_windows(maps: np.ndarray, windows: np.ndarray, at: np.ndarray) -> None:
    """Write ``windows`` (..., h, w) into C-contiguous ``maps`` (..., H, W) at ``at`` (..., 2), in place."""
    *_, wh, ww = windows.shape
    maps.reshape(-1, *maps.shape[-2:])[_window_index(at.reshape(-1, 2), wh, ww)] = windows.reshape(-1, wh, ww)


def _window_index(at: np.ndarray, wh: int, ww: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays of the (M, h, w) windows whose first pixels are ``at`` (M, 2) x, y, in (M, H, W) maps."""
    m = np.arange(at.shape[0])[:, None, None]
    rows = at[:, 1, None, None] + np.arange(wh)[None, :, None]
    cols = at[:, 0, None, None] + np.arange(ww)[None, None, :]
    return m, rows, cols


def expected_shapes(provenance: CacheProvenance, n: int, shard_format: str) -> dict[str, tuple[int, ...]]:
    """Dataset name -> shape that a shard of ``n`` samples made with ``provenance`` in ``shard_format`` must have."""
    k = len(provenance.joint_names)
    w, h = provenance.heatmap_size
    shapes: dict[str, tuple[int, ...]] = {name: (n,) for name in STRING_COLUMNS}
    shapes.update(
        center=(n, 2), scale=(n, 2), rotation=(n,), score=(n,), image_id=(n,), labelled=(n,),
        joints=(n, k, 2), visibility=(n, k), teacher_joints=(n, k, 2), teacher_joints_image=(n, k, 2),
        maxvals=(n, k), file_size=(n,), file_mtime_ns=(n,), heatmaps=(n, k, h, w),
    )  # fmt: skip
    if shard_format == UINT8_FORMAT:
        window = (min(PEAK_WINDOW, h), min(PEAK_WINDOW, w))
        shapes.update(heatmaps_lo=(n, k), heatmaps_step=(n, k), heatmaps_peak=(n, k, *window),
                      heatmaps_peak_at=(n, k, 2))  # fmt: skip
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
        batch: the samples; ``heatmaps`` (N, K, H, W) are stored as float16 or as 8-bit codes (format 2),
            as ``compression`` says.
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
    spec = COMPRESSIONS[compression]
    f.attrs["format"] = spec.shard_format
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
    if spec.uint8:
        heatmaps, lo, step = encode_u8(batch.heatmaps)
        windows, at = peak_windows(batch.heatmaps)
        for name, data in (("heatmaps_lo", lo), ("heatmaps_step", step), ("heatmaps_peak", windows),
                           ("heatmaps_peak_at", at)):  # fmt: skip
            f.create_dataset(name, data=data)
    else:
        rounded = np.round(batch.heatmaps / spec.quantum) * spec.quantum if spec.quantum else batch.heatmaps
        heatmaps = rounded.astype(np.float16, copy=False)
    # One chunk per sample: a random read decompresses exactly the sample it needs. The byte shuffle groups the
    # high and low bytes of float16 values for the filter; single bytes have nothing to shuffle.
    f.create_dataset(
        "heatmaps",
        data=heatmaps,
        chunks=(1, *batch.heatmaps.shape[1:]),
        shuffle=bool(spec.filters) and heatmaps.itemsize > 1,
        **spec.filters,
    )


def shard_format(f: h5py.File, path: Path) -> str:
    """The format attribute of an open shard (a key of ``SHARD_FORMATS``).

    Raises:
        OSError: the file is no teacher cache shard, or one of a format this code does not know.
    """
    found = f.attrs.get("format")
    if found not in SHARD_FORMATS:
        raise OSError(f"{path.name}: not a teacher cache shard (format {found!r})")
    return str(found)


class ShardHeatmaps:
    """Sample-wise reads of one open shard's heatmaps, as float32 whatever the format.

    Args:
        f: the shard, open for reading (the caller closes it).
        path: its path, for messages.
    """

    def __init__(self, f: h5py.File, path: Path) -> None:
        self._maps = f["heatmaps"]
        self._extra: tuple[np.ndarray, ...] | None = None
        if shard_format(f, path) == UINT8_FORMAT:
            # 30 bytes per map, read once: reading them per sample would add four HDF5 calls to every item.
            self._extra = tuple(f[name][:] for name in ("heatmaps_lo", "heatmaps_step", "heatmaps_peak",
                                                        "heatmaps_peak_at"))  # fmt: skip

    def __getitem__(self, row: int) -> np.ndarray:
        """(K, H, W) float32 heatmaps of row ``row``."""
        maps = self._maps[row]
        if self._extra is None:
            # numpy, not torch: torch's conversion is faster single-threaded but splits a (K, H, W) tensor over
            # the intra-op threads of the main process, which costs more than it saves.
            return maps.astype(np.float32)
        lo, step, windows, at = self._extra
        maps = decode_u8(maps, lo[row], step[row])
        paste_windows(maps, windows[row], at[row])
        return maps


def read_columns(path: Path) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """Read every per-sample column except the heatmaps (cheap: a few hundred bytes per sample)."""
    with h5py.File(path, "r") as f:
        shard_format(f, path)
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
        shard_format(f, path)
        slot = f.attrs["slot"]
        return ShardHeader(
            CacheProvenance.from_json(str(f.attrs["provenance"])), (int(slot[0]), int(slot[1])),
            int(f.attrs["num_samples"]), str(f.attrs["created"]),
        )  # fmt: skip


def check_structure(path: Path, provenance: CacheProvenance, num_samples: int | None = None) -> list[str]:
    """Problems with a shard's attributes, dataset shapes and heatmap dtypes (empty when it is sound); reads no
    heatmaps."""
    problems: list[str] = []
    try:
        with h5py.File(path, "r") as f:
            found = f.attrs.get("format")
            if found not in SHARD_FORMATS:
                return [f"format attribute is {found!r}, expected one of {', '.join(map(repr, SHARD_FORMATS))}"]
            stored = CacheProvenance.from_json(str(f.attrs["provenance"]))
            problems += [f"provenance: {d}" for d in provenance.diff(stored)]
            n = int(f.attrs["num_samples"])
            if num_samples is not None and n != num_samples:
                problems.append(f"holds {n} samples, the manifest says {num_samples}")
            for name, shape in expected_shapes(provenance, n, found).items():
                if name not in f:
                    problems.append(f"dataset {name!r} is missing")
                elif f[name].shape != shape:
                    problems.append(f"dataset {name!r} has shape {f[name].shape}, expected {shape}")
            # A format-1 reader would take 8-bit codes for heatmap values: the dtype must match the format.
            for name, dtype in SHARD_FORMATS[found].items():
                if name in f and f[name].dtype != dtype:
                    problems.append(f"dataset {name!r} is {f[name].dtype}, expected {dtype} in format {found!r}")
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
