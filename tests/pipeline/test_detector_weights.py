"""Detector weights: torchvision's cache path, a local file, a download that fails (no network, a wrong hash) with
one clear message and no partial file, and strict loading that gives the saved model's outputs back."""

from __future__ import annotations

import email.message
import io
import urllib.error
from pathlib import Path

import pytest
import torch

from models.detectors import CPU_DETECTOR, DETECTOR_MODELS, create_detector
from pipeline.detection.weights import (
    DetectorWeightsError,
    load_detector,
    locate_detector_weights,
    torchvision_weights_path,
)
from storage.checkpoints import CheckpointError, CheckpointMismatchError

NAME = "fasterrcnn_mobilenet_v3_large_320_fpn"
OPTIONS = {"score_threshold": 0.0, "nms_threshold": 0.5, "detections_per_image": 10, "min_size": 128, "max_size": 160}
URL = DETECTOR_MODELS[NAME].weights.url


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``TORCH_HOME``, so that the user's real cache is neither read nor written."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


def _no_download(*args: object, **kwargs: object) -> None:
    raise AssertionError("no download expected")


def test_the_cache_path_is_torchvisions_under_torch_home(torch_home: Path) -> None:
    expected = torch_home / "hub" / "checkpoints" / "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth"
    assert torchvision_weights_path(NAME) == expected
    assert torchvision_weights_path(CPU_DETECTOR).name == Path(DETECTOR_MODELS[CPU_DETECTOR].weights.url).name
    with pytest.raises(ValueError, match="unknown detector"):
        torchvision_weights_path("yolo")


def test_a_file_in_the_cache_is_found_without_a_download(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    path = torchvision_weights_path(NAME)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    assert locate_detector_weights(NAME) == path
    assert locate_detector_weights(NAME, download=False) == path


def test_a_given_file_is_used_and_a_missing_one_is_named(tmp_path: Path, torch_home: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"weights")
    assert locate_detector_weights(NAME, str(mine)) == mine
    for missing in (tmp_path / "absent.pth", tmp_path):  # no such file; a folder
        with pytest.raises(DetectorWeightsError, match="not found") as info:
            locate_detector_weights(NAME, missing)
        assert str(missing) in str(info.value) and URL in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_no_download_allowed_says_which_file_to_put_where(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    with pytest.raises(DetectorWeightsError) as info:
        locate_detector_weights(NAME, download=False)
    message = str(info.value)
    assert str(torchvision_weights_path(NAME)) in message and URL in message and "downloading is off" in message


def test_a_download_without_network_fails_clearly_and_leaves_no_file(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(DetectorWeightsError) as info:
        locate_detector_weights(NAME)
    message = str(info.value)
    assert f"not found at {torchvision_weights_path(NAME)} and could not be downloaded" in message
    assert "Name or service not known" in message and URL in message and "$TORCH_HOME/hub/checkpoints" in message
    assert list(torchvision_weights_path(NAME).parent.iterdir()) == []


def test_a_download_is_hash_checked_by_the_prefix_in_the_file_name(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        calls.append((url, hash_prefix))
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert locate_detector_weights(NAME) == torchvision_weights_path(NAME)
    assert calls == [(URL, "907ea3f9")]


class _Response(io.BytesIO):
    """What ``urlopen`` returns, with a body whose SHA-256 does not start with the file name's prefix."""

    def info(self) -> email.message.Message:
        headers = email.message.Message()
        headers["Content-Length"] = str(len(self.getvalue()))
        return headers


def test_a_download_with_a_wrong_hash_is_refused_and_removed(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch's real download function, fed bytes that are not the published file.
    monkeypatch.setattr(torch.hub, "urlopen", lambda request: _Response(b"not the weights" * 100))
    with pytest.raises(DetectorWeightsError, match=r'invalid hash value \(expected "907ea3f9"'):
        locate_detector_weights(NAME)
    assert list(torchvision_weights_path(NAME).parent.iterdir()) == []  # neither the file nor a .partial


def test_saved_weights_load_strictly_and_give_the_same_detections(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_detector(NAME, **OPTIONS)
    path = tmp_path / "detector.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)  # another random init: only the file can make the outputs equal
    loaded = load_detector(NAME, path, **OPTIONS)
    assert not loaded.training and loaded.roi_heads.score_thresh == 0.0
    images = [torch.rand(3, 120, 150, generator=torch.Generator().manual_seed(2)), torch.rand(3, 90, 100)]
    with torch.inference_mode():
        expected, got = source(images), loaded(images)
    assert [len(o["boxes"]) for o in got] == [10, 10]
    torch.testing.assert_close(got, expected, rtol=0.0, atol=0.0)


def test_another_detectors_weights_or_a_broken_file_are_refused_by_name(tmp_path: Path) -> None:
    other = tmp_path / "resnet.pth"
    torch.save(create_detector("fasterrcnn_resnet50_fpn", **OPTIONS).state_dict(), other)
    with pytest.raises(CheckpointMismatchError, match="does not match the model") as info:
        load_detector(NAME, other, **OPTIONS)
    assert str(other) in str(info.value)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match=r"broken\.pth"):
        load_detector(NAME, broken, **OPTIONS)
