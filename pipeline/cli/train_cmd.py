"""`fpd train`: train a student on cached teacher heatmaps (or a teacher on ground truth alone) from a YAML recipe."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import shlex
import sys
from pathlib import Path

from pipeline.training.config import TrainConfig, add_train_arguments

# A write that fails for lack of room: the run can go on from its last checkpoint once there is some.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a student with the FPD loss from a YAML recipe (configs/*.yaml)",
        description="Train a student from a YAML recipe (see docs/training.md). Several GPUs or nodes: launch "
        "`torchrun ... -m pipeline.training.loop --config FILE` with the same options.",
    )
    add_train_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--print-recipe", action="store_true",
        help="print the fully resolved recipe (batch per process, lr by epoch, init, augmentation, loss) and exit",
    )
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU training: torch threads (default: the cores minus the loader workers, at least 1)")
    parser.add_argument("--world-size", type=int, default=1, metavar="N",
                        help="with --print-recipe: the number of training processes (torchrun's WORLD_SIZE)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.training.config import load_config

    config = load_config(args.config, [*args.set, *(["resume=true"] if args.resume else [])])
    if args.print_recipe:
        import yaml

        from pipeline.training.recipe import recipe_summary, resolve_recipe

        summary = recipe_summary(config, resolve_recipe(config, args.world_size))
        print(json.dumps(summary, indent=1) if args.json else yaml.safe_dump(summary, sort_keys=False), end="")
        return 0
    from pipeline.runtime import cpu_threads_beside, resolve_device, set_torch_threads
    from pipeline.training.loop import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        on_cpu = resolve_device(config.device).type == "cpu"
    except ValueError:
        on_cpu = False  # train() refuses the device, naming the recipe field
    if on_cpu:
        threads = args.threads or cpu_threads_beside(config.data.workers)
        set_torch_threads(threads)
        logging.getLogger(__name__).info(
            "CPU: %d torch thread(s) beside %d loader worker(s) on %d core(s)%s", threads, config.data.workers,
            cpu_threads_beside(0), "" if args.threads else " (--threads N to change)",
        )  # fmt: skip
    try:
        result = train(config, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print(f"fpd train: interrupted; {_what_was_saved(config)}; to continue: {_resume_command(args)}",
              file=sys.stderr)  # fmt: skip
        return 130
    except OSError as exc:
        if exc.errno not in _NO_SPACE:
            raise
        print(f"fpd train: error: no space left on the device writing {exc.filename}; {_what_was_saved(config)}; "
              f"free some space, then: {_resume_command(args)}", file=sys.stderr)  # fmt: skip
        return 2
    summary = {
        "checkpoint": str(result.checkpoint),
        "weights": str(result.weights),
        "best_weights": str(result.best_weights) if result.best_weights else None,
        "best_metric": result.best_metric,
        "metrics": result.metrics,
        "log": str(result.log),
    }
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
    return 0


def _what_was_saved(config: TrainConfig) -> str:
    """Where a stopped run can go on from: its last complete checkpoint (written atomically, so never torn)."""
    from pipeline.training.state import CHECKPOINT_NAME, saved_epoch

    checkpoint = Path(config.output_dir) / CHECKPOINT_NAME
    epoch = saved_epoch(checkpoint)
    if epoch is None:
        return f"nothing saved yet (no complete {checkpoint}: the first epoch had not finished)"
    return f"kept {checkpoint} ({epoch} of {config.optim.epochs} epochs done)"


def _resume_command(args: argparse.Namespace) -> str:
    """The command line that continues this run: the same recipe and overrides, with ``--resume``."""
    overrides = [part for item in args.set for part in ("--set", item)]
    return shlex.join(["fpd", "train", "--config", args.config, *overrides, "--resume"])
