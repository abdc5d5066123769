"""The ``fpd`` command line: one sub-command module per stage, each calling the plain pipeline functions.

Every module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its sub-command(s) and sets
``func`` to a callable taking the parsed namespace and returning an exit code. Heavy imports (torch, h5py)
happen inside those callables so that ``fpd --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

COMMAND_MODULES = (
    "pipeline.cli.models_cmd",
    "pipeline.cli.data_cmd",
    "pipeline.cli.eval_cmd",
    "pipeline.cli.detect_cmd",
    "pipeline.cli.infer_cmd",
    "pipeline.cli.cache_cmd",
    "pipeline.cli.train_cmd",
    "pipeline.cli.predict_cmd",
    "pipeline.cli.export_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fpd", description="Fast Pose Distillation pipeline")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, no traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; its exit code. Problems a user can fix end in one line on stderr, not a traceback.

    Exit codes: 0 done, 2 a user error (bad input, or an OS error on a named file: a full disk, a missing or
    unreadable path), 130 interrupted (Ctrl-C, as shells report SIGINT). Any other exception is a bug and keeps its
    traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():  # restores the process's warning settings (main also runs in tests)
            # Warnings meant for a person (a damaged shard left out...): one line each, once, no source line.
            warnings.simplefilter("once", RuntimeWarning)
            warnings.showwarning = lambda message, *_, **__: print(f"fpd {args.command}: warning: {message}",
                                                                   file=sys.stderr)  # fmt: skip
            return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as exc:
        print(f"fpd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:
            raise  # no file to name: not something the message could help with
        print(f"fpd {args.command}: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fpd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
