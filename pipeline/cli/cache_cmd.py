"""`fpd cache inspect | render | verify`: look at a teacher target cache without changing it."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="inspect, render or verify a teacher target cache")
    sub = parser.add_subparsers(dest="cache_command", required=True)

    inspect = sub.add_parser("inspect", help="provenance, counts, disk use, teacher confidence")
    inspect.add_argument("path", type=Path, help="cache folder")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument("--lowest", type=int, default=10, help="how many lowest-confidence samples to list")
    inspect.set_defaults(func=_inspect)

    render = sub.add_parser("render", help="PNG overlays of cached targets and an index.html")
    render.add_argument("path", type=Path, help="cache folder")
    render.add_argument("--out", type=Path, required=True, help="output folder")
    render.add_argument("--source", help="only this source (e.g. mpii/valid)")
    render.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    render.set_defaults(func=_render)

    verify = sub.add_parser("verify", help="check every shard (checksums, attributes, shapes); read-only")
    verify.add_argument("path", type=Path, help="cache folder")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(func=_verify)


def _open(path: Path) -> Any:
    from storage.cache import TeacherTargetCache  # heavy imports inside the command (see pipeline.cli)

    cache = TeacherTargetCache(path)
    if not cache.exists():
        raise FileNotFoundError(f"{path} is not a teacher cache (no manifest.json)")
    return cache


def _inspect(args: argparse.Namespace) -> int:
    summary = _open(args.path).inspect(lowest=args.lowest)
    if args.json:
        payload = {**summary.to_dict(), **{f"provenance.{k}": v for k, v in summary.provenance.items()}}
        print(json.dumps(_without_nan(payload)))
        return 0
    print(f"cache {summary.path}")
    for key, value in summary.provenance.items():
        print(f"  {key}: {value}")
    print(f"samples: {summary.num_samples} ({summary.labelled} labelled, {summary.unlabeled} unlabeled; "
          f"{summary.num_superseded} superseded records hidden)")  # fmt: skip
    for source, count in summary.per_source.items():
        print(f"  {source}: {count}")
    print(f"disk: {summary.disk_bytes / 1e6:.2f} MB in {summary.num_shards} shards, "
          f"{summary.bytes_per_sample:.0f} bytes/sample")  # fmt: skip
    for name, reason in summary.damaged_shards:
        print(f"  DAMAGED {name}: {reason}")
    print("teacher confidence (heatmap maximum) per joint:   mean    p10    p50")
    for j in summary.joint_confidence:
        print(f"  {j.joint:<30} {j.mean:6.3f} {j.p10:6.3f} {j.p50:6.3f}")
    print("lowest-confidence samples (mean maximum over joints):")
    for low in summary.lowest_confidence:
        print(f"  {low['mean_maxval']:.3f}  {low['source']}  {low['image']}  #{low['instance_id']}")
    return 0


def _without_nan(value: Any) -> Any:
    """JSON has no NaN (an empty cache's statistics): write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(v) for v in value]
    return value


def _render(args: argparse.Namespace) -> int:
    from pipeline.render import render_cache

    _open(args.path)
    index = render_cache(args.path, args.out, source=args.source, n=args.n)
    print(f"wrote {index} and its pictures")
    return 0


def _verify(args: argparse.Namespace) -> int:
    report = _open(args.path).verify()
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0 if report.ok else 1
    for check in report.shards:
        print(f"{check.status.upper():9} {check.name}{': ' + check.detail if check.detail else ''}")
    for name in report.unlisted:
        print(f"UNLISTED  {name}: not in the manifest (left by an interrupted writer; the next writer adopts it)")
    for name in report.temp_files:
        print(f"TEMP      {name}: unfinished shard of a writer (removed by the next writer of its slot)")
    damaged = len(report.damaged)
    print(f"{len(report.shards)} shards, {damaged} damaged" + ("" if damaged else ": cache is sound"))
    return 0 if report.ok else 1
