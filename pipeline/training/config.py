"""Typed training recipe: frozen dataclasses loaded from YAML, with clear errors on unknown keys and wrong types.

A recipe file mirrors :class:`TrainConfig`: top-level student/teacher fields and run settings, and the nested
sections ``data``, ``optim``, ``loss`` and ``eval``. ``--set optim.lr=5e-4`` style overrides are applied to the
parsed mapping before it is typed, so they get the same checks as the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A recipe that cannot be used; the message names the offending key (dotted path)."""


@dataclass(frozen=True)
class LabelledSource:
    """One annotated dataset split: ``format`` picks the loader (``pipeline.data.mpii`` / ``pipeline.data.coco``)."""

    format: Literal["mpii", "coco"]
    root: str
    split: str


@dataclass(frozen=True)
class DataConfig:
    """What the student trains on.

    Attributes:
        labelled: annotated splits (GT term, and teacher term when a teacher is set).
        unlabeled: unlabeled sources, each either a teacher-cache source name (``"folder/street"``) or a folder
            path scanned with ``pipeline.data.folders.scan_folder``. They train on the teacher term alone.
        teacher_cache: path of the ``storage.cache.TeacherTargetCache``; None trains without cached targets
            (ground truth alone, or ``teacher_online``).
        augment: random scale/rotation/flip/half-body (HRNet defaults of ``pipeline.augment.AugmentConfig``).
        batch_size: samples per process and step.
        workers: DataLoader worker processes per process.
    """

    labelled: tuple[LabelledSource, ...] = ()
    unlabeled: tuple[str, ...] = ()
    teacher_cache: str | None = None
    augment: bool = True
    batch_size: int = 32
    workers: int = 4


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and step schedule. Weight decay is decoupled (AdamW) and skips BatchNorm weights and biases."""

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 210
    milestones: tuple[int, ...] = (170, 200)
    gamma: float = 0.1


@dataclass(frozen=True)
class LossConfig:
    """FPD loss options (see :class:`pipeline.training.loss.FPDLoss`)."""

    alpha: float = 0.5
    use_ground_truth: bool = True
    confidence_weighting: bool = False
    confidence_clip: tuple[float, float] = (0.0, 1.0)
    min_teacher_confidence: float = 0.0


@dataclass(frozen=True)
class EvalConfig:
    """Validation with flip test every ``every`` epochs; ``format: null`` switches it off.

    ``metric`` is the key of the result table that picks the best checkpoint (``Mean`` for PCKh, ``AP`` for COCO).
    """

    format: Literal["mpii", "coco"] | None = None
    root: str | None = None
    split: str = "valid"
    every: int = 10
    batch_size: int = 32
    flip: bool = True
    detections: str | None = None
    metric: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        student_preset: ``models`` preset of the network being trained.
        student_init: optional checkpoint to start from (loaded with strict=True).
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
    """

    student_preset: str
    student_init: str | None = None
    teacher_preset: str | None = None
    teacher_checkpoint: str | None = None
    teacher_online: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs/train"
    device: str = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    compile: bool = False
    channels_last: bool = False
    seed: int = 0
    resume: bool = False

    def __post_init__(self) -> None:
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
        if self.eval.format is not None and self.eval.root is None:
            raise ConfigError("eval.root: required when eval.format is set")

    @property
    def best_metric_key(self) -> str:
        """Result-table key that ranks checkpoints: ``eval.metric`` or the dataset's headline number."""
        return self.eval.metric or ("AP" if self.eval.format == "coco" else "Mean")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML recipe, apply ``key.sub=value`` overrides (values parsed as YAML) and type-check it."""
    path = Path(path)
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the recipe must be a mapping at the top level")
    try:
        return config_from_dict(apply_overrides(raw, overrides))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``dotted.key=value`` set (the value parsed as YAML: numbers, lists, null...)."""
    result: dict[str, Any] = _deep_copy(raw)
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
        node[parts[-1]] = yaml.safe_load(text)
    return result


def config_from_dict(raw: Mapping[str, Any]) -> TrainConfig:
    """Type a plain mapping (as read from YAML) into a :class:`TrainConfig`."""
    result = _build(TrainConfig, raw, "")
    assert isinstance(result, TrainConfig)
    return result


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain-data form (lists, not tuples) for YAML dumps and checkpoint metadata; round-trips through
    :func:`config_from_dict`."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where or 'recipe'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            raise ConfigError(f"unknown key {_join(where, str(key))!r}{hint}")
    kwargs = {key: _coerce(hints[key], value, _join(where, key)) for key, value in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where or 'recipe'}: {exc}") from None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: no allowed type fits {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # PyYAML reads ``1e-3`` (no dot) as a string, a classic recipe trap: accept any float literal.
        try:
            return float(value)
        except ValueError:
            pass
    # bool is an int subclass: ``epochs: true`` must not pass as 1.
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {type(value).__name__} {value!r}")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``fpd train`` and ``python -m pipeline.training.loop`` (the torchrun entry)."""
    parser.add_argument("--config", required=True, help="YAML recipe (see configs/ and docs/training.md)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint.pt")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe value, dotted keys, YAML values (e.g. --set optim.lr=5e-4 --set data.workers=0)",
    )
