"""Typed parameters of ``distill-flow``: one pydantic model, so the Prefect UI renders a form and rejects bad runs.

The model is the one config object of a run (house style: built and validated at the edge). The flow unpacks it
into the explicit arguments of the tasks: source specs, a shard job, a training recipe (``TrainConfig``), paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.data.sources import SourceSpec
from pipeline.detection.settings import DetectorSettings
from pipeline.runtime import resolve_device
from pipeline.students import FpdInit
from pipeline.teacher.shards import ShardJob
from pipeline.training.config import DataConfig, EvalConfig, LossConfig, OptimConfig, TrainConfig

Dataset = Literal["mpii", "coco"]
Baseline = Literal["gt_only", "fpd_labelled"]
"""Extra students trained for comparison: ``gt_only`` (alpha=0, no teacher), ``fpd_labelled`` (no unlabeled data)."""

DEFAULT_SPLITS: dict[str, tuple[str, str]] = {"mpii": ("train", "valid"), "coco": ("train2017", "val2017")}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TeacherParams(_Frozen):
    """The teacher whose flip-test heatmaps fill the cache."""

    preset: str = Field("hg8_256", description="models preset name, e.g. hg8_256, hrnet_w48_256x192")
    checkpoint: str = Field(..., description="teacher weights (.pth); its sha256 is part of the cache identity")


class StudentParams(_Frozen):
    """The student trained on ground truth and cached teacher heatmaps, and where each variant starts.

    By default the FPD students fine-tune a ground-truth student, as FPD does: ``gt_checkpoint`` when given, else
    the run's ``gt_only`` (trained first, and shown in the table, even when ``baselines`` does not list it).
    """

    preset: str = Field("hg4_128", description="models preset name, e.g. hg4_128, hrnet_w32_256x192")
    fpd_init: FpdInit = Field(
        "gt_student", description="FPD students start from a ground-truth student (FPD's recipe) or 'scratch' (FPD*)"
    )
    gt_checkpoint: str | None = Field(
        None, description="a ground-truth-trained student of this preset for the FPD students to fine-tune "
        "(FPD's TRAIN.CHECKPOINT); None: the run trains gt_only first",
    )  # fmt: skip
    backbone: str | None = Field(
        None, description="ImageNet weights (HRNet hrnet_w32-36af842e.pth layout, torchvision ResNet) for students "
        "that start without pose weights: gt_only, and the FPD students with fpd_init 'scratch'",
    )  # fmt: skip

    @model_validator(mode="after")
    def _check_init(self) -> StudentParams:
        if self.fpd_init == "scratch" and self.gt_checkpoint is not None:
            raise ValueError("gt_checkpoint is where the FPD students start: drop it, or fpd_init 'scratch'")
        return self


class LabelledDataset(_Frozen):
    """One labelled dataset root in its genuine layout (MPII: annot/*.json + images/; COCO: annotations/ + images/)."""

    dataset: Dataset
    root: str
    train_split: str | None = Field(None, description="defaults: mpii 'train', coco 'train2017'")
    val_split: str | None = Field(None, description="defaults: mpii 'valid', coco 'val2017'")

    @property
    def train(self) -> str:
        return self.train_split or DEFAULT_SPLITS[self.dataset][0]

    @property
    def val(self) -> str:
        return self.val_split or DEFAULT_SPLITS[self.dataset][1]

    @property
    def train_spec(self) -> SourceSpec:
        """The training split as the loaders name a source."""
        return SourceSpec(self.dataset, Path(self.root), self.train)


class ScheduleParams(_Frozen):
    """Student optimisation schedule (Adam with step decay, as in HRNet and FPD)."""

    epochs: int = Field(140, ge=1)
    lr: float = Field(1e-3, gt=0)
    milestones: list[int] = Field(default_factory=lambda: [90, 120])
    batch_size: int = Field(32, ge=1)
    augment: bool = Field(True, description="random scale / rotation / flip / half-body (HRNet defaults)")
    seed: int = 0


class DeviceParams(_Frozen):
    """Where and how fast: the worker's visible GPUs are used; ``cpu`` forces CPU."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    num_workers: int = Field(4, ge=0, description="data-loading processes per training / inference process")
    inference_batch_size: int = Field(64, ge=1)
    torch_threads: int | None = Field(None, ge=1, description="CPU threads per process (None: torch default)")


_DETECTOR = DetectorSettings()  # the detection stage's defaults live in one place


class DetectorParams(_Frozen):
    """How the persons of the unlabeled folders are found (a folder's own ``detections.json`` always wins)."""

    person_boxes: Literal["detector", "whole_image"] = Field(
        "detector", description="'detector': a torchvision person detector runs first (``fpd detect``); "
        "'whole_image': each image is one person (folders of single-person crops)",
    )  # fmt: skip
    model: str = Field(_DETECTOR.model, description="torchvision detector; auto: Faster R-CNN R50-FPN v2 on CUDA, "
                       "MobileNet-v3 FPN on CPU")  # fmt: skip
    weights: str | None = Field(None, description="local weights file (None: torchvision's cache under TORCH_HOME)")
    score_threshold: float = Field(_DETECTOR.score_threshold, ge=0.0, le=1.0, description="lowest person score kept")
    nms_threshold: float = Field(_DETECTOR.nms_threshold, ge=0.0, le=1.0)
    min_box_size: float = Field(_DETECTOR.min_box_size, ge=0.0, description="smallest sqrt(w*h) kept, in pixels")
    max_persons: int = Field(_DETECTOR.max_persons, ge=1, description="most persons kept per image")
    min_size: int | None = Field(None, ge=1, description="detector input's shorter side (None: the model's)")
    max_size: int | None = Field(None, ge=1, description="detector input's longer side (None: the model's)")
    batch_size: int | None = Field(None, ge=1, description="images per detector forward (None: 1 on CPU, 8 on CUDA)")
    store_dir: str | None = Field(None, description="detection store (None: <cache_dir>/detections)")

    def settings(self, amp: bool) -> DetectorSettings:
        """The detection stage's settings (``amp``: the run's device setting)."""
        fields = self.model_dump(exclude={"person_boxes", "batch_size", "store_dir"})
        return DetectorSettings(**fields, amp=amp)


class DistillParams(_Frozen):
    """Everything one ``distill-flow`` run needs."""

    teacher: TeacherParams
    student: StudentParams = StudentParams()
    labelled: list[LabelledDataset] = Field(..., min_length=1)
    unlabeled_roots: list[str] = Field(
        default_factory=list, description="every sub-folder of each root is a source; new folders are picked up"
    )
    cache_dir: str = Field(..., description="teacher cache folder (shared by all workers and runs)")
    output_dir: str = Field(..., description="checkpoints, metrics.json, report.md, overlays")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the teacher loss; 1 - alpha on ground truth")
    use_ground_truth: bool = True
    baselines: list[Baseline] = Field(
        default_factory=list,
        description="extra students for the comparison table (gt_only also trains when the FPD students start from it)",
    )
    schedule: ScheduleParams = ScheduleParams()
    eval_datasets: list[Dataset] = Field(
        default_factory=list, description="validation sets to score teacher and students on (flip test)"
    )
    coco_detections: str | None = Field(None, description="person detections json for COCO val (None: GT boxes)")
    detector: DetectorParams = DetectorParams()
    device: DeviceParams = DeviceParams()
    num_shards: int = Field(1, ge=1, description="teacher-inference shards run side by side")
    shard_deployment: str | None = Field(
        None, description="run each shard as a run of this deployment (e.g. 'teacher-inference/shard') on any worker"
    )
    render_overlays: int = Field(4, ge=0, description="cached heatmaps rendered over their crops for the report")

    @model_validator(mode="after")
    def _check_consistency(self) -> DistillParams:
        datasets = [s.dataset for s in self.labelled]
        if len(set(datasets)) != len(datasets):
            raise ValueError(f"one labelled source per dataset, got {datasets}")
        if len(set(datasets)) > 1:
            # A heatmap channel means one joint set: MPII and COCO need separate runs (teachers differ).
            raise ValueError("MPII and COCO have different joint sets: run distill-flow once per dataset")
        missing = sorted(set(self.eval_datasets) - set(datasets))
        if missing:
            raise ValueError(f"eval_datasets {missing} needs a labelled source of that dataset")
        return self

    def source(self, dataset: Dataset) -> LabelledDataset:
        """The labelled source of ``dataset``."""
        return next(s for s in self.labelled if s.dataset == dataset)

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)

    @property
    def detection_store(self) -> str | None:
        """Where the unlabeled folders' person boxes are kept; None in whole-image mode."""
        if self.detector.person_boxes == "whole_image":
            return None
        return self.detector.store_dir or str(Path(self.cache_dir) / "detections")

    @property
    def plan_path(self) -> Path:
        """Where discovery writes the inference plan (the shards' reports go beside it)."""
        return self.output_path / "inference" / "plan.json"

    def shard_job(self, shard_index: int = 0) -> ShardJob:
        """Shard ``shard_index`` of this run's teacher inference."""
        return ShardJob(
            teacher_preset=self.teacher.preset, teacher_checkpoint=self.teacher.checkpoint, cache_dir=self.cache_dir,
            plan_path=str(self.plan_path), shard_index=shard_index, num_shards=self.num_shards,
            batch_size=self.device.inference_batch_size, device=self.device.device,
            num_workers=self.device.num_workers, torch_threads=self.device.torch_threads,
        )  # fmt: skip

    def base_train_config(self) -> TrainConfig:
        """The students' common recipe: labelled data, schedule, device; each variant adds its start, loss, teacher.

        Ground truth alone (alpha 0) until ``pipeline.students.variant_config`` sets the variant's loss and cache.
        Validation during training is off: the flow scores every model the same way afterwards.
        """
        on_cuda = resolve_device(self.device.device).type == "cuda"
        return TrainConfig(
            student_preset=self.student.preset,
            data=DataConfig(
                labelled=tuple(s.train_spec for s in self.labelled), augment=self.schedule.augment,
                batch_size=self.schedule.batch_size, workers=self.device.num_workers,
            ),
            optim=OptimConfig(lr=self.schedule.lr, epochs=self.schedule.epochs,
                              milestones=tuple(self.schedule.milestones)),
            loss=LossConfig(alpha=0.0),
            eval=EvalConfig(dataset=None),
            device=self.device.device,
            amp="bf16" if self.device.amp and on_cuda else "none",
            seed=self.schedule.seed,
            resume=True,
        )  # fmt: skip
