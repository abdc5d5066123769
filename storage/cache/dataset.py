"""Reading a teacher cache for training: a torch ``Dataset`` over every live record.

The index (metadata of all live samples) is built once, in the process that creates the dataset, and is
pickled into DataLoader workers with it. HDF5 handles are opened lazily in whichever process reads, keyed by
pid, because an h5py file handle inherited through ``fork`` is not safe to use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from storage.cache.index import CacheIndex, ColumnCache, build_index
from storage.cache.manifest import load_manifest
from storage.cache.provenance import CacheProvenance
from storage.cache.shards import ShardHeatmaps


class TeacherTargetDataset(Dataset):
    """Random access to the live samples of a teacher cache.

    Item ``i`` is a dict (K joints, heatmap H x W; every value collates with the default ``collate_fn``):

    * ``heatmaps``: (K, H, W) float32 teacher heatmaps (float16 or 8-bit codes on disk, see
      ``storage.cache.shards``);
    * ``teacher_joints``: (K, 2) float32 decoded teacher joints, heatmap px; ``teacher_joints_image``: (K, 2)
      the same in image px; ``maxvals``: (K,) float32 heatmap value at each decoded joint;
    * ``source``, ``root``, ``image`` (relative to ``root``), ``instance_id``, ``fingerprint``: str;
    * ``center``, ``scale``: (2,) float64 (HRNet convention, scale in units of 200 px); ``rotation``: float;
    * ``labelled``: bool; ``joints``: (K, 2) float32 image px and ``visibility``: (K,) float32, zeros when
      unlabeled;
    * ``index``: int, position in this dataset.

    Args:
        path: cache folder.
        check_checksums: hash every shard once at construction and skip (with a ``DamagedShardWarning``)
            those that differ from the manifest. Without it only missing, truncated and unparsable shards are
            skipped.
    """

    def __init__(self, path: str | Path, *, check_checksums: bool = True) -> None:
        self.path = Path(path)
        manifest = load_manifest(self.path)
        self.provenance: CacheProvenance = manifest.provenance
        self.index: CacheIndex = build_index(self.path, manifest, ColumnCache(), check_checksums=check_checksums)
        self._pid: int | None = None
        self._files: dict[int, h5py.File] = {}
        self._heatmaps_of: dict[int, ShardHeatmaps] = {}

    def __len__(self) -> int:
        return len(self.index)

    def heatmaps(self, i: int) -> np.ndarray:
        """(K, H, W) float32 teacher heatmaps of sample ``i`` alone: what a training sample reads per item (the
        crop it was computed on is in ``index.numeric``), without building the other fields of ``__getitem__``."""
        if not 0 <= i < len(self.index):
            raise IndexError(f"index {i} out of range for a cache of {len(self.index)} samples")
        return self._heatmaps(int(self.index.shard_of[i]))[int(self.index.row[i])]

    def __getitem__(self, i: int) -> dict[str, Any]:
        heatmaps = self.heatmaps(i)
        num = self.index.numeric
        labelled = bool(num["labelled"][i])
        return {
            "heatmaps": torch.from_numpy(heatmaps),
            "teacher_joints": torch.from_numpy(num["teacher_joints"][i].copy()),
            "teacher_joints_image": torch.from_numpy(num["teacher_joints_image"][i].copy()),
            "maxvals": torch.from_numpy(num["maxvals"][i].copy()),
            **{name: str(self.index.strings[name][i]) for name in ("source", "root", "image", "instance_id")},
            "fingerprint": str(self.index.strings["fingerprint"][i]),
            "center": torch.from_numpy(num["center"][i].copy()),
            "scale": torch.from_numpy(num["scale"][i].copy()),
            "rotation": float(num["rotation"][i]),
            "labelled": labelled,
            "joints": torch.from_numpy(np.nan_to_num(num["joints"][i], nan=0.0)),
            "visibility": torch.from_numpy(num["visibility"][i].copy()),
            "index": i,
        }

    def close(self) -> None:
        """Close the HDF5 files this process opened (they reopen on the next read)."""
        for f in self._files.values():
            f.close()
        self._files, self._heatmaps_of = {}, {}

    def _heatmaps(self, shard: int) -> ShardHeatmaps:
        if self._pid != os.getpid():
            # A fresh process (DataLoader worker): the handles we see were opened by our parent, drop them.
            self._files, self._heatmaps_of, self._pid = {}, {}, os.getpid()
        reader = self._heatmaps_of.get(shard)
        if reader is None:
            path = self.path / self.index.shard_names[shard]
            f = self._files[shard] = h5py.File(path, "r")
            reader = self._heatmaps_of[shard] = ShardHeatmaps(f, path)
        return reader

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"], state["_heatmaps_of"], state["_pid"] = {}, {}, None
        return state
