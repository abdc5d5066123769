"""`fpd data`: generate synthetic datasets, convert the official MPII release, list what a source holds."""

from __future__ import annotations

import argparse
from pathlib import Path

_MPII_CONVERT_HELP = """\
Convert the official MPII release (mpii_human_pose_v1_u12_1.mat) into HRNet's layout: annot/train.json,
annot/valid.json and annot/gt_valid.mat (the images are not copied: point --out's images/ at the release's
images folder, e.g. with a symlink).

How the validation split is chosen: HRNet's valid.json is the 2958-person split of Tompson et al., which the
official .mat does not record (it only has img_train and single_person flags). This command takes the
single persons (single_person) of the img_train == 1 images. Persons of the images named in --valid-images (one
file name per line, e.g. the image names of HRNet's valid.json) form the validation split; without that file, a
deterministic split (the images whose name hashes into the --valid-fraction) is used instead. That split is
NOT the standard one: PCKh figures on it are not comparable with published MPII results.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="synthetic datasets, MPII conversion, source listings")
    sub = parser.add_subparsers(dest="data_command", required=True)

    synth = sub.add_parser("synth", help="write synthetic MPII, COCO and unlabeled folders in the real layouts")
    synth.add_argument("--out", type=Path, required=True, help="output directory (gets mpii/, coco/, unlabeled/)")
    synth.add_argument("--train", type=int, default=64, help="training images per dataset (default 64)")
    synth.add_argument("--val", type=int, default=16, help="validation images per dataset (default 16)")
    synth.add_argument("--unlabeled-folders", type=int, default=2, help="unlabeled folders (default 2)")
    synth.add_argument("--per-folder", type=int, default=16, help="images per unlabeled folder (default 16)")
    synth.add_argument("--seed", type=int, default=0, help="random seed: same seed, same files (default 0)")
    synth.set_defaults(func=_synth)

    convert = sub.add_parser(
        "mpii-convert",
        help="official MPII .mat -> HRNet json layout",
        description=_MPII_CONVERT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("--mat", type=Path, required=True, help="mpii_human_pose_v1_u12_1.mat")
    convert.add_argument("--out", type=Path, required=True, help="MPII root to write annot/ into")
    convert.add_argument("--valid-images", type=Path, default=None, help="file of validation image names")
    convert.add_argument("--valid-fraction", type=float, default=0.1, help="fallback split fraction (default 0.1)")
    convert.set_defaults(func=_mpii_convert)

    show = sub.add_parser("list", help="parse a source and print its record and failure counts")
    show.add_argument("kind", choices=("mpii", "coco", "folder"), help="source kind")
    show.add_argument("spec", help="ROOT[:split] (mpii default split valid, coco val2017)")
    show.add_argument("--input-aspect", type=float, default=None, help="model input w/h (default per kind)")
    show.set_defaults(func=_list)


def _synth(args: argparse.Namespace) -> int:
    from pipeline.data.synthetic import SyntheticConfig, generate_all

    config = SyntheticConfig(num_train=args.train, num_val=args.val, seed=args.seed)
    layout = generate_all(args.out, config, unlabeled_folders=args.unlabeled_folders, per_folder=args.per_folder)
    print(f"mpii: {layout.mpii}")
    print(f"coco: {layout.coco}")
    print(f"unlabeled: {layout.unlabeled} ({len(layout.folders)} folders x {args.per_folder} images)")
    return 0


def _mpii_convert(args: argparse.Namespace) -> int:
    from pipeline.data.mpii_convert import convert_mpii_release

    summary = convert_mpii_release(
        args.mat, args.out, valid_images=args.valid_images, valid_fraction=args.valid_fraction
    )
    print(f"train: {summary.num_train} persons, valid: {summary.num_valid} persons ({summary.split_rule})")
    return 0


def _list(args: argparse.Namespace) -> int:
    from pipeline.data.sources import DEFAULT_ASPECT, load_source_report, parse_source_spec

    spec = parse_source_spec(args.kind, args.spec)
    aspect = args.input_aspect if args.input_aspect is not None else DEFAULT_ASPECT[spec.kind]
    records, failures = load_source_report(spec, aspect)
    labelled = sum(r.labelled for r in records)
    split = f" [{spec.split}]" if spec.split else ""
    print(f"{spec.kind} {spec.root}{split}: {len(records)} records ({labelled} labelled)")
    for name, reason in failures:
        print(f"  skipped {name}: {reason}")
    return 0
