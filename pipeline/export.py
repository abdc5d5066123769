"""Deployable exports of a pose network, ONNX and TorchScript, checked against PyTorch on real images.

What is exported: ``HeatmapNet(model)``, one input ``image`` (N, 3, H, W) float32, the crop already normalised
in the preset's colour order, and one output ``heatmaps`` (N, K, h, w), the final stack of a hourglass. N is
dynamic. Cropping, normalisation, the flip test and decoding stay outside the graph: a deployer gets them from the
sidecar ``<file>.json`` (sizes, colour order, mean/std, pixel scale, flip permutation, decode rule). The flip test
is left out because it doubles the cost per image and a deployer may choose not to pay for it; it needs a second
call on the mirrored crops, then ``pipeline.flip.flip_heatmaps`` with the sidecar's permutation and HRNet's
one-pixel shift.

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), opset 18 by default. On this 2-core CPU
with torch 2.14 both torch exporters work for the three families and give the same heatmaps under ONNX Runtime
(max |diff| <= 5e-6 against PyTorch); the dynamo one is slower to export (about 9 s against 1.6 s for the tiny
hourglass, 20-40 s against 6 s for HRNet-W32, by load), but the TorchScript-based one (``dynamo=False``) is
deprecated, and an export runs once per checkpoint. Opset 18 is the one onnxscript's operators are written for
(lower ones go through a version converter; the sidecar records the opset the file really has). The example batch
is 2, because torch.export specialises a dimension of size 1.

TorchScript: ``torch.jit.trace`` of the same wrapper in eval mode, saved with ``torch.jit.save``. torch 2.14 marks
TorchScript as deprecated; it is kept for libtorch (C++) deployments, and its deprecation warnings are silenced here
since they concern this module, not the caller.

Verification: the crops of real images (a folder scanned with ``scan_folder``: whole images, or the boxes of
its ``detections.json``), cut by ``CropDataset`` exactly as evaluation cuts them, go through the eager model and
the exported file (ONNX Runtime CPU session, loaded TorchScript module), once as one batch of all the crops and
once as a batch of 1, which is never the example batch and so proves the dynamic axis. The export passes when
the max absolute heatmap difference is <= ``tolerance`` and ``HeatmapCodec.decode`` gives identical joints for
every crop. Files are written under temporary names beside the destination and renamed only when every
requested format has passed; on a failure nothing is renamed and files already there stay as they were.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.joints import get_joint_set
from models.presets import ModelPreset
from pipeline.codec import HeatmapCodec
from pipeline.data.crops import CropDataset
from pipeline.data.folders import scan_folder
from pipeline.data.images import IMAGENET_MEAN, IMAGENET_STD
from pipeline.flip import final_heatmaps
from storage.hashing import sha256_file
from storage.jsonfiles import write_json

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
"""Export format -> file suffix."""
INPUT_NAME = "image"
OUTPUT_NAME = "heatmaps"
DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4
DEFAULT_MAX_IMAGES = 32
EXAMPLE_BATCH = 2
EXTRA_HINT = "pip install 'fast-pose-distillation[export]'"

Runner = Callable[[torch.Tensor], torch.Tensor]
"""An exported model as a function: (N, 3, H, W) float32 crops -> (N, K, h, w) heatmaps."""


class ExportError(ValueError):
    """An export that cannot be made or does not match the PyTorch model (the message says which and by how much)."""


class HeatmapNet(nn.Module):
    """The graph that is exported: the network's final heatmaps only (the last stack of a hourglass)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised crops -> (N, K, h, w) heatmaps."""
        return final_heatmaps(self.model(image))


@dataclass(frozen=True)
class Verification:
    """How an export compared with the eager model.

    Attributes:
        images: crops checked.
        batch_sizes: the batch sizes the export was run at (1 and all the crops).
        max_abs_diff: largest absolute heatmap difference over every batch (NaN or inf for a broken export).
        joints_identical: ``HeatmapCodec.decode`` gave the same joints for every crop at every batch size.
        tolerance: the largest difference allowed.
    """

    images: int
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    joints_identical: bool
    tolerance: float

    @property
    def passed(self) -> bool:
        """Within tolerance (NaN is not) and the same joints."""
        return self.max_abs_diff <= self.tolerance and self.joints_identical


