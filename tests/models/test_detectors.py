"""The detector registry: names, ``auto``, options reaching torchvision's modules, no download, and that every model
is exactly what torchvision builds for its COCO weights (which it is not when built from scratch)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torchvision.models._api import WeightsEnum

from models import detectors
from models.detectors import CPU_DETECTOR, DETECTOR_MODELS, GPU_DETECTOR, PERSON_LABEL, create_detector

NAMES = ["fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn",
         "fasterrcnn_resnet50_fpn_v2"]  # fmt: skip
SMALL = {"min_size": 128, "max_size": 160}


def test_the_registry_lists_the_faster_rcnn_models_and_is_read_only() -> None:
    assert detectors.list_detectors() == NAMES
    with pytest.raises(TypeError):
        DETECTOR_MODELS["mine"] = DETECTOR_MODELS[CPU_DETECTOR]  # type: ignore[index]
    for name, entry in DETECTOR_MODELS.items():
        assert entry.name == name and entry.builder is getattr(torchvision.models.detection, name)
        assert entry.weights.meta["categories"][PERSON_LABEL] == "person"
        assert entry.weights.url.startswith("https://download.pytorch.org/models/" + name.replace("_v2", ""))
    assert DETECTOR_MODELS[GPU_DETECTOR].box_ap == 46.7 == max(e.box_ap for e in DETECTOR_MODELS.values())
    assert DETECTOR_MODELS[CPU_DETECTOR].box_ap == 32.8


@pytest.mark.parametrize(("device_type", "expected"), [("cuda", GPU_DETECTOR), ("cpu", CPU_DETECTOR),
                                                       ("mps", CPU_DETECTOR)])  # fmt: skip
def test_auto_is_the_strong_model_on_cuda_and_the_light_one_elsewhere(device_type: str, expected: str) -> None:
    assert detectors.resolve_detector_name("auto", device_type) == expected
    # An explicit name is kept whatever the device.
    assert detectors.resolve_detector_name("fasterrcnn_resnet50_fpn", device_type) == "fasterrcnn_resnet50_fpn"


def test_an_unknown_name_is_refused_with_the_known_ones() -> None:
    options = {"score_threshold": 0.5, "nms_threshold": 0.5, "detections_per_image": 10}
    for call in (lambda: detectors.resolve_detector_name("yolo", "cpu"), lambda: create_detector("yolo", **options)):
        with pytest.raises(ValueError, match="unknown detector 'yolo'") as info:
            call()
        assert all(name in str(info.value) for name in ["auto", *NAMES])


def test_options_reach_torchvision_and_the_sizes_default_to_the_models_own() -> None:
    model = create_detector(CPU_DETECTOR, score_threshold=0.25, nms_threshold=0.4, detections_per_image=7, **SMALL)
    assert not model.training
    heads = model.roi_heads
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (0.25, 0.4, 7)
    assert (model.transform.min_size, model.transform.max_size) == ((128,), 160)
    assert heads.box_predictor.cls_score.out_features == 91
    defaults = {name: create_detector(name, score_threshold=0.5, nms_threshold=0.5, detections_per_image=1).transform
                for name in ("fasterrcnn_mobilenet_v3_large_320_fpn", CPU_DETECTOR)}  # fmt: skip
    assert [(t.min_size, t.max_size) for t in defaults.values()] == [((320,), 640), ((800,), 1333)]


@pytest.mark.parametrize("options", [{"score_threshold": 1.5}, {"nms_threshold": -0.1}, {"detections_per_image": 0},
                                     {"min_size": 0}])  # fmt: skip
def test_invalid_options_are_refused(options: dict[str, float]) -> None:
    valid = {"score_threshold": 0.5, "nms_threshold": 0.5, "detections_per_image": 10}
    with pytest.raises(ValueError, match="must be"):
        create_detector(CPU_DETECTOR, **{**valid, **options})


def _randomise_batch_norms(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Statistics far from a fresh layer's, with variances small enough that a different eps changes the output."""
    norms = (torch.nn.BatchNorm2d, torchvision.ops.FrozenBatchNorm2d)
    with torch.no_grad():
        for module in (m for m in model.modules() if isinstance(m, norms)):
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) * 0.01 + 0.005)
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) * 0.1 - 0.05)
            module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * 0.1 + 0.05)


@pytest.mark.parametrize("name", NAMES)
def test_every_model_is_torchvisions_pretrained_architecture_without_a_download(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("create_detector must not download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    torch.manual_seed(0)
    options = {"score_threshold": 0.0, "nms_threshold": 0.5, "detections_per_image": 20, **SMALL}
    model = create_detector(name, **options)
    generator = torch.Generator().manual_seed(1)
    _randomise_batch_norms(model, generator)
    # torchvision's own build for the COCO weights, fed this model's tensors instead of the downloaded file: it
    # loads them strictly (the same keys) and computes the same numbers (the same layers, the same eps).
    state = model.state_dict()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *args, **kwargs: state)
    reference = torchvision.models.get_model(name, weights=DETECTOR_MODELS[name].weights, box_score_thresh=0.0,
                                             box_nms_thresh=0.5, box_detections_per_img=20, **SMALL).eval()  # fmt: skip
    image = torch.rand(3, 120, 150, generator=generator)
    with torch.inference_mode():
        features, expected_features = model.backbone(image[None]), reference.backbone(image[None])
        (out,), (expected,) = model([image]), reference([image])
    torch.testing.assert_close(features, expected_features, rtol=0.0, atol=0.0)
    assert set(out) == {"boxes", "labels", "scores"} and out["boxes"].shape == (20, 4)
    torch.testing.assert_close(out, expected, rtol=0.0, atol=0.0)


def test_a_from_scratch_build_would_not_load_the_coco_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Why ``frozen_batch_norm_eps`` exists: built from scratch, the light model's backbone keeps BatchNorm2d, whose
    ``num_batches_tracked`` counters the COCO file (of a FrozenBatchNorm2d model) does not have."""
    frozen = create_detector(CPU_DETECTOR, score_threshold=0.5, nms_threshold=0.5, detections_per_image=1)
    plain = dataclasses.replace(DETECTOR_MODELS[CPU_DETECTOR], frozen_batch_norm_eps=None)
    monkeypatch.setattr(detectors, "DETECTOR_MODELS", {CPU_DETECTOR: plain})
    scratch = create_detector(CPU_DETECTOR, score_threshold=0.5, nms_threshold=0.5, detections_per_image=1)
    extra = set(scratch.state_dict()) - set(frozen.state_dict())
    assert extra and all(k.startswith("backbone.body.") and k.endswith(".num_batches_tracked") for k in extra)
    assert set(frozen.state_dict()) < set(scratch.state_dict())
