"""Typed training recipe: frozen pydantic models loaded from YAML, with clear errors on unknown keys and wrong types.

A recipe file mirrors :class:`TrainConfig`: top-level student/teacher fields and run settings, and the nested
sections ``data``, ``optim``, ``loss`` and ``eval``. ``--set optim.lr=5e-4`` style overrides are applied to the
parsed mapping before it is typed, so they get the same checks as the file. Pydantic does the typing; this module
only turns its ``ValidationError`` into one :class:`ConfigError` whose message names the dotted key.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from pipeline.augment import AugmentConfig
from pipeline.data.sources import SourceSpec

LABELLED_KINDS = ("mpii", "coco")
"""Source kinds that carry annotations (``pipeline.data.sources.SOURCE_KINDS`` minus ``folder``)."""


class ConfigError(ValueError):
    """A recipe that cannot be used; the message names the offending key (dotted path)."""


def _not_bool(value: Any) -> Any:
    # Pydantic's lax float takes ``true`` as 1.0 (bool is an int subclass); a recipe that says ``lr: true`` is a
    # mistake. Lax mode is kept for the rest: ints, and strings such as ``1e-3``, which PyYAML reads as a string.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got bool {value!r}")
    return value


Float = Annotated[float, BeforeValidator(_not_bool)]


def _labelled_entry(value: Any) -> Any:
    """Before-validator of one ``data.labelled`` entry: an annotated kind (mpii, coco) and a split.

    ``SourceSpec`` allows ``folder`` and an empty split, both meaningless for a labelled split. A ``SourceSpec``
    instance is turned back into a mapping so that it is validated like YAML input (a ``str`` root becomes a
    ``Path``; pydantic passes dataclass instances through unchecked otherwise).
    """
    if isinstance(value, SourceSpec):
        value = dataclasses.asdict(value)
    if not isinstance(value, Mapping) or not set(value) <= {"kind", "root", "split"}:
        return value  # pydantic names the wrong type or the unknown key
    kind = value.get("kind")
    if kind == "folder":
        raise ValueError("kind: folder has no annotations; list folders in data.unlabeled")
    if kind not in LABELLED_KINDS:
        raise ValueError(f"kind: expected one of {list(LABELLED_KINDS)}, got {kind!r}")
    if not value.get("split"):
        raise ValueError("split: required for a labelled source (e.g. train, train2017)")
    return value


LabelledSpec = Annotated[SourceSpec, BeforeValidator(_labelled_entry)]


class _Section(BaseModel):
    # Frozen: a recipe is shared by the loop, the checkpoint and the flow's hash, so it must never change under
    # them (derive a new one with ``model_copy(update=...)``); unknown keys are typos, not extensions.
    model_config = ConfigDict(frozen=True, extra="forbid")


def _augment_entry(value: Any) -> Any:
    """``augment: true/false`` is short for ``augment: {enabled: ...}`` (every parameter at its dataset default)."""
    return {"enabled": value} if isinstance(value, bool) else value


class AugmentSection(_Section):
    """HRNet's training augmentation (``pipeline.augment.sample_crop``); every parameter of its config is a key.

    A parameter left unset (null) takes HRNet's value for the dataset (``AugmentConfig.for_dataset``: COCO scale
    0.35, rotation 45, half-body 0.3; MPII scale 0.25, rotation 30, no half-body). The rotation and flip
    probabilities (0.6, 0.5) are constants in HRNet's ``JointsDataset``; they are keys here so that a recipe
    states them.

    Attributes:
        enabled: False crops each record's box as is (no random draw).
        scale_factor: HRNet ``SCALE_FACTOR``. rotation_factor: ``ROT_FACTOR`` (degrees).
        rotation_prob: probability of rotating at all. flip: ``FLIP``. flip_prob: probability of a flip.
        half_body_prob: ``PROB_HALF_BODY`` (0 switches it off; HRNet writes -1). half_body_num_joints:
            ``NUM_JOINTS_HALF_BODY`` (half-body is tried with more visible joints than this).
    """

    enabled: StrictBool = True
    scale_factor: Float | None = None
    rotation_factor: Float | None = None
    rotation_prob: Float | None = None
    flip: StrictBool | None = None
    flip_prob: Float | None = None
    half_body_prob: Float | None = None
    half_body_num_joints: StrictInt | None = None

    def resolve(self, dataset: str) -> AugmentConfig | None:
        """The augmentation a ``dataset`` ("mpii", "coco") sample gets: its defaults with the keys set here."""
        if not self.enabled:
            return None
        given = {name: value for name, value in self if name != "enabled" and value is not None}
        return dataclasses.replace(AugmentConfig.for_dataset(dataset), **given)


class DataConfig(_Section):
    """What the student trains on.

    Attributes:
        labelled: annotated splits (GT term, and teacher term when a teacher is set); ``kind`` mpii or coco.
        unlabeled: unlabeled sources, each either a teacher-cache source name (``"folder/street"``) or a folder
            path scanned with ``pipeline.data.folders.scan_folder``. They train on the teacher term alone.
        teacher_cache: path of the ``storage.cache.TeacherTargetCache``; None trains without cached targets
            (ground truth alone, or ``teacher_online``).
        augment: random scale/rotation/flip/half-body (:class:`AugmentSection`; ``true`` / ``false`` for all
            defaults / none).
        batch_size: the GLOBAL batch, samples per optimiser step over all processes (the paper's batch); each of
            the world's N processes loads ``batch_size / N`` (``pipeline.training.recipe.resolve_recipe``).
        workers: DataLoader worker processes per process.
    """

    labelled: tuple[LabelledSpec, ...] = ()
    unlabeled: tuple[str, ...] = ()
    teacher_cache: str | None = None
    augment: Annotated[AugmentSection, BeforeValidator(_augment_entry)] = Field(default_factory=AugmentSection)
    batch_size: StrictInt = 32
    workers: StrictInt = 4


class OptimConfig(_Section):
    """Optimiser and step schedule. Weight decay is decoupled (AdamW) and skips BatchNorm weights and biases.

    Attributes:
        lr: the learning rate at ``reference_batch``.
        milestones: HRNet's ``LR_STEP``, with HRNet's timing (``pipeline.training.schedule.build_scheduler``).
        reference_batch: the global batch ``lr`` was tuned for (the paper's); None: ``data.batch_size``.
        scale_lr: apply the linear scaling rule, ``lr * data.batch_size / reference_batch`` (off: HRNet and FPD
            never rescale; a changed batch is then only reported).
    """

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: Float = 1e-3
    weight_decay: Float = 0.0
    epochs: StrictInt = 210
    milestones: tuple[StrictInt, ...] = (170, 200)
    gamma: Float = 0.1
    reference_batch: StrictInt | None = None
    scale_lr: StrictBool = False


class LossConfig(_Section):
    """FPD loss options (see :class:`pipeline.training.loss.FPDLoss`)."""

    alpha: Float = 0.5
    use_ground_truth: StrictBool = True
    confidence_weighting: StrictBool = False
    confidence_clip: tuple[Float, Float] = (0.0, 1.0)
    min_teacher_confidence: Float = 0.0
    teacher_seen_only: StrictBool = False


class EvalConfig(_Section):
    """Validation with flip test every ``every`` epochs; ``dataset: null`` switches it off.

    ``metric`` is the key of the result table that picks the best checkpoint (``Mean`` for PCKh, ``AP`` for COCO).
    """

    dataset: Literal["mpii", "coco"] | None = None
    root: str | None = None
    split: str = "valid"
    every: StrictInt = 10
    batch_size: StrictInt = 32
    flip: StrictBool = True
    detections: str | None = None
    metric: str | None = None


class TrainConfig(_Section):
    """One training run.

    Attributes:
        student_preset: ``models`` preset of the network being trained.
        student_init: optional pose checkpoint of this preset to start from (loaded with strict=True).
        student_backbone: optional ImageNet weights for the backbone (loaded by key name and shape, as HRNet's
            ``MODEL.PRETRAINED``); the pose head stays freshly initialised. Exclusive with ``student_init``.
        teacher_preset: preset of the teacher, needed with ``teacher_online``.
        teacher_checkpoint: teacher weights for ``teacher_online``.
        teacher_online: run the teacher on each augmented crop (reference mode, no flip test) instead of the cache.
        output_dir: checkpoints, exported weights and ``log.jsonl`` go here.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``.
        amp: ``"none"``, ``"bf16"`` (autocast), or ``"fp16"`` (autocast + GradScaler, CUDA only).
        compile: wrap the student in ``torch.compile``.
        channels_last: NHWC memory format for the student and its inputs.
        seed: seeds the sampler, the augmentation and the initial weights.
        resume: continue from ``output_dir/checkpoint.pt`` when it exists.
        progress: a per-step progress bar on rank 0 (off for logs that must stay clean, e.g. tests).
    """

    student_preset: str
    student_init: str | None = None
    student_backbone: str | None = None
    teacher_preset: str | None = None
    teacher_checkpoint: str | None = None
    teacher_online: StrictBool = False
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output_dir: str = "runs/train"
    device: str = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    compile: StrictBool = False
    channels_last: StrictBool = False
    seed: StrictInt = 0
    resume: StrictBool = False
    progress: StrictBool = True

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        """Cross-field checks: each message names the keys to change."""
        if not 0.0 <= self.loss.alpha <= 1.0:
            raise ConfigError(f"loss.alpha: must be in [0, 1], got {self.loss.alpha}")
        has_teacher = self.data.teacher_cache is not None or self.teacher_online
        if self.loss.alpha > 0 and not has_teacher:
            raise ConfigError("loss.alpha > 0 needs a teacher: set data.teacher_cache or teacher_online: true")
        if self.data.unlabeled and not has_teacher:
            raise ConfigError("data.unlabeled sources train on the teacher alone: set data.teacher_cache")
        if not self.loss.use_ground_truth and not has_teacher:
            raise ConfigError("loss.use_ground_truth: false leaves nothing to learn from without a teacher")
        if self.teacher_online and (self.teacher_preset is None or self.teacher_checkpoint is None):
            raise ConfigError("teacher_online: true needs teacher_preset and teacher_checkpoint")
        if not self.data.labelled and not self.data.unlabeled:
            raise ConfigError("data: no labelled or unlabeled source to train on")
        if self.optim.epochs < 1 or self.data.batch_size < 1 or self.eval.every < 1:
            raise ConfigError("optim.epochs, data.batch_size and eval.every must be >= 1")
        if any(m < 1 for m in self.optim.milestones) or (self.optim.reference_batch or 1) < 1:
            raise ConfigError("optim.milestones and optim.reference_batch must be >= 1")
        if self.eval.dataset is not None and self.eval.root is None:
            raise ConfigError("eval.root: required when eval.dataset is set")
        if self.student_init is not None and self.student_backbone is not None:
            raise ConfigError("student_init and student_backbone: give one (a pose checkpoint or ImageNet weights)")
        if self.eval.dataset == "mpii" and self.eval.detections is not None:
            raise ConfigError("eval.detections: MPII is scored on its annotated person boxes; detections are COCO's")
        return self

    @property
    def best_metric_key(self) -> str:
        """Result-table key that ranks checkpoints: ``eval.metric`` or the dataset's headline number."""
        return self.eval.metric or ("AP" if self.eval.dataset == "coco" else "Mean")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML recipe, apply ``key.sub=value`` overrides (values parsed as YAML) and type-check it.

    Raises:
        ConfigError: one line starting with the file (and ``line L, column C`` for a YAML syntax error): no such
            file, a directory, not UTF-8 text, invalid YAML, empty, not a mapping, or a key with a bad value.
    """
    path = Path(path)
    raw = _read_yaml(path)
    if raw is None:
        raise ConfigError(f"{path}: the recipe is empty; it needs at least student_preset and data (see configs/)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the recipe must be a mapping of keys (student_preset: ..., data: ...) at the top "
                          f"level, got a {type(raw).__name__}")  # fmt: skip
    try:
        return config_from_dict(apply_overrides(raw, overrides))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _read_yaml(path: Path) -> Any:
    """The parsed file; every way of not being a readable YAML file becomes a ConfigError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such recipe file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a recipe file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}); a recipe is YAML text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the recipe: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML {_yaml_error(exc)}") from None


