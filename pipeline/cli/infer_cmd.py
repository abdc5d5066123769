"""`fpd infer` (placeholder: its owner replaces this module)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    pass
