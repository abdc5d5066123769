"""Where a detector's weights come from: a local file, or torchvision's weights API cache under ``TORCH_HOME``.

torchvision caches its weights as ``$TORCH_HOME/hub/checkpoints/<file name of the URL>``, the name carrying the
first hex digits of the file's SHA-256. A missing file is downloaded there once when the machine has network;
without network the error says which file to put where. The weights are read with ``weights_only=True`` and
loaded strictly, as every checkpoint of this pipeline.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import nn

from models.detectors import DETECTOR_MODELS, create_detector, resolve_detector_name
from storage.checkpoints import check_state_dict, read_checkpoint


class DetectorWeightsError(FileNotFoundError):
    """A detector's weights file is missing and could not be fetched (the message says where to put it)."""


def torchvision_weights_path(name: str) -> Path:
    """Where torchvision's weights API keeps detector ``name``'s COCO weights."""
    url = DETECTOR_MODELS[resolve_detector_name(name, "cpu")].weights.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def locate_detector_weights(name: str, weights: str | Path | None = None, *, download: bool = True) -> Path:
    """The weights file of detector ``name``: ``weights`` when given, else torchvision's cached file (downloaded
    into the cache when missing and ``download``).

    Raises:
        DetectorWeightsError: no such file, and it could not be downloaded.
    """
    if weights is not None:
        if not Path(weights).is_file():
            raise DetectorWeightsError(f"detector weights not found: {weights}")
        return Path(weights)
    path = torchvision_weights_path(name)
    if path.is_file():
        return path
    url = DETECTOR_MODELS[resolve_detector_name(name, "cpu")].weights.url
    reason = "downloading is off"
    if download:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            prefix = path.name.rsplit("-", 1)[-1].split(".")[0]
            torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=False)
            return path
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; a wrong hash is a RuntimeError
            with contextlib.suppress(OSError):
                path.unlink()
            reason = f"download failed: {exc}"
    raise DetectorWeightsError(
        f"detector weights for {name} not found at {path} ({reason}): download {url} and put it there "
        "(torchvision's cache, $TORCH_HOME/hub/checkpoints), or give the file as the detector's weights"
    )


def load_detector(name: str, weights_file: str | Path, **options: object) -> nn.Module:
    """Detector ``name`` (``create_detector``'s keyword ``options``) with ``weights_file`` loaded strictly.

    Raises:
        storage.checkpoints.CheckpointError: the file is no checkpoint, or not this detector's (names the file).
    """
    model = create_detector(name, **options)
    state = read_checkpoint(weights_file)
    check_state_dict(state, model, weights_file)
    model.load_state_dict(state, strict=True)
    return model.eval()