def _yaml_error(exc: yaml.YAMLError) -> str:
    """PyYAML's reason on one line, after ``at line L, column C`` (1-based, as editors count) when it knows them;
    its ``str`` spans several lines, with a copy of the offending text."""
    mark = getattr(exc, "problem_mark", None)
    where = f"at line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + (getattr(exc, "problem", None) or str(exc).splitlines()[0])


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``dotted.key=value`` set (the value parsed as YAML: numbers, lists, null...)."""
    result: dict[str, Any] = copy.deepcopy(dict(raw))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({_yaml_error(exc)})") from None
    return result


def config_from_dict(raw: Mapping[str, Any]) -> TrainConfig:
    """Type a plain mapping (as read from YAML) into a :class:`TrainConfig`; every problem in one ConfigError."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(error) for error in exc.errors())) from None


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain-data form (lists and strings, not tuples and paths) for YAML dumps and checkpoint metadata;
    round-trips through :func:`config_from_dict`."""
    return config.model_dump(mode="json")


# Which class types the mapping at a dotted path (list indices dropped): the keys a typo is matched against.
_SECTIONS: dict[str, type] = {
    "": TrainConfig, "data": DataConfig, "optim": OptimConfig, "loss": LossConfig, "eval": EvalConfig,
    "data.labelled": SourceSpec, "data.augment": AugmentSection,
}


def _dotted(loc: Sequence[int | str]) -> str:
    """``("data", "labelled", 0, "kind")`` -> ``data.labelled[0].kind``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: ErrorDetails) -> str:
    """One pydantic error as ``dotted.key: what is wrong, got TYPE VALUE`` (or ``unknown key ...``)."""
    loc = error["loc"]
    where = _dotted(loc) or "recipe"
    kind = error["type"]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):  # the latter: an extra key of a dataclass
        section = _SECTIONS.get(".".join(str(p) for p in loc[:-1] if isinstance(p, str)))
        known = (list(section.model_fields) if isinstance(section, type) and issubclass(section, BaseModel)
                 else [f.name for f in dataclasses.fields(section)] if section is not None else [])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})" if known else ""
        return f"unknown key {where!r}{hint}"
    if kind in ("missing", "missing_argument"):
        return f"{where}: required"
    if kind == "value_error":
        # Our own message (from a validator or ``SourceSpec``), without pydantic's "Value error, " prefix; the
        # cross-field checks of TrainConfig (loc ()) already name their keys.
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        return message if not loc else f"{where}: {message}"
    value = error.get("input")
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{where}: {error['msg']}, got {type(value).__name__} {shown}"


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``fpd train`` and ``python -m pipeline.training.loop`` (the torchrun entry)."""
    parser.add_argument("--config", required=True, help="YAML recipe (see configs/ and docs/training.md)")
    # One of the two, or neither: an output folder that already holds a run is refused without one of them.
    restart = parser.add_mutually_exclusive_group()
    restart.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint.pt")
    restart.add_argument(
        "--overwrite", action="store_true",
        help="start over in an OUTPUT_DIR that holds a previous run (removes its checkpoint, weights and log)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe value, dotted keys, YAML values (e.g. --set optim.lr=5e-4 --set data.workers=0)",
    )
