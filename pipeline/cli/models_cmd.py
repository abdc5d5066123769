"""`fpd models`: every model preset with its size, cost and input conventions."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the model presets (params, GFLOPs, sizes, colour order)",
        description="List the model presets. GFLOPs = conv + linear multiply-accumulates / 2**30 for one image at "
        "the preset's input size (HRNet's convention). Sizes are width x height.",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    parser.add_argument("names", nargs="*", metavar="PRESET", help="only these presets (default: all)")
    parser.set_defaults(func=run)


def preset_rows(names: list[str] | None = None) -> list[dict[str, Any]]:
    """One dict per preset: name, arch, joint_set, num_joints, sizes, colour order, params, gflops, description."""
    import torch

    from models import complexity, create_from_preset, get_preset, list_presets

    rows = []
    for name in names or list_presets():
        preset = get_preset(name)
        # Meta tensors: shapes only, so even the 63M-parameter nets are built and counted in a fraction of a second.
        with torch.device("meta"):
            model = create_from_preset(preset)
        cost = complexity(model, preset.input_hw)
        rows.append(
            {
                "name": preset.name,
                "arch": preset.arch,
                "arch_options": dict(preset.arch_options),
                "joint_set": preset.joint_set,
                "num_joints": preset.num_joints,
                "input_size": list(preset.input_size),
                "heatmap_size": list(preset.heatmap_size),
                "color_order": preset.color_order,
                "params": cost.params,
                "gflops": round(cost.gflops, 3),
                "description": preset.description,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Aligned text table of ``preset_rows`` output."""
    header = ("preset", "arch", "joints", "input WxH", "heatmap WxH", "params", "GFLOPs", "colour")
    lines = [
        (
            row["name"],
            row["arch"],
            f"{row['num_joints']} {row['joint_set']}",
            "x".join(map(str, row["input_size"])),
            "x".join(map(str, row["heatmap_size"])),
            f"{row['params']:,}",
            f"{row['gflops']:.3f}",
            row["color_order"],
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    numeric = {5, 6}  # right-align numbers

    def line(cells: tuple[str, ...]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in pairs).rstrip()

    return "\n".join(line(cells) for cells in [header, *lines])


def run(args: argparse.Namespace) -> int:
    rows = preset_rows(args.names)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return 0
