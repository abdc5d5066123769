"""Helpers of ``demo/run.sh`` (``make demo``): data and teachers, COCO parameters, tables, the rerun summary.

The demo's MPII parameters are those of the ``distill-flow/demo`` deployment in ``prefect.yaml``; the COCO run
swaps the dataset-specific ones (presets, data root, cache, output). Sizes are tuned so that the whole demo
takes under 10 minutes on 2 CPU cores.

The demo is a script of this checkout, not part of the installed packages: ``python demo/demo.py <command>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelling

from flows.params import DistillParams
from pipeline.data.synthetic import SyntheticConfig, generate_dataset, generate_unlabeled_folder
from pipeline.reporting import format_table
from pipeline.training.config import DataConfig, LossConfig, OptimConfig, TrainConfig
from pipeline.training.loop import train
from storage.checkpoints import read_weights_metadata

REPO = Path(__file__).resolve().parents[1]
OUT = Path("demo_out")
"""The demo folder, relative to the repository root (the deployment's working directory)."""
SHIPPED_TEACHERS = REPO / "demo/teachers"
"""The tiny teachers that come with the demo: ``train_teacher``'s result on the demo's data, one folder per preset."""


@dataclass(frozen=True)
class DemoSizes:
    """How much the demo generates and trains (2 CPU cores, < 10 minutes in all).

    The scenes are easier than ``SyntheticConfig``'s defaults (one person per image, few occluders, little
    clutter, small images so that crops are not down-sampled much): a CPU budget of a few thousand crops then
    teaches the tiny networks real poses instead of blurry guesses. Many images seen few times beat few images
    seen many times (images are cheap to generate, the crop budget is what costs).
    """

    train_images: int = 480
    val_images: int = 64
    unlabeled_folders: int = 2
    images_per_folder: int = 128
    new_folder_images: int = 48
    people_per_image: int = 1
    occluder_prob: float = 0.1
    clutter_shapes: tuple[int, int] = (1, 4)
    size_range: tuple[int, int] = (128, 192)
    teacher_plain_epochs: int = 6
    teacher_epochs: int = 12
    teacher_lr: float = 2e-3
    teacher_milestones: tuple[int, ...] = (10,)
    teacher_batch_size: int = 8
    seed: int = 0

    def scenes(self) -> SyntheticConfig:
        """The scene settings of every generated image (labelled splits and unlabeled folders)."""
        return SyntheticConfig(
            num_train=self.train_images,
            num_val=self.val_images,
            seed=self.seed,
            size_range=self.size_range,
            max_people=self.people_per_image,
            occluder_prob=self.occluder_prob,
            clutter_shapes=self.clutter_shapes,
        )


COCO_SCHEDULE = {"epochs": 8, "lr": 0.005, "milestones": [7], "batch_size": 4, "augment": False}
"""The COCO students' schedule (MPII's is the deployment's: 6 epochs of batches of 8 at lr 0.002).

COCO's 24x32 heatmaps carry sigma-1 Gaussians for 17 joints, five of them on the face, where OKS tolerates less than
a heatmap pixel: a student on ground truth alone stays at its all-zero plateau for hundreds of steps. Measured on
the demo's data with the Pillow crops and float16 targets of then, ground-truth student alone (COCO AP): 6 epochs of 8
at lr 0.002 0.000; 12 epochs of 8 at 0.005 0.057; 8 epochs of 4 at 0.005 0.131 (0.094 with today's OpenCV crops and
8-bit targets), at 1.33x the cost per epoch of batches of 8.
"""


def deployment_parameters(name: str = "demo") -> dict[str, object]:
    """The parameters of ``distill-flow/<name>`` as written in ``prefect.yaml``."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return next(
        d["parameters"] for d in spec["deployments"] if d["name"] == name and d["entrypoint"].endswith(":distill_flow")
    )


def dataset_parameters(dataset: str) -> dict[str, object]:
    """The demo parameters for ``dataset`` (``mpii`` is the deployment's own; ``coco`` swaps its paths)."""
    params = deployment_parameters()
    if dataset == "mpii":
        return params
    return {
        **params,
        "teacher": {"preset": "tiny_teacher_coco", "checkpoint": str(OUT / "teachers/tiny_teacher_coco/weights.pt")},
        "student": {"preset": "tiny_student_coco"},
        "labelled": [{"dataset": "coco", "root": str(OUT / "data/coco")}],
        "cache_dir": str(OUT / "cache/coco"),
        "output_dir": str(OUT / "runs/coco"),
        "eval_datasets": ["coco"],
        "schedule": COCO_SCHEDULE,
    }


def generate_data(sizes: DemoSizes) -> None:
    """Generate the MPII- and COCO-format datasets and the unlabeled folders under ``demo_out/data``."""
    config = sizes.scenes()
    for i in range(sizes.unlabeled_folders):
        folder = OUT / f"data/unlabeled/folder_{i}"
        generate_unlabeled_folder(folder, sizes.images_per_folder, seed=sizes.seed + i, config=config, detections=True)
    for dataset in ("mpii", "coco"):
        generate_dataset(OUT / "data" / dataset, dataset, config)


def train_teacher(dataset: str, sizes: DemoSizes) -> Path:
    """Train the dataset's tiny teacher on ground truth alone (alpha 0, no cache) with the students' ``train``.

    Two phases: ``teacher_plain_epochs`` on plain crops (a few thousand crops learn fastest so), then
    ``teacher_epochs`` with the dataset's augmentation from those weights. Plain crops alone overfit the 480 images:
    12 such epochs left the MPII teacher at PCKh 42-46, below its students; the two phases reach 90.2 on the same
    data (``benchmarks/bench_fidelity.py``, docs/training.md).
    """
    torch.set_num_threads(1)  # the two teachers train side by side, one core each
    params = dataset_parameters(dataset)
    source = DistillParams.model_validate(params).source(dataset)
    out = Path(params["teacher"]["checkpoint"]).parent

    def phase(augment: bool, epochs: int, milestones: tuple[int, ...], folder: Path, init: Path | None) -> Path:
        config = TrainConfig(
            student_preset=params["teacher"]["preset"],
            student_init=None if init is None else str(init),
            data=DataConfig(
                labelled=(source.train_spec,), augment=augment, batch_size=sizes.teacher_batch_size, workers=0
            ),
            optim=OptimConfig(lr=sizes.teacher_lr, epochs=epochs, milestones=milestones),
            loss=LossConfig(alpha=0.0),
            output_dir=str(folder),
            device="cpu",
            seed=sizes.seed,
            progress=False,  # its log gets one line per epoch, which run.sh shows
        )
        return train(config).weights

    logging.getLogger(__name__).warning("phase 1/2: %d epochs on plain crops", sizes.teacher_plain_epochs)
    plain = phase(False, sizes.teacher_plain_epochs, (), out / "plain", None)
    logging.getLogger(__name__).warning("phase 2/2: %d epochs with augmentation", sizes.teacher_epochs)
    return phase(True, sizes.teacher_epochs, sizes.teacher_milestones, out, plain)


def install_shipped_teachers() -> list[Path]:
    """Copy the shipped teachers' weights (and their sidecars) to where the deployment parameters expect them.

    They are what ``train_teacher`` gives on this demo's generated data (deterministic from ``DemoSizes.seed``):
    shipping them saves the demo the teachers' training, about half its time on 2 cores, as a real run starts from
    a published teacher checkpoint. ``FPD_DEMO_TRAIN_TEACHERS=1 make demo`` trains them anew instead.
    """
    installed = []
    for dataset in ("mpii", "coco"):
        target = Path(dataset_parameters(dataset)["teacher"]["checkpoint"])
        source = SHIPPED_TEACHERS / target.parent.name
        target.parent.mkdir(parents=True, exist_ok=True)
        for name in (target.name, target.name + ".json"):
            shutil.copyfile(source / name, target.parent / name)
        installed.append(target)
    return installed


def add_folder(sizes: DemoSizes) -> Path:
    """Drop a new unlabeled folder into the demo's unlabeled root."""
    folder = OUT / "data/unlabeled/folder_new"
    generate_unlabeled_folder(
        folder, sizes.new_folder_images, seed=sizes.seed + 100, config=sizes.scenes(), detections=True
    )
    return folder


def cancel_running() -> int:
    """Cancel every flow run still Running or Pending (before the demo stops its worker)."""
    active = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
        any_=[StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED])))  # fmt: skip
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=active)
        for run in runs:
            client.set_flow_run_state(run.id, Cancelling(), force=True)
    return len(runs)