@dataclass(frozen=True)
class ExportedFile:
    """One verified export in place.

    Attributes:
        format: ``"onnx"`` or ``"torchscript"``.
        path: the model file.
        sidecar: its ``<file>.json``.
        size_bytes: size of the model file.
        export_seconds: time the exporter took (verification not included).
        verification: the check it passed.
    """

    format: str
    path: Path
    sidecar: Path
    size_bytes: int
    export_seconds: float
    verification: Verification


def _onnx_modules() -> tuple[Any, Any]:
    """``(onnx, onnxruntime)``, or an ExportError with the install line when the export extra is missing."""
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401 (torch's dynamo exporter imports it; fail here, with the hint, not there)
    except ImportError as exc:
        raise ExportError(f"ONNX export needs onnx, onnxruntime and onnxscript ({exc.name} is missing): "
                          f"{EXTRA_HINT}") from None  # fmt: skip
    return onnx, onnxruntime


def output_paths(out: str | os.PathLike[str], formats: Sequence[str], preset_name: str) -> dict[str, Path]:
    """Where each format goes: ``DIR/<preset>.<suffix>`` for a directory (existing or ending in ``/``), else
    ``PREFIX.<suffix>`` (a ``.onnx`` or ``.pt`` suffix given with the prefix is dropped)."""
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown export format(s) {unknown or formats}; known: {', '.join(FORMATS)}")
    text = os.fspath(out)
    prefix = Path(text)
    if text.endswith(("/", os.sep)) or prefix.is_dir():
        prefix = prefix / preset_name
    elif prefix.suffix in FORMATS.values():
        prefix = prefix.with_suffix("")
    return {fmt: prefix.with_name(prefix.name + FORMATS[fmt]) for fmt in dict.fromkeys(formats)}


def check_crops(
    folder: str | os.PathLike[str], preset: ModelPreset, max_images: int = DEFAULT_MAX_IMAGES
) -> torch.Tensor:
    """Network inputs cut from real images as evaluation cuts them (``CropDataset``, full decodes).

    Args:
        folder: images, scanned recursively by ``scan_folder`` (whole images, or its ``detections.json`` boxes).
        preset: gives the input size, aspect and colour order.
        max_images: use the first this many persons (one per image without boxes), in ``scan_folder`` order.

    Returns:
        (N, 3, H, W) float32 normalised crops, N >= 1.

    Raises:
        FileNotFoundError: no such folder.
        ExportError: no image in it could be read.
    """
    records = scan_folder(folder, input_aspect=preset.input_aspect).records[:max_images]
    dataset = CropDataset(records, preset.input_size, preset.color_order)
    items = [item for item in (dataset[i] for i in range(len(dataset))) if item["ok"]]
    if not items:
        raise ExportError(f"no readable image in {folder} to check the export on")
    return torch.stack([item["image"] for item in items])


def export_onnx(model: nn.Module, preset: ModelPreset, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET) -> int:
    """Write ``HeatmapNet(model)`` as one ONNX file (weights inside) with a dynamic batch axis; its opset.

    The model is put in eval mode and left so. Raises ExportError when the export extra is not installed.
    """
    onnx, _ = _onnx_modules()
    net = HeatmapNet(model).eval()
    example = torch.zeros(EXAMPLE_BATCH, 3, *preset.input_hw)
    torch.onnx.export(
        net, (example,), os.fspath(path), dynamo=True, opset_version=opset, external_data=False, verbose=False,
        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
    )  # fmt: skip
    graph = onnx.load(os.fspath(path), load_external_data=False)
    return next(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx"))


def export_torchscript(model: nn.Module, preset: ModelPreset, path: str | os.PathLike[str]) -> None:
    """Trace ``HeatmapNet(model)`` in eval mode and save it with ``torch.jit.save`` (the model is left in eval)."""
    net = HeatmapNet(model).eval()
    example = torch.zeros(EXAMPLE_BATCH, 3, *preset.input_hw)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated")
        # check_trace re-traces and compares on the same input; the verification on real crops checks more.
        torch.jit.save(torch.jit.trace(net, example, check_trace=False), os.fspath(path))


def onnx_session(path: str | os.PathLike[str], threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of an exported file, with ``threads`` intra-op threads (None: torch's count)."""
    _, ort = _onnx_modules()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1  # one sequential graph: a second pool would only compete for the cores
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def load_runner(fmt: str, path: str | os.PathLike[str], threads: int | None = None) -> Runner:
    """The exported file as a function of a batch: ONNX Runtime on the CPU, or the loaded TorchScript module."""
    if fmt == "onnx":
        session = onnx_session(path, threads)
        return lambda images: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated")
        module = torch.jit.load(os.fspath(path), map_location="cpu")

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(images)

    return run


def verify(model: nn.Module, run: Runner, crops: torch.Tensor, preset: ModelPreset, tolerance: float) -> Verification:
    """Compare an exported model with the eager one on ``crops`` at batch 1 and at batch N (see the module notes).

    Args:
        model: the eager network (put in eval mode).
        run: the exported model (``load_runner``).
        crops: (N, 3, H, W) normalised crops (``check_crops``).
        preset: gives the heatmap size the decoding uses.
        tolerance: the largest absolute heatmap difference allowed.
    """
    codec = HeatmapCodec(preset.input_size, preset.heatmap_size)
    net = HeatmapNet(model).eval()
    batches = [crops[:1], crops] if len(crops) > 1 else [crops]
    diffs, identical = [], True
    for batch in batches:
        with torch.inference_mode():
            want = net(batch)
        got = run(batch)
        if got.shape != want.shape:
            diffs.append(float("inf"))
            identical = False
            continue
        diffs.append(float((got - want).abs().max()))
        identical = identical and torch.equal(codec.decode(got)[0], codec.decode(want)[0])
    worst = float("nan") if any(math.isnan(d) for d in diffs) else max(diffs)  # max() would drop a NaN
    return Verification(len(crops), tuple(len(b) for b in batches), worst, identical, tolerance)


def sidecar(
    preset: ModelPreset, fmt: str, path: Path, opset: int | None, checkpoint: dict[str, str | None],
    verification: Verification,
) -> dict[str, Any]:  # fmt: skip
    """The ``<file>.json`` beside an export: everything a deployer needs to feed it and read it back.

    ``checkpoint`` is ``{"checkpoint": absolute path, "checkpoint_sha256": hex}`` (both None for random weights).
    """
    joints = get_joint_set(preset.joint_set)
    w, h = preset.input_size
    hw, hh = preset.heatmap_size
    versions = {"torch": torch.__version__}
    if fmt == "onnx":
        onnx, ort = _onnx_modules()
        versions |= {"onnx": onnx.__version__, "onnxruntime": ort.__version__}
    return {
        "file": path.name,
        "format": fmt,
        "preset": preset.name,
        "arch": preset.arch,
        "arch_options": {key: _jsonable(value) for key, value in preset.arch_options},
        "joint_set": preset.joint_set,
        "joint_names": list(joints.names),
        "flip_permutation": joints.flip_permutation(),
        "flip_test": "not in the graph: run the mirrored crops too, mirror their heatmaps back (flip the width axis, "
                     "reorder channels by flip_permutation), shift them right by one pixel and average (HRNet)",
        "input_name": INPUT_NAME,
        "input_shape": ["batch", 3, h, w],
        "input_size": [w, h],
        "color_order": preset.color_order,
        "pixel_scale": 1 / 255,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "normalisation": "channels in color_order, then (pixel * pixel_scale - mean[c]) / std[c] for channel c",
        "crop": "affine crop of the person box (widened to the input aspect) to input_size, HRNet's rules",
        "output_name": OUTPUT_NAME,
        "output_shape": ["batch", preset.num_joints, hh, hw],
        "heatmap_size": [hw, hh],
        "decode": "HRNet: argmax, then 0.25 px towards the higher neighbour; heatmap px * input_size / heatmap_size",
        "exporter": "torch.onnx.export(dynamo=True)" if fmt == "onnx" else "torch.jit.trace",
        "opset": opset,
        "versions": versions,
        **checkpoint,
        "verification": {**dataclasses.asdict(verification), "passed": verification.passed},
    }


def _jsonable(value: object) -> object:
    """Arch options as JSON: dataclasses (HRNet stage configs) as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def export_model(
    model: nn.Module,
    preset: ModelPreset,
    out: str | os.PathLike[str],
    formats: Sequence[str],
    check_images: str | os.PathLike[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int = DEFAULT_OPSET,
    checkpoint: str | os.PathLike[str] | None = None,
    max_images: int = DEFAULT_MAX_IMAGES,
    threads: int | None = None,
) -> list[ExportedFile]:
    """Export ``model`` in each format, verify every file on real crops, and only then move them into place.

    Args:
        model: the network with its weights, on the CPU (put in eval mode and left so).
        preset: its preset (sizes, colour order, joint set); an ad-hoc ``ModelPreset`` works as well as a named one.
        out: a directory or a path prefix (``output_paths``).
        formats: ``"onnx"`` and/or ``"torchscript"``.
        check_images: folder of real images to verify on (``check_crops``).
        tolerance: the largest absolute heatmap difference allowed.
        opset: ONNX opset.
        checkpoint: the weights file the model was loaded from, recorded in the sidecars with its sha256.
        max_images: persons of ``check_images`` used.
        threads: ONNX Runtime intra-op threads (None: torch's thread count).

    Returns:
        One ``ExportedFile`` per format, in the order asked.

    Raises:
        ExportError: the export extra is missing (for ONNX), no check image is readable, or an export does not
            match (the message gives the difference and whether joints moved); nothing is then moved into place.
        ValueError: an unknown format.
    """
    paths = output_paths(out, formats, preset.name)
    if "onnx" in paths:
        _onnx_modules()  # before anything is exported: the one-line install hint
    crops = check_crops(check_images, preset, max_images)
    with torch.inference_mode():
        shape = tuple(HeatmapNet(model).eval()(crops[:1]).shape[1:])
    if shape != (preset.num_joints, *reversed(preset.heatmap_size)):  # the sidecar would describe another output
        w, h = preset.input_size
        raise ExportError(f"{preset.name}: the network outputs (K, h, w) = {shape} from a {w}x{h} input, not the "
                          f"preset's heatmap_size {preset.heatmap_size} (w, h); nothing was written")  # fmt: skip
    source = {"checkpoint": None, "checkpoint_sha256": None}
    if checkpoint is not None:
        source = {"checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256": sha256_file(checkpoint)}
    temps: list[Path] = []
    staged: list[tuple[str, Path, Path, float, int | None, Verification]] = []
    try:
        for fmt, path in paths.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(handle)
            temps.append(Path(name))
            start = time.perf_counter()
            opset_used = export_onnx(model, preset, name, opset) if fmt == "onnx" else None
            if fmt == "torchscript":
                export_torchscript(model, preset, name)
            seconds = time.perf_counter() - start
            result = verify(model, load_runner(fmt, name, threads), crops, preset, tolerance)
            if not result.passed:
                joints = "identical" if result.joints_identical else "differ"
                raise ExportError(f"{fmt} export of {preset.name} does not match PyTorch on {result.images} crops of "
                                  f"{check_images}: max |heatmap diff| {result.max_abs_diff:.3g} (tolerance "
                                  f"{tolerance:g}), decoded joints {joints}; nothing was written")  # fmt: skip
            staged.append((fmt, path, Path(name), seconds, opset_used, result))
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    done = []
    for fmt, path, temp, seconds, opset_used, result in staged:
        side = path.with_name(path.name + ".json")
        side.unlink(missing_ok=True)  # an old sidecar must never describe the new file, even for a moment
        os.chmod(temp, 0o644)  # mkstemp's 0600 is for the half-written file, not the export
        os.replace(temp, path)
        write_json(side, sidecar(preset, fmt, path, opset_used, source, result))
        done.append(ExportedFile(fmt, path, side, path.stat().st_size, seconds, result))
    return done
