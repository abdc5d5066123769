"""Reading and writing network weights: every checkpoint layout of the FPD / HRNet world through one loader.

Accepted layouts (detected, reported as ``LoadReport.source_format``):

- ``state_dict``: a bare ``{key: tensor}`` (``model_best.pth``, ``final_state.pth``, released ``pose_*.pth``,
  files written by ``save_weights``);
- ``hrnet_training``: HRNet / official FPD ``checkpoint.pth`` ``{epoch, model, state_dict, best_state_dict, perf,
  optimizer}`` (``state_dict`` preferred, ``best_state_dict`` as fall-back);
- ``unofficial_training``: yuanyuanli85 / bearpaw ``{epoch, arch, state_dict, best_acc, optimizer}``;
- ``training_state``: this project's resumable training state ``{model, optimizer, ...}``.

Keys may carry ``module.`` (DataParallel / DDP) or ``_orig_mod.`` (torch.compile) prefixes; old files without
BatchNorm ``num_batches_tracked`` get zeros, as PyTorch itself does for pre-1.0 files. Files are always read with
``torch.load(weights_only=True, map_location="cpu")``; only numpy scalars and arrays (HRNet stores ``perf`` as a
numpy float) are allow-listed on top of PyTorch's defaults.

``save_weights`` writes a bare state_dict (so the file also loads with a plain ``load_state_dict``) and its
metadata in a sidecar JSON next to it: ``<file>.json`` (see ``metadata_path``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from storage.atomic import atomic_write
from storage.hashing import sha256_file

_PREFIXES = ("module.", "_orig_mod.")
_SHOWN = 5  # keys listed per category in error messages
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

try:
    from numpy._core import multiarray as _multiarray  # numpy >= 2
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray

# numpy scalar / array reconstruction: data only, no code. Files name these functions after the numpy version that
# pickled them (``numpy.core`` in 1.x, ``numpy._core`` in 2.x), so both spellings are allowed.
_NUMPY_GLOBALS: list[Any] = [
    np.dtype,
    np.ndarray,
    *(type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"),
    *(
        (function, f"numpy.{package}.multiarray.{function.__name__}")
        for function in (_multiarray.scalar, _multiarray._reconstruct)
        for package in ("core", "_core")
    ),
]


class CheckpointError(ValueError):
    """A checkpoint file cannot be read (truncated, not a checkpoint, refused by ``weights_only``)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's keys or shapes do not match the model."""


