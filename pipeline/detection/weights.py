"""Where a detector's weights come from: a local file, or torchvision's weights API cache under ``TORCH_HOME``.

torchvision caches its weights as ``$TORCH_HOME/hub/checkpoints/<file name of the URL>`` (``torch.hub.get_dir()``),
the name ending in the first hex digits of the file's SHA-256. Using the same place means a file torchvision
downloaded once (or one a user copied there from another machine) serves both. A missing file is downloaded there
when the machine has network, with torchvision's own hash check; without network the error says which file to put
where. The weights are then read with ``weights_only=True`` and loaded strictly, as every checkpoint of this
pipeline: a file of another detector is refused by name instead of half-loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from models.detectors import DETECTOR_MODELS, create_detector, resolve_detector_name
from storage.checkpoints import check_state_dict, read_checkpoint


class DetectorWeightsError(FileNotFoundError):
    """A detector's weights file is missing and could not be downloaded; the message names the file, where to put
    it and the URL to fetch it from."""


def _url(name: str) -> str:
    return DETECTOR_MODELS[resolve_detector_name(name, "cpu")].weights.url


def torchvision_weights_path(name: str) -> Path:
    """Where torchvision's weights API keeps detector ``name``'s COCO weights (``load_state_dict_from_url``'s path).

    Raises:
        ValueError: unknown detector name.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(_url(name)).path)


def _download(url: str, path: Path) -> None:
    """Fetch ``url`` to ``path`` as torchvision does: hash-checked against the prefix in the file name.

    ``download_url_to_file`` writes a temporary file beside ``path`` and moves it into place only once complete
    and verified, so a failed or concurrent download never leaves a partial file under the final name.
    """
    match = torch.hub.HASH_REGEX.search(path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None)


def locate_detector_weights(name: str, weights: str | Path | None = None, *, download: bool = True) -> Path:
    """The weights file of detector ``name``.

    Args:
        name: a registered detector name (``"auto"`` resolves as on a CPU: resolve it for the device first).
        weights: a local file to use; None: torchvision's cache file (``torchvision_weights_path``).
        download: fetch a missing cache file from torchvision's URL; False never touches the network.

    Returns:
        An existing file.

    Raises:
        DetectorWeightsError: ``weights`` is not a file, or the cache file is missing and was not downloaded (no
            network, a refused hash, an unwritable cache). The message says where to put which file.
        ValueError: unknown detector name.
    """
    url = _url(name)
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise DetectorWeightsError(
                f"detector weights file for {name} not found: {weights} (pass an existing file, or leave the weights "
                f"unset to use torchvision's cache, $TORCH_HOME/hub/checkpoints, with {url} in it)"
            )
        return weights
    path = torchvision_weights_path(name)
    if path.is_file():
        return path
    reason = "downloading is off"
    if download:
        try:
            _download(url, path)
            return path
        # A network failure is a URLError (an OSError), a wrong hash a RuntimeError.
        except (OSError, RuntimeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
    raise DetectorWeightsError(
        f"detector weights for {name} not found at {path} and could not be downloaded ({reason}): download {url} and "
        "put it there (torchvision's cache, $TORCH_HOME/hub/checkpoints), or pass the file as the detector's weights"
    )


def load_detector(name: str, weights_file: str | Path, **options: object) -> nn.Module:
    """Detector ``name`` with the weights of ``weights_file`` loaded strictly, in eval mode, on the CPU.

    Args:
        name: a registered detector name.
        weights_file: a bare state_dict (torchvision's COCO files, or ``model.state_dict()`` of ``create_detector``).
        **options: ``create_detector``'s keywords (thresholds, detections per image, input sizes).

    Raises:
        FileNotFoundError: no such file.
        storage.checkpoints.CheckpointError: not a readable checkpoint; ``CheckpointMismatchError`` when its keys
            or shapes are another model's (both name the file).
        ValueError: unknown name or invalid options.
    """
    model = create_detector(name, **options)
    state = read_checkpoint(weights_file)
    check_state_dict(state, model, weights_file)
    model.load_state_dict(state, strict=True)
    return model.eval()
