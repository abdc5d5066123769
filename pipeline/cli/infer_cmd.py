"""`fpd infer`: flip-test teacher heatmaps for MPII / COCO / folder sources into a teacher target cache.

Bad options are refused by argparse (or, for ``--device``, before anything is loaded or written); a cache that
cannot be written, a full disk or a damaged manifest end as one line, exit 2; Ctrl-C ends with one line saying what
this run committed, exit 130. Every shard committed before such an end stays, and rerunning resumes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SHOWN_FAILURES = 10
# storage.cache.COMPRESSIONS and DEFAULT_COMPRESSION, spelled out so that `fpd --help` imports no h5py or torch
# (tests/pipeline/test_inference.py checks that they agree).
COMPRESSION_NAMES = ("none", "lzf", "gzip1", "gzip4", "lzf-q", "gzip1-q", "u8", "lzf-u8", "gzip1-u8")
DEFAULT_COMPRESSION = "gzip1-u8"

_DESCRIPTION = """\
Run the teacher (with flip test) over every person of the given sources and store its heatmaps and decoded
joints in the cache folder. Samples already cached with the same image content are skipped, so running again
after adding a folder infers only the new images, and an interrupted run resumes where it stopped. Several
processes can fill one cache side by side with --shard 0/N ... N-1/N.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "infer", help="teacher inference into a target cache", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--teacher", required=True, metavar="PRESET", help="teacher model preset (see `fpd models`)")
    parser.add_argument("--checkpoint", required=True, type=Path, help="teacher weights (loaded strictly)")
    parser.add_argument("--cache", required=True, type=Path, help="cache folder (created if missing)")
    parser.add_argument("--mpii", action="append", default=[], metavar="ROOT[:split]", help="MPII source (valid)")
    parser.add_argument("--coco", action="append", default=[], metavar="ROOT[:split]", help="COCO source (val2017)")
    parser.add_argument("--folder", action="append", default=[], metavar="DIR", help="folder of unlabeled images")
    parser.add_argument("--detections", type=Path, help="person detections for the --coco sources (default: GT boxes)")
    parser.add_argument("--detection-store", type=Path, metavar="STORE",
                        help="person boxes `fpd detect` found for the --folder sources (default: each image is one "
                             "person; a folder's own detections.json always wins)")  # fmt: skip
    parser.add_argument("--shard", type=shard_slot, default=(0, 1), metavar="I/N",
                        help="this process's slot of N (default 0/1)")  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=32, help="crops per forward pass (default 32)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="image decoding processes (default 2; 0 decodes in this process)")  # fmt: skip
    parser.add_argument("--shard-size", type=positive_int, default=512, help="samples per shard file (default 512)")
    parser.add_argument("--compression", choices=COMPRESSION_NAMES, default=DEFAULT_COMPRESSION,
                        help=f"shard compression (default {DEFAULT_COMPRESSION}; see docs/cache.md)")  # fmt: skip
    parser.add_argument("--decode", choices=("hrnet", "dark"), default="hrnet", help="joint decoding rule")
    parser.add_argument("--draft-decode", action="store_true",
                        help="decode JPEGs at reduced size (libjpeg draft mode) when the crop shrinks them: faster, "
                             "but not the pixels the teacher was trained on; recorded in the cache, which then "
                             "refuses runs without it (see docs/cache.md)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def shard_slot(text: str) -> tuple[int, int]:
    """argparse type of ``--shard``: ``"I/N"`` -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text}: need 0 <= I < N (slot I of N processes, counted from 0)")
    return index, count


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `fpd --help` and the other commands do not pay for torch and h5py.
    from pipeline.cli import UserError
    from pipeline.runtime import resolve_device
    from storage.cache import CacheLockedError, CacheWriteError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not (args.mpii or args.coco or args.folder):
        raise UserError("give at least one source: --mpii, --coco or --folder")
    if args.detections is not None and not args.coco:
        raise UserError("--detections applies to --coco sources, and none was given")
    if args.detection_store is not None and not args.folder:
        raise UserError("--detection-store applies to --folder sources, and none was given")
    try:  # before the cache folder is created or the teacher loaded
        device = resolve_device(args.device or "auto")
    except ValueError as exc:
        raise UserError(f"--device {args.device}: {exc}") from None
    before = _slot_shards(args.cache, args.shard)
    try:
        return _infer(args, device)
    except (CacheLockedError, CacheWriteError) as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        # The writer committed what it had buffered on the way out; say what stays, not where Python was.
        print(f"fpd infer: interrupted; {_kept(args.cache, args.shard, before)}", file=sys.stderr)
        return 130


def _infer(args: argparse.Namespace, device: torch.device) -> int:
    from pipeline.data.sources import load_sources, parse_source_spec
    from pipeline.runtime import load_model
    from pipeline.teacher.inference import open_teacher_cache, run_teacher_inference
    from pipeline.teacher.plan import plan_inference

    shard_index, num_shards = args.shard
    preset, model = load_model(args.teacher, args.checkpoint)
    cache = open_teacher_cache(args.cache, preset, args.checkpoint, decode=args.decode,
                               draft_decode=args.draft_decode)  # fmt: skip

    specs = [parse_source_spec(kind, text)
             for kind, texts in (("mpii", args.mpii), ("coco", args.coco), ("folder", args.folder)) for text in texts]
    loaded = load_sources(specs, preset.input_aspect, detections=args.detections,
                          detection_store=args.detection_store)  # fmt: skip
    for spec, source in zip(specs, loaded, strict=True):
        print(f"{spec.kind} {spec.root}{':' + spec.split if spec.split else ''}: {len(source.records)} persons")
        for name, reason in source.skipped[:SHOWN_FAILURES]:
            print(f"  skipped {name}: {reason}")
    plan = plan_inference([r for source in loaded for r in source.records], cache)

    report = run_teacher_inference(
        model, preset, plan, cache, batch_size=args.batch_size, device=device,
        shard_index=shard_index, num_shards=num_shards, num_workers=args.workers, shard_size=args.shard_size,
        progress=not args.no_progress, compression=args.compression, draft_decode=args.draft_decode,
    )  # fmt: skip
    print(f"slot {shard_index}/{num_shards}: {report.new} new, {report.skipped} skipped, {report.failed} failed "
          f"({len(report.shards)} shards written to {cache.path})")  # fmt: skip
    for name in report.failed_files[:SHOWN_FAILURES]:
        print(f"  failed: {name}")
    if len(report.failed_files) > SHOWN_FAILURES:
        print(f"  ... and {len(report.failed_files) - SHOWN_FAILURES} more files")
    return 0


def _slot_shards(cache_dir: Path, slot: tuple[int, int]) -> set[str]:
    """Names of the shards of ``slot`` the cache lists now (none when there is no cache yet)."""
    from storage.cache import TeacherTargetCache

    cache = TeacherTargetCache(cache_dir)
    return {s.name for s in cache.manifest().shards if s.slot == slot} if cache.exists() else set()


def _kept(cache_dir: Path, slot: tuple[int, int], before: set[str]) -> str:
    """What an interrupted run leaves: the shards it committed, the cache's total, how to go on."""
    from storage.cache import TeacherTargetCache

    cache = TeacherTargetCache(cache_dir)
    shards = cache.manifest().shards if cache.exists() else []
    mine = [s for s in shards if s.slot == slot and s.name not in before]
    return (f"kept the {len(mine)} shard(s) ({sum(s.num_samples for s in mine)} samples) this run committed to "
            f"{cache_dir}, which lists {len(shards)} shard(s) ({sum(s.num_samples for s in shards)} samples) in all; "
            "run the same command again to infer the rest (committed samples are skipped)")  # fmt: skip
