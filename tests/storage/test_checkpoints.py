"""load_checkpoint / load_backbone / save_weights against every checkpoint layout of the FPD and HRNet code."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import models
from models.simple_baseline import PoseResNet, SimpleBaselineConfig
from storage.checkpoints import (
    CheckpointError,
    CheckpointMismatchError,
    load_backbone,
    load_checkpoint,
    metadata_path,
    read_weights_metadata,
    save_weights,
)
from storage.hashing import sha256_file


def _tiny(num_joints: int = 16) -> nn.Module:
    return models.create_model("hourglass", num_joints=num_joints, num_stacks=1, num_features=16, depth=2)


@pytest.fixture()
def trained() -> nn.Module:
    """A tiny hourglass whose every tensor (BN statistics and counters included) differs from a fresh one."""
    torch.manual_seed(0)
    model = _tiny()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            else:
                tensor.fill_(7)
    return model


def _assert_same_weights(model: nn.Module, source: nn.Module) -> None:
    expected = source.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def _prefixed(state: dict, prefix: str = "module.") -> OrderedDict:
    return OrderedDict((prefix + k, v) for k, v in state.items())


LAYOUTS = {
    "bare": lambda sd: sd,
    "bare_module_prefix": lambda sd: _prefixed(sd),
    "compiled_and_ddp": lambda sd: _prefixed(_prefixed(sd, "_orig_mod."), "module."),
    # HRNet / official FPD checkpoint.pth: prefixed state_dict, bare best_state_dict, numpy perf.
    "hrnet_training": lambda sd: {
        "epoch": 140, "model": "get_pose_net", "state_dict": _prefixed(sd), "best_state_dict": dict(sd),
        "perf": np.float64(0.9052), "optimizer": {"state": {}, "param_groups": [{"lr": 2.5e-4, "params": [0, 1]}]},
    },
    "hrnet_best_only": lambda sd: {"epoch": 3, "best_state_dict": sd, "perf": 0.5},
    # yuanyuanli85 / bearpaw: checkpoint.pth.tar and model_best.pth.tar.
    "unofficial_training": lambda sd: {
        "epoch": 90, "arch": "hg", "state_dict": _prefixed(sd), "best_acc": 0.87, "optimizer": {"state": {}},
    },
    "training_state": lambda sd: {"model": sd, "optimizer": {"state": {}}, "epoch": 2, "config": {"alpha": 0.5}},
}  # fmt: skip
FORMATS = {
    "bare": "state_dict", "bare_module_prefix": "state_dict", "compiled_and_ddp": "state_dict",
    "hrnet_training": "hrnet_training", "hrnet_best_only": "hrnet_training",
    "unofficial_training": "unofficial_training", "training_state": "training_state",
}  # fmt: skip


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_round_trips_strictly(tmp_path, trained, layout):
    path = tmp_path / f"{layout}.pth"
    torch.save(LAYOUTS[layout](trained.state_dict()), path)
    model = _tiny()
    report = load_checkpoint(model, path)
    _assert_same_weights(model, trained)
    assert report.source_format == FORMATS[layout]
    assert report.loaded == tuple(model.state_dict()) and not report.missing and not report.skipped
    if layout == "hrnet_training":
        assert report.info["epoch"] == 140 and float(report.info["perf"]) == pytest.approx(0.9052)


def test_old_files_without_num_batches_tracked(tmp_path, trained):
    state = {k: v for k, v in trained.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    model = _tiny()
    report = load_checkpoint(model, tmp_path / "old.pth")
    assert len(report.filled) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    assert all(model.state_dict()[k].item() == 0 for k in report.filled)
    assert torch.equal(model.bn1.running_var, trained.bn1.running_var)


def test_wrong_keys_raise_with_file_and_key_names(tmp_path, trained):
    state = trained.state_dict()
    state["extra.weight"] = torch.zeros(1)
    state["conv_one.weight"] = state.pop("conv1.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    model = _tiny()
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(model, path)
    message = str(info.value)
    assert "renamed.pth" in message and "1 missing keys: conv1.weight" in message
    assert "2 unexpected keys" in message and "conv_one.weight" in message and "extra.weight" in message
    assert all(torch.equal(fresh[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_wrong_shapes_raise(tmp_path, trained):
    path = tmp_path / "coco.pth"
    torch.save(_tiny(num_joints=17).state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match=r"coco\.pth.*wrongly shaped keys: score\.0\.weight \(file \[17"):
        load_checkpoint(trained, path)


def test_non_strict_load_reports_instead_of_raising(tmp_path, trained):
    state = trained.state_dict()
    del state["conv1.bias"]
    state["unused"] = torch.zeros(2)
    torch.save(state, tmp_path / "partial.pth")
    model = _tiny()
    report = load_checkpoint(model, tmp_path / "partial.pth", strict=False)
    assert report.missing == ("conv1.bias",) and report.unexpected == ("unused",)
    assert torch.equal(model.conv1.weight, trained.conv1.weight)


def test_truncated_file(tmp_path, trained):
    path = tmp_path / "model_best.pth"
    torch.save(trained.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model_best\.pth.*truncated or corrupt"):
        load_checkpoint(_tiny(), path)


class Pickled:
    """A custom class: torch.load(weights_only=True) must refuse to unpickle it."""


def test_refused_pickle(tmp_path, trained):
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": trained.state_dict(), "extra": Pickled()}, path)
    with pytest.raises(CheckpointError, match=r"unsafe\.pth.*weights_only=True.*Pickled"):
        load_checkpoint(_tiny(), path)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pth").write_text("hello")
    torch.save({"epoch": 1, "optimizer": {}}, tmp_path / "nostate.pth")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(_tiny(), tmp_path / "notes.pth")
    with pytest.raises(CheckpointError, match="no state_dict found"):
        load_checkpoint(_tiny(), tmp_path / "nostate.pth")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(_tiny(), tmp_path / "missing.pth")


def test_save_weights_writes_a_plain_state_dict_and_a_sidecar(tmp_path, trained):
    class Wrapper(nn.Module):  # what DataParallel / DDP look like to state_dict()
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    path = save_weights(Wrapper(trained), tmp_path / "student.pth", {"arch": "hourglass", "preset": "tiny"})
    raw = torch.load(path, weights_only=True)
    assert list(raw) == list(trained.state_dict())  # no prefix, a bare dict any HRNet tool can load
    meta = read_weights_metadata(path)
    assert metadata_path(path).name == "student.pth.json"
    assert meta["sha256"] == sha256_file(path) and meta["arch"] == "hourglass" and meta["preset"] == "tiny"
    assert meta["num_params"] == sum(p.numel() for p in trained.parameters())
    model = _tiny()
    load_checkpoint(model, path)
    _assert_same_weights(model, trained)
    assert read_weights_metadata(tmp_path / "other.pth") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.pth", "student.pth.json"]


def test_sha256_file(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"abc" * 1000)
    assert sha256_file(path, chunk_size=7) == hashlib.sha256(b"abc" * 1000).hexdigest()


def _imagenet_resnet_file(model: PoseResNet, path, drop: str | None = None):
    """A torchvision-named ImageNet ResNet file for ``model``'s backbone (+ ``fc``), without ``drop``."""
    state = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in model.state_dict().items()
             if k.split(".")[0] in PoseResNet.backbone_layers and k != drop and "num_batches_tracked" not in k}
    state |= {"fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)}
    torch.save(state, path)
    return state


def test_load_backbone_from_torchvision_resnet_names(tmp_path):
    """A torchvision ResNet file initialises every backbone tensor by name; fc is skipped, the head kept."""
    with torch.device("meta"):
        reference_keys = set(torchvision.models.resnet50().state_dict())
    # Same module names as ResNet-50 (see tests/models/test_simple_baseline.py), a fraction of the build time.
    model = PoseResNet(SimpleBaselineConfig(layers=(1, 1, 1, 1)), num_joints=17)
    head_before = model.final_layer.weight.detach().clone()
    imagenet = _imagenet_resnet_file(model, tmp_path / "resnet50-19c8e357.pth")
    assert {k for k in imagenet if not k.startswith("layer")} <= reference_keys  # stem and fc: torchvision names
    report = load_backbone(model, tmp_path / "resnet50-19c8e357.pth", PoseResNet.backbone_layers)
    assert set(report.loaded) - set(report.filled) == {k for k in imagenet if not k.startswith("fc.")}
    assert report.unexpected == ("fc.weight", "fc.bias")
    assert "final_layer.weight" in report.missing and "bn1.num_batches_tracked" in report.filled
    assert torch.equal(model.layer4[0].conv1.weight, imagenet["layer4.0.conv1.weight"])
    assert torch.equal(model.final_layer.weight, head_before)


def test_load_backbone_refuses_a_partial_or_foreign_backbone(tmp_path):
    """HRNet's strict=False would half-load these; a missing or wrongly shaped backbone tensor is an error."""
    model = PoseResNet(SimpleBaselineConfig(layers=(1, 1, 1, 1)), num_joints=17)
    _imagenet_resnet_file(model, tmp_path / "partial.pth", drop="layer3.0.conv2.weight")
    with pytest.raises(CheckpointMismatchError, match=r"backbone.*1 missing keys: layer3.0.conv2.weight"):
        load_backbone(model, tmp_path / "partial.pth", PoseResNet.backbone_layers)
    deeper = PoseResNet(SimpleBaselineConfig(layers=(1, 1, 1, 1)), num_joints=17)
    deeper.layer1[0].conv1 = nn.Conv2d(64, 32, 1, bias=False)  # another architecture's shapes
    _imagenet_resnet_file(deeper, tmp_path / "other_arch.pth")
    with pytest.raises(CheckpointMismatchError, match=r"wrongly shaped keys: layer1.0.conv1.weight"):
        load_backbone(model, tmp_path / "other_arch.pth", PoseResNet.backbone_layers)
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "bert.pth")
    with pytest.raises(CheckpointMismatchError, match="missing keys"):
        load_backbone(model, tmp_path / "bert.pth", PoseResNet.backbone_layers)


