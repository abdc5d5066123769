"""The cache manifest: the one mutable file of a cache, replaced atomically under the manifest lock.

``manifest.json`` lists the committed shards in commit order with their sample counts, byte sizes and
SHA-256, and the rows that later shards superseded (an edited image re-inferred: the old record stays in its
immutable shard, the manifest marks it dead). A shard file that the manifest does not list does not exist for
readers.

A manifest that cannot be read as one (garbage bytes, cut short, JSON of another shape) raises
:class:`ManifestError`, which names the file and what is wrong: readers and writers stop there rather than guess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from storage.atomic import atomic_write
from storage.cache.provenance import CacheProvenance
from storage.jsonfiles import is_json_int

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "fpd-teacher-cache-1"
SHARD_NAME_RE = re.compile(r"^shard-[0-9a-f]{32}\.h5$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """``manifest.json`` is not a readable manifest; the message names the file, the problem and the way out."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"teacher cache manifest {path} is damaged: {problem}. The shard files beside it are untouched: "
            f"`fpd cache repair {path.parent} --rebuild-manifest` lists them again (or move the folder aside)"
        )


@dataclass(frozen=True)
class ShardEntry:
    """One committed shard: file name, sample count, bytes, SHA-256, writer slot, commit time and key digests.

    ``key_digests`` is the 16-hex-digit digest (``storage.cache.index.key_digest``) of each row's record key, in
    row order, so that ``fpd cache repair`` can tell whether a shard that can no longer be read (truncated, gone)
    has had all its samples inferred again. Empty for shards committed before it was recorded.
    """

    name: str
    num_samples: int
    size: int
    sha256: str
    slot: tuple[int, int]
    created: str
    key_digests: str = ""

    def to_dict(self) -> dict[str, Any]:
        keys = {"keys": self.key_digests} if self.key_digests else {}
        return {
            "name": self.name, "num_samples": self.num_samples, "size": self.size, "sha256": self.sha256,
            "slot": list(self.slot), "created": self.created, **keys,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardEntry:
        return cls(
            name=data["name"], num_samples=int(data["num_samples"]), size=int(data["size"]),
            sha256=data["sha256"], slot=(int(data["slot"][0]), int(data["slot"][1])), created=data["created"],
            key_digests=str(data.get("keys", "")),
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
    """Read ``cache_dir/manifest.json``.

    Raises:
        FileNotFoundError: the folder is not a cache (no manifest).
        ManifestError: the manifest is not valid JSON or not of the manifest's shape (the message says where).
    """
    path = Path(cache_dir) / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"{cache_dir} is not a teacher cache (no {MANIFEST_NAME})")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestError(path, f"not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        what = "the file is empty" if not exc.doc.strip() else f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise ManifestError(path, f"not valid JSON ({what})") from None
    problem = manifest_problem(data)
    if problem is not None:
        raise ManifestError(path, problem)
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:  # a provenance field of the wrong type
        raise ManifestError(path, f"provenance: {type(exc).__name__}: {exc}") from None


def manifest_problem(data: Any) -> str | None:
    """What makes parsed JSON not a manifest (the first problem found), None when it has the right shape.

    Checked before building the dataclasses so that a wrong shape is named, not met as a ``KeyError`` deep inside.
    """
    if not isinstance(data, dict):
        return f"expected a JSON object, found {_kind(data)}"
    if data.get("format") != MANIFEST_FORMAT:
        return f"format is {data.get('format')!r}, expected {MANIFEST_FORMAT!r}"
    if not isinstance(data.get("provenance"), dict):
        return f"'provenance' must be an object, found {_kind(data.get('provenance'))}"
    shards = data.get("shards")
    if not isinstance(shards, list):
        return f"'shards' must be a list, found {_kind(shards)}"
    sizes: dict[str, int] = {}
    for i, entry in enumerate(shards):
        problem = _entry_problem(entry)
        if problem is None and entry["name"] in sizes:
            problem = f"{entry['name']} is listed twice"
        if problem is not None:
            return f"shards[{i}]: {problem}"
        sizes[entry["name"]] = entry["num_samples"]
    superseded = data.get("superseded", {})
    if not isinstance(superseded, dict):
        return f"'superseded' must be an object, found {_kind(superseded)}"
    for name, rows in superseded.items():
        if not isinstance(rows, list) or not all(is_json_int(r) and r >= 0 for r in rows):
            return f"superseded[{name!r}] must be a list of row numbers"
        if name in sizes and any(r >= sizes[name] for r in rows):
            return f"superseded[{name!r}] lists a row beyond the shard's {sizes[name]} samples"
    return None


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return f"expected an object, found {_kind(entry)}"
    missing = [k for k in ("name", "num_samples", "size", "sha256", "slot", "created") if k not in entry]
    if missing:
        return "missing " + ", ".join(repr(k) for k in missing)
    # Names are joined to the cache folder and files are moved by repair: only plain shard names are accepted.
    if not isinstance(entry["name"], str) or not SHARD_NAME_RE.match(entry["name"]):
        return f"name {entry['name']!r} is not a shard file name (shard-<32 hex>.h5)"
    for key in ("num_samples", "size"):
        if not is_json_int(entry[key]) or entry[key] < 0:
            return f"{key} must be a non-negative integer, found {entry[key]!r}"
    if not isinstance(entry["sha256"], str) or not _SHA256_RE.match(entry["sha256"]):
        return f"sha256 must be 64 hexadecimal digits, found {entry['sha256']!r}"
    slot = entry["slot"]
    if not (isinstance(slot, list) and len(slot) == 2 and all(is_json_int(v) for v in slot) and 0 <= slot[0] < slot[1]):
        return f"slot must be [I, N] with 0 <= I < N, found {slot!r}"
    if not isinstance(entry["created"], str):
        return f"created must be a string, found {entry['created']!r}"
    keys = entry.get("keys", "")
    if not isinstance(keys, str) or (keys and len(keys) != 16 * entry["num_samples"]):
        return f"keys must be 16 hexadecimal digits per sample, found {str(keys)[:40]!r}"
    return None


def _kind(value: Any) -> str:
    """A JSON value's type as JSON calls it, for messages."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def save_manifest(cache_dir: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically: readers see the old or the new one, never a mix (call under the lock)."""
    with atomic_write(Path(cache_dir) / MANIFEST_NAME, "w") as f:
        f.write(json.dumps(manifest.to_dict(), indent=1))


def utc_now() -> str:
    """The current UTC time as ISO 8601 to the second (manifest and shard time stamps)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