@dataclass(frozen=True)
class LoadReport:
    """What a load did.

    Attributes:
        path: the file.
        source_format: the detected layout (see the module docstring).
        loaded: model keys that received a tensor from the file (``filled`` counters included).
        missing: model keys absent from the file (left as initialised; empty after a strict load).
        unexpected: file keys the model does not have (ignored).
        mismatched: ``(key, file shape, model shape)`` for keys present in both with different shapes (ignored).
        filled: ``num_batches_tracked`` keys absent from an old file and set to 0.
        info: small non-tensor entries of a training dict (``epoch``, ``perf``, ``best_acc``, ``arch``, ...).
    """

    path: str
    source_format: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    filled: tuple[str, ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> tuple[str, ...]:
        """File keys that were not loaded (unexpected or wrongly shaped)."""
        return self.unexpected + tuple(key for key, _, _ in self.mismatched)


def _short_reason(exc: BaseException) -> str:
    """One readable line from torch.load's (multi-paragraph, ANSI-coloured) error messages."""
    text = _ANSI.sub("", str(exc)).strip()
    if "WeightsUnpickler error:" in text:
        # The reason follows on the same line (a refused global) or after a blank line (a bad opcode).
        after = text.split("WeightsUnpickler error:", 1)[1].strip()
        reason = after.splitlines()[0].split(" Please use", 1)[0].rstrip(".") if after else ""
        if reason.startswith("Unsupported operand"):
            return f"not a PyTorch checkpoint (garbage bytes, or a pickle of something else: {reason})"
        return "refused by torch.load(weights_only=True): " + reason
    if isinstance(exc, EOFError):
        return "the file is empty or truncated (EOFError)"
    if isinstance(exc, (KeyError, UnicodeDecodeError, IndexError, TypeError, struct.error)):
        return f"not a PyTorch checkpoint ({type(exc).__name__}: {text})"
    first_sentence = text.splitlines()[0].split(". ", 1)[0].rstrip(".") if text else ""
    # A bare OSError (EINVAL on a cut zip) means a damaged file; its subclasses (PermissionError, ...) do not.
    hint = " (truncated or corrupt file)" if isinstance(exc, RuntimeError) or type(exc) is OSError else ""
    return f"{type(exc).__name__}: {first_sentence}{hint}"


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with readable errors.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: truncated or corrupt file, or a pickle that ``weights_only`` refuses (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    # Random bytes make torch's weights-only unpickler fail in many ways (an opcode's stack index out of range...).
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, OSError, IndexError, TypeError,
            struct.error) as exc:  # fmt: skip
        raise CheckpointError(f"cannot read checkpoint {path}: {_short_reason(exc)}") from exc


def _os_error_in_chain(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: itself, or the one torch's zip writer hides under a RuntimeError's context."""
    seen: BaseException | None = exc
    visited: set[int] = set()  # a chain can loop (an exception raised again inside its own handler)
    while seen is not None and id(seen) not in visited:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def writing_to(path: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise a failed write inside the block as ``OSError(errno, strerror, path)``.

    A full disk surfaces from ``torch.save`` as ``RuntimeError: ... unexpected pos`` (the ENOSPC is only its
    context) and from a buffered ``write`` / ``flush`` as an OSError without a file name; either way the caller
    could not say which file or why. Other exceptions pass unchanged.
    """
    try:
        yield
    except (OSError, RuntimeError) as exc:
        cause = _os_error_in_chain(exc)
        if cause is None:
            raise
        raise OSError(cause.errno, cause.strerror, str(path)) from exc


def check_state_dict(state: object, model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Raise unless ``state`` loads into ``model`` strictly (the same keys, the same shapes).

    Raises:
        CheckpointMismatchError: names the file and the first few missing, unexpected and wrongly shaped keys.
    """
    if not _is_state_dict(state):
        raise CheckpointMismatchError(f"checkpoint {path}: its weights are not a state_dict ({type(state).__name__})")
    diff = _compare(state, model.state_dict())
    if any(diff.values()):
        raise CheckpointMismatchError(_mismatch_message(Path(path), diff))


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: object, path: str = "<checkpoint>") -> tuple[dict[str, torch.Tensor], str, dict]:
    """Find the weights inside a loaded checkpoint object.

    Returns:
        (state_dict with wrapper prefixes removed, source format name, small non-tensor entries).

    Raises:
        CheckpointError: no state_dict inside.
    """
    if _is_state_dict(obj):
        weights, source, info = obj, "state_dict", {}
    elif isinstance(obj, Mapping):
        info = {k: v for k, v in obj.items() if isinstance(v, (int, float, str, bool, np.generic))}
        # HRNet's "model" entry is the model's name (a string); ours is the weights.
        candidates = [k for k in ("state_dict", "best_state_dict", "model") if _is_state_dict(obj.get(k))]
        if not candidates:
            raise CheckpointError(f"{path}: no state_dict found; top-level keys: {sorted(map(str, obj))[:10]}")
        weights = obj[candidates[0]]
        if "best_state_dict" in obj or "perf" in obj:
            source = "hrnet_training"
        elif "arch" in obj or "best_acc" in obj:
            source = "unofficial_training"
        elif candidates[0] == "model":
            source = "training_state"
        else:
            source = "training_dict"
    else:
        raise CheckpointError(f"{path}: expected a state_dict or a training dict, got {type(obj).__name__}")
    return {_strip_prefixes(k): v for k, v in weights.items()}, source, info


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _fill_num_batches_tracked(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> list[str]:
    """Add a zero counter for every BatchNorm whose statistics are in the file but whose counter is not."""
    filled = []
    for key, tensor in expected.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            module = key[: -len("num_batches_tracked")]
            if module + "running_mean" in state:
                state[key] = torch.zeros_like(tensor, device="cpu")
                filled.append(key)
    return filled


def _compare(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> dict[str, tuple]:
    missing = tuple(k for k in expected if k not in state)
    unexpected = tuple(k for k in state if k not in expected)
    mismatched = tuple(
        (k, tuple(state[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    )
    return {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}


def _mismatch_message(path: Path, diff: Mapping[str, tuple]) -> str:
    def listing(items: tuple) -> str:
        more = f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
        return ", ".join(map(str, items[:_SHOWN])) + more

    parts = [f"checkpoint {path} does not match the model"]
    if diff["missing"]:
        parts.append(f"{len(diff['missing'])} missing keys: {listing(diff['missing'])}")
    if diff["unexpected"]:
        parts.append(f"{len(diff['unexpected'])} unexpected keys: {listing(diff['unexpected'])}")
    if diff["mismatched"]:
        shapes = tuple(f"{k} (file {list(a)} vs model {list(b)})" for k, a, b in diff["mismatched"])
        parts.append(f"{len(shapes)} wrongly shaped keys: {listing(shapes)}")
    return "; ".join(parts)


def _load(model: nn.Module, path: Path, strict: bool, require_any: bool) -> LoadReport:
    state, source, info = extract_state_dict(read_checkpoint(path), str(path))
    expected = model.state_dict()
    filled = _fill_num_batches_tracked(state, expected)
    diff = _compare(state, expected)
    if strict and any(diff.values()):
        raise CheckpointMismatchError(_mismatch_message(path, diff))
    bad = set(diff["unexpected"]) | {k for k, _, _ in diff["mismatched"]}
    usable = {k: v for k, v in state.items() if k not in bad}
    if require_any and not usable:
        raise CheckpointMismatchError(_mismatch_message(path, diff) + "; no key could be loaded")
    model.load_state_dict(usable, strict=strict)
    return LoadReport(path=str(path), source_format=source, loaded=tuple(k for k in expected if k in usable),
                      filled=tuple(filled), info=info, **diff)


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str], strict: bool = True) -> LoadReport:
    """Load weights from any supported layout into ``model``.

    Args:
        model: the target network (not wrapped in DDP).
        path: the checkpoint file.
        strict: require exactly the model's keys with the model's shapes (default). With ``strict=False`` the
            matching keys are loaded and the rest is reported.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable file (truncated, refused pickle, no state_dict inside).
        CheckpointMismatchError: strict load with missing, unexpected or wrongly shaped keys; the message names
            the file and the first few keys of each kind.
    """
    return _load(model, Path(path), strict=strict, require_any=False)


def load_backbone(model: nn.Module, path: str | os.PathLike[str], layers: Sequence[str]) -> LoadReport:
    """Initialise the backbone of a pose network from ImageNet weights, as HRNet's ``MODEL.PRETRAINED``.

    HRNet loads the file's tensors whose top-level module is in ``PRETRAINED_LAYERS`` (``conv1`` ... ``stage4``;
    ``conv1``, ``bn1``, ``layer1``..``layer4`` for a torchvision ResNet file) and leaves the pose head as
    initialised. Unlike HRNet's ``strict=False`` load, every model tensor under ``layers`` must come from the file
    with its shape, so the weights of another architecture (W48 into W32, ResNet-101 into ResNet-50) are refused
    instead of half-loaded. File tensors the backbone does not use (the classifier: ``fc``, ``incre_modules``,
    ``downsamp_modules``, ``final_layer``, ``classifier``; the extra fuse layers of the ImageNet HRNet's last
    stage) are reported in ``unexpected``; the head's keys in ``missing``.

    Args:
        model: the pose network.
        path: the ImageNet weights file.
        layers: top-level module names of the backbone.

    Raises:
        CheckpointMismatchError: a backbone tensor is absent from the file or shaped differently.
    """
    path = Path(path)
    state, source, info = extract_state_dict(read_checkpoint(path), str(path))
    expected = model.state_dict()
    layer_set = set(layers)
    backbone = {k: v for k, v in expected.items() if k.split(".")[0] in layer_set}
    offered = {k: v for k, v in state.items() if k in backbone}
    filled = _fill_num_batches_tracked(offered, backbone)
    diff = _compare(offered, backbone)
    if diff["missing"] or diff["mismatched"]:
        message = _mismatch_message(path, {**diff, "unexpected": ()}).replace("the model", f"the backbone {layers}")
        raise CheckpointMismatchError(message)
    model.load_state_dict(offered, strict=False)
    return LoadReport(path=str(path), source_format=source, loaded=tuple(offered), filled=tuple(filled), info=info,
                      missing=tuple(k for k in expected if k not in offered),
                      unexpected=tuple(k for k in state if k not in offered), mismatched=())


def metadata_path(weights_path: str | os.PathLike[str]) -> Path:
    """The sidecar JSON of a weights file: ``student.pth`` -> ``student.pth.json``."""
    weights_path = Path(weights_path)
    return weights_path.with_name(weights_path.name + ".json")


def save_weights(
    model: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a bare state_dict atomically, and its metadata to ``metadata_path(path)``.

    The sidecar holds ``metadata`` (JSON-serialisable: arch, preset, metrics, recipe, ...) plus ``sha256`` of the
    weights file, ``num_params`` (when ``model`` is a module) and ``num_tensors``.

    Args:
        model: a module (wrappers' ``module.`` / ``_orig_mod.`` prefixes are removed) or a state_dict.
        path: destination ``.pth``.
        metadata: extra JSON-serialisable entries.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    state = model.state_dict() if isinstance(model, nn.Module) else model
    # Detached CPU copies: a saved view would otherwise drag its whole (maybe GPU) storage into the file.
    bare = {_strip_prefixes(k): v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    sidecar: dict[str, Any] = dict(metadata or {})
    with writing_to(path), atomic_write(path) as handle:
        torch.save(bare, handle)
    sidecar["sha256"] = sha256_file(path)
    sidecar["num_tensors"] = len(bare)
    if isinstance(model, nn.Module):
        sidecar["num_params"] = sum(p.numel() for p in model.parameters())
    with writing_to(metadata_path(path)), atomic_write(metadata_path(path), "w") as handle:
        json.dump(sidecar, handle, indent=1, sort_keys=True, default=str)
    return path


def read_weights_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sidecar metadata of a weights file written by ``save_weights``, or None when there is none."""
    sidecar = metadata_path(path)
    return json.loads(sidecar.read_text()) if sidecar.is_file() else None