def test_load_backbone_from_an_imagenet_hrnet_file(tmp_path):
    """An ImageNet HRNet-W32 file in its key layout: the PRETRAINED_LAYERS load, its classifier is skipped.

    The classification HRNet keeps multi-scale outputs in its last stage (extra ``stage4.2.fuse_layers.1.*``) and
    has ``incre_modules``, ``downsamp_modules``, a 2048-channel ``final_layer`` and a ``classifier``: none of them
    reaches the pose network, whose own 1x1 ``final_layer`` stays as initialised.
    """
    torch.manual_seed(0)
    model = models.create_model("hrnet_w32", num_joints=17)
    head_before = model.final_layer.weight.detach().clone()
    backbone = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in model.state_dict().items()
                if k.split(".")[0] in model.backbone_layers}  # fmt: skip
    classifier = {"stage4.2.fuse_layers.1.0.0.0.weight": torch.randn(64, 32, 3, 3),
                  "incre_modules.0.0.conv1.weight": torch.randn(32, 32, 1, 1),
                  "downsamp_modules.0.0.weight": torch.randn(256, 128, 3, 3),
                  "final_layer.0.weight": torch.randn(2048, 1024, 1, 1), "final_layer.0.bias": torch.randn(2048),
                  "classifier.weight": torch.randn(1000, 2048), "classifier.bias": torch.randn(1000)}  # fmt: skip
    torch.save({**backbone, **classifier}, tmp_path / "hrnet_w32-36af842e.pth")
    report = load_backbone(model, tmp_path / "hrnet_w32-36af842e.pth", model.backbone_layers)
    assert set(report.loaded) == set(backbone) and set(report.unexpected) == set(classifier)
    assert set(report.missing) == {"final_layer.weight", "final_layer.bias"}
    assert torch.equal(model.stage4[2].branches[3][0].conv1.weight, backbone["stage4.2.branches.3.0.conv1.weight"])
    assert torch.equal(model.final_layer.weight, head_before)
    w48 = models.create_model("hrnet_w48", num_joints=17)
    torch.save({k: v for k, v in w48.state_dict().items() if k.split(".")[0] in w48.backbone_layers},
               tmp_path / "hrnet_w48-8ef0771d.pth")  # fmt: skip
    with pytest.raises(CheckpointMismatchError, match="wrongly shaped"):
        load_backbone(model, tmp_path / "hrnet_w48-8ef0771d.pth", model.backbone_layers)


def test_sidecar_is_valid_json(tmp_path, trained):
    path = save_weights(trained.state_dict(), tmp_path / "w.pth", {"metrics": {"PCKh": 90.5}})
    meta = json.loads(metadata_path(path).read_text())
    assert meta["metrics"] == {"PCKh": 90.5} and "num_params" not in meta
    assert meta["num_tensors"] == len(trained.state_dict())
