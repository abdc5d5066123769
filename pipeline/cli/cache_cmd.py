"""`fpd cache inspect | render | verify | repair`: look at a teacher target cache; repair is the one that changes it.

A damaged manifest (``storage.cache.ManifestError``, a ValueError) ends every sub-command as one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="inspect, render, verify or repair a teacher target cache")
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
    render.add_argument("--n", type=int, default=16, help="number of samples, spread over the cache (default 16)")
    render.add_argument("--lowest", type=int, metavar="N", help="instead: the N samples the teacher is least sure of "
                        "(lowest mean per-joint heatmap maximum), weakest first")  # fmt: skip
    render.set_defaults(func=_render)

    verify = sub.add_parser("verify", help="check every shard (checksums, attributes, shapes); read-only")
    verify.add_argument("path", type=Path, help="cache folder")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(func=_verify)

    repair = sub.add_parser(
        "repair", help="drop damaged shards whose samples were inferred again; rebuild a damaged manifest",
        description="Take damaged shards (those `fpd cache verify` reports) out of the manifest when every sample "
                    "they hold has a newer record elsewhere, i.e. `fpd infer` with the same sources re-inferred "
                    "them; their files move to damaged/. A damaged shard whose samples are not all re-inferred, or "
                    "whose rows cannot be read, is kept unless --force.",
    )  # fmt: skip
    repair.add_argument("path", type=Path, help="cache folder")
    repair.add_argument("--force", action="store_true",
                        help="drop every damaged shard; its samples are then missing and the next fpd infer infers "
                             "them")  # fmt: skip
    repair.add_argument("--rebuild-manifest", action="store_true",
                        help="write a new manifest from the shard files when manifest.json cannot be read")  # fmt: skip
    repair.add_argument("--json", action="store_true", help="print one JSON object")
    repair.set_defaults(func=_repair)


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
    print(f"disk: {summary.disk_bytes / 2**20:.1f} MiB in {summary.num_shards} shards, "
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
    lowest = args.lowest is not None
    index = render_cache(args.path, args.out, source=args.source, n=args.lowest if lowest else args.n, lowest=lowest)
    print(f"wrote {index} and its pictures")
    return 0


def _repair(args: argparse.Namespace) -> int:
    from pipeline.cli import UserError
    from storage.cache import CacheWriteError, TeacherTargetCache

    try:
        if args.rebuild_manifest:
            if not any(args.path.glob("shard-*.h5")):
                raise FileNotFoundError(f"{args.path} holds no shard files to rebuild a manifest from")
            return _print_rebuild(TeacherTargetCache(args.path).rebuild_manifest(), args.json)
        report = _open(args.path).repair(force=args.force)
    except CacheWriteError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0 if report.ok else 1
    for shard in report.shards:
        print(f"{'DROPPED' if shard.dropped else 'KEPT':8} {shard.name} ({shard.status}: {shard.detail}): "
              f"{_verdict(shard)}")  # fmt: skip
    print(f"{len(report.shards)} damaged shards: {len(report.dropped)} dropped, {len(report.kept)} kept"
          + ("" if report.kept else ": fpd cache verify passes now"))  # fmt: skip
    return 0 if report.ok else 1


def _verdict(shard: Any) -> str:
    """What repair decided about one damaged shard and, when kept, what to do."""
    if shard.not_reinferred is None:
        known = (f"its rows cannot be read and the manifest lists no key digests for them (a shard committed before "
                 f"they were recorded), so whether its {shard.num_samples} samples were inferred again is unknown")
    elif shard.not_reinferred:
        known = f"{shard.not_reinferred} of its {shard.num_samples} samples have no record in another shard"
    else:
        known = f"all {shard.num_samples} samples have a newer record elsewhere"
    if shard.dropped:
        return f"{known}; dropped from the manifest, file moved to damaged/"
    return (f"{known}; run fpd infer with the same sources first, then repair again (--force drops it anyway: its "
            "samples are then missing and the next fpd infer infers them)")  # fmt: skip


def _print_rebuild(report: Any, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report.to_dict()))
        return 0
    if report.backup:
        print(f"the unreadable manifest was copied to {report.backup}")
    for name, reason in report.set_aside:
        print(f"SET ASIDE {name}: {reason} (moved to damaged/)")
    print(f"new manifest lists {len(report.shards)} shards, {report.num_samples} samples "
          f"({report.num_superseded} superseded records hidden); run fpd cache verify to check it")  # fmt: skip
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
    if damaged:
        print(f"fpd infer with the same sources infers their samples again; then `fpd cache repair {args.path}` "
              "takes the damaged shards out of the manifest")  # fmt: skip
    return 0 if report.ok else 1
