"""What the teacher must infer: the records a cache lacks, found once per run and handed to every shard.

Planning compares each record with what the cache holds for its key: a record is missing when its key is not
cached, its image's content changed (``edited``), or its crop did (``moved``: a person box edited in the
annotations, another detector's box); the new record then supersedes the stale one. An image whose size and
mtime match the cached ones is not re-hashed (``storage.hashing.file_state``), so planning over a large cache
reads only new or touched files. The plan (records with their fingerprints, and each image's state) is what
shards receive: written once as JSON by discovery, read by each shard, which then only checks it against the
cache's index (no rescan, no rehash).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from pipeline.records import SampleRecord
from storage.atomic import atomic_write
from storage.cache import TeacherTargetCache
from storage.cache.index import RecordKey, key_digest
from storage.hashing import FileState, file_state
from storage.jsonfiles import read_json

PLAN_FORMAT = "fpd-inference-plan-2"


@dataclass(frozen=True)
class InferencePlan:
    """Records to infer and the state of their images when they were planned.

    Attributes:
        records: the missing records, fingerprints filled in.
        states: image path (``str(record.path)``) -> its state when fingerprinted (stored with the heatmaps).
        unreadable: records whose image could not be stat'ed or read; inference reports them as failed.
        cached: keys of the planned-over records the cache already held (reported as skipped).
        edited: keys among ``records`` cached from an image whose content has changed since.
        moved: keys among ``records`` cached with another crop (centre, scale or rotation).
    """

    records: tuple[SampleRecord, ...]
    states: dict[str, FileState] = field(default_factory=dict)
    unreadable: tuple[SampleRecord, ...] = ()
    cached: tuple[RecordKey, ...] = ()
    edited: tuple[RecordKey, ...] = ()
    moved: tuple[RecordKey, ...] = ()


def plan_inference(records: Sequence[SampleRecord], cache: TeacherTargetCache) -> InferencePlan:
    """The records of ``records`` that ``cache`` lacks (new key, image content changed, or crop changed)."""
    known = cache.cached_samples()
    todo: list[SampleRecord] = []
    unreadable: list[SampleRecord] = []
    cached_keys: list[RecordKey] = []
    edited: list[RecordKey] = []
    moved: list[RecordKey] = []
    states: dict[str, FileState] = {}
    for record in records:
        path = str(record.path)
        cached = known.get(record.key)
        if path not in states:
            try:
                states[path] = file_state(path, None if cached is None else cached.state)
            except OSError:
                unreadable.append(record)
                continue
        fingerprint = states[path].fingerprint
        change = None if cached is None else cached.change(fingerprint, record.center, record.scale, record.rotation)
        if cached is not None and change is None:
            cached_keys.append(record.key)
            continue
        if change is not None:
            (edited if change == "edited" else moved).append(record.key)
        todo.append(replace(record, fingerprint=fingerprint))
    needed = {str(r.path) for r in todo}
    states = {p: s for p, s in states.items() if p in needed}
    return InferencePlan(tuple(todo), states, tuple(unreadable), tuple(cached_keys), tuple(edited), tuple(moved))


def still_missing(plan: InferencePlan, cache: TeacherTargetCache) -> InferencePlan:
    """``plan`` less what the cache gained since it was made (a retried shard's own commits): index only."""
    known = cache.cached_samples()

    def served(record: SampleRecord) -> bool:
        cached = known.get(record.key)
        return cached is not None and cached.change(record.fingerprint, record.center, record.scale,
                                                    record.rotation) is None  # fmt: skip

    done = {r.key for r in plan.records if served(r)}
    todo = tuple(r for r in plan.records if r.key not in done)
    return replace(plan, records=todo, cached=(*plan.cached, *sorted(done)))


def slot_of(key: RecordKey, num_shards: int) -> int:
    """The slot (0..num_shards-1) of a record key: a hash that is the same in every process and Python run."""
    return int(key_digest(key), 16) % num_shards


def select_slot(plan: InferencePlan, shard_index: int, num_shards: int) -> InferencePlan:
    """The part of ``plan`` that slot ``shard_index`` of ``num_shards`` is responsible for."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard index {shard_index} is not in 0..{num_shards - 1}")

    def mine(key: RecordKey) -> bool:
        return slot_of(key, num_shards) == shard_index

    records = tuple(r for r in plan.records if mine(r.key))
    paths = {str(r.path) for r in records}
    return InferencePlan(
        records, {p: s for p, s in plan.states.items() if p in paths},
        tuple(r for r in plan.unreadable if mine(r.key)), tuple(k for k in plan.cached if mine(k)),
        tuple(k for k in plan.edited if mine(k)), tuple(k for k in plan.moved if mine(k)),
    )  # fmt: skip


def save_plan(path: str | Path, plan: InferencePlan) -> Path:
    """Write ``plan`` as JSON, atomically."""
    payload = {
        "format": PLAN_FORMAT,
        "records": [_record_to_json(r) for r in plan.records],
        "unreadable": [_record_to_json(r) for r in plan.unreadable],
        "states": {p: asdict(s) for p, s in plan.states.items()},
        "cached": [list(k) for k in plan.cached],
        "edited": [list(k) for k in plan.edited],
        "moved": [list(k) for k in plan.moved],
    }
    with atomic_write(path, "w") as handle:
        json.dump(payload, handle)
    return Path(path)


def load_plan(path: str | Path) -> InferencePlan:
    """Read a plan written by :func:`save_plan`.

    Raises:
        ValueError: the file is not such a plan (the message names it).
    """
    data = read_json(path, "inference plan")
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise ValueError(f"{path}: not an inference plan (format {PLAN_FORMAT})")
    try:
        return InferencePlan(
            records=tuple(_record_from_json(r) for r in data["records"]),
            states={p: FileState(**s) for p, s in data["states"].items()},
            unreadable=tuple(_record_from_json(r) for r in data["unreadable"]),
            cached=_keys(data["cached"]),
            edited=_keys(data["edited"]),
            moved=_keys(data["moved"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: damaged inference plan ({exc})") from None


def _keys(items: list) -> tuple[RecordKey, ...]:
    return tuple((str(a), str(b), str(c), str(d)) for a, b, c, d in items)


def _record_to_json(record: SampleRecord) -> dict[str, object]:
    out = asdict(record)
    out["root"] = str(record.root)
    for name in ("joints", "visibility"):
        value = getattr(record, name)
        out[name] = None if value is None else np.asarray(value).tolist()
    return out


def _record_from_json(data: dict) -> SampleRecord:
    arrays = {
        name: None if data[name] is None else np.asarray(data[name], dtype=np.float32)
        for name in ("joints", "visibility")
    }
    return SampleRecord(
        **{**data, **arrays, "root": Path(data["root"]), "center": tuple(data["center"]), "scale": tuple(data["scale"])}
    )
