"""The cache manifest: the one mutable file of a cache, replaced atomically under the manifest lock.

``manifest.json`` lists the committed shards in commit order with their sample counts, byte sizes and
SHA-256, and the rows that later shards superseded (an edited image re-inferred: the old record stays in its
immutable shard, the manifest marks it dead). A shard file that the manifest does not list does not exist for
readers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from storage.atomic import atomic_write
from storage.cache.provenance import CacheProvenance

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "fpd-teacher-cache-1"


@dataclass(frozen=True)
class ShardEntry:
    """One committed shard: file name, sample count, bytes, SHA-256, writer slot and commit time."""

    name: str
    num_samples: int
    size: int
    sha256: str
    slot: tuple[int, int]
    created: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "num_samples": self.num_samples, "size": self.size, "sha256": self.sha256,
            "slot": list(self.slot), "created": self.created,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardEntry:
        return cls(
            name=data["name"], num_samples=int(data["num_samples"]), size=int(data["size"]),
            sha256=data["sha256"], slot=(int(data["slot"][0]), int(data["slot"][1])), created=data["created"],
        )  # fmt: skip


@dataclass
class Manifest:
    """In-memory manifest; ``superseded`` maps a shard name to its dead row numbers (sorted)."""

    provenance: CacheProvenance
    shards: list[ShardEntry] = field(default_factory=list)
    superseded: dict[str, list[int]] = field(default_factory=dict)

    @property
    def shard_names(self) -> set[str]:
        return {s.name for s in self.shards}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "provenance": self.provenance.to_dict(),
            "shards": [s.to_dict() for s in self.shards],
            "superseded": {name: sorted(rows) for name, rows in sorted(self.superseded.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a teacher cache manifest (format {data.get('format')!r})")
        return cls(
            provenance=CacheProvenance.from_dict(data["provenance"]),
            shards=[ShardEntry.from_dict(s) for s in data["shards"]],
            superseded={name: [int(r) for r in rows] for name, rows in data.get("superseded", {}).items()},
        )


def load_manifest(cache_dir: Path) -> Manifest:
    """Read ``cache_dir/manifest.json``; FileNotFoundError when the folder is not a cache."""
    path = Path(cache_dir) / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"{cache_dir} is not a teacher cache (no {MANIFEST_NAME})")
    return Manifest.from_dict(json.loads(path.read_text()))


def save_manifest(cache_dir: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically: readers see the old or the new one, never a mix (call under the lock)."""
    with atomic_write(Path(cache_dir) / MANIFEST_NAME, "w") as f:
        f.write(json.dumps(manifest.to_dict(), indent=1))


def utc_now() -> str:
    """The current UTC time as ISO 8601 to the second (manifest and shard time stamps)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