def _metrics(dataset: str) -> list[dict[str, object]]:
    return json.loads((OUT / "runs" / dataset / "metrics.json").read_text())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python demo/demo.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("data", help="generate the datasets and unlabeled folders; put the shipped teachers in place")
    sub.add_parser("teacher", help="train a tiny teacher on ground truth").add_argument("dataset")
    sub.add_parser("params", help="print the demo parameters of a dataset as JSON").add_argument("dataset")
    sub.add_parser("table", help="print the evaluation table of runs").add_argument("datasets", nargs="+")
    sub.add_parser("add-folder", help="drop a new unlabeled folder in")
    sub.add_parser("cancel-running", help="cancel active flow runs")
    summary = sub.add_parser("summary", help="COCO's table, what the MPII re-run inferred, where the outputs are")
    summary.add_argument("--api", default="")
    summary.add_argument("--seconds", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    sizes = DemoSizes()

    if args.command == "data":
        generate_data(sizes)
        for path in install_shipped_teachers():
            meta = read_weights_metadata(path) or {}
            print(f"   teacher {meta.get('preset', '?')} ({meta.get('num_params', 0):,} parameters, shipped in "
                  f"{SHIPPED_TEACHERS.relative_to(REPO)}): {path}")
    elif args.command == "teacher":
        # Its per-epoch lines go to the teacher's log, which run.sh shows as the teachers train.
        logging.getLogger("pipeline.training.loop").setLevel(logging.INFO)
        print(f"   teacher for {args.dataset}: {train_teacher(args.dataset, sizes)}")
    elif args.command == "params":
        print(json.dumps(dataset_parameters(args.dataset)))
    elif args.command == "table":
        print(format_table([row for dataset in args.datasets for row in _metrics(dataset)]))
    elif args.command == "add-folder":
        print(f"   new folder: {add_folder(sizes)} ({sizes.new_folder_images} images)")
    elif args.command == "cancel-running":
        print(f"cancelled {cancel_running()} flow runs")
    elif args.command == "summary":
        print(format_table(_metrics("coco")))
        run = json.loads((OUT / "runs/mpii/run.json").read_text())
        print("== run 3, MPII with the new folder:")
        for source in run["sources"]:
            print(f"   {source['source']}: {source['new_images']} of {source['images']} images inferred")
        print(f"   teacher inference this run: {run['inferred']} samples")
        print(format_table(_metrics("mpii")))
        ui = args.api.removesuffix("/api")
        print(f"== done in {args.seconds} s")
        print(f"   Prefect UI (while a server runs on it): {ui}  (database: {OUT}/prefect_home)")
        print(f"   browse later: PREFECT_HOME={OUT}/prefect_home .venv/bin/prefect server start --host 127.0.0.1")
        print(f"   teacher caches: {OUT}/cache/mpii, {OUT}/cache/coco (fpd cache inspect <folder>)")
        print(f"   overlays: {OUT}/runs/*/overlays/index.html;  report, metrics: {OUT}/runs/*/report.md, metrics.json")
        print(f"   checkpoints: {OUT}/teachers/*/weights.pt, {OUT}/runs/*/students/*/weights.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
