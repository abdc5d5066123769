"""`fpd export`: ONNX and TorchScript files of each network family that compute what PyTorch computes on real
images, written only once verified, with a sidecar that says how to feed them."""

from __future__ import annotations

import builtins
import json

import pytest
import torch

from benchmarks.bench_speed import realistic_weights
from models.joints import get_joint_set
from models.presets import ModelPreset, get_preset
from pipeline.cli import main
from pipeline.codec import HeatmapCodec
from pipeline.export import (
    ExportError,
    HeatmapNet,
    check_crops,
    export_model,
    load_runner,
    output_paths,
)
from pipeline.runtime import load_model
from storage.hashing import sha256_file

pytest.importorskip("onnxruntime")

# One network per family, small enough to export in seconds (HRNet needs sides divisible by its stride 32).
FAMILIES = {
    "hourglass": get_preset("tiny_student_mpii"),
    "hrnet": ModelPreset("hrnet_w18_96x64", "hrnet_w18", (), "coco", (64, 96), (16, 24), "RGB"),
    "resnet": ModelPreset("resnet50_96x64", "resnet50", (), "coco", (64, 96), (16, 24), "BGR"),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_exports_of_each_family_match_pytorch_on_real_images(family, real_data, tmp_path):
    preset = FAMILIES[family]
    model = realistic_weights(preset)
    images = real_data / "coco" / "images" / "val2017"
    exported = export_model(model, preset, f"{tmp_path}/out/", ["onnx", "torchscript"], images)

    assert [item.format for item in exported] == ["onnx", "torchscript"]
    crops = check_crops(images, preset)
    assert len(crops) == 4  # the four real pictures, whole
    with torch.inference_mode():
        want = HeatmapNet(model)(crops)
    assert float(want.abs().max()) > 1e-2  # peaks a wrong graph could not match by accident
    codec = HeatmapCodec(preset.input_size, preset.heatmap_size)
    for item in exported:
        assert item.path == tmp_path / "out" / (preset.name + (".onnx" if item.format == "onnx" else ".pt"))
        assert item.verification.passed and item.verification.batch_sizes == (1, 4)
        # Checked again here, independently of the module's own verification, at a batch never exported (3).
        got = load_runner(item.format, item.path)(crops[:3])
        assert got.shape == (3, preset.num_joints, *reversed(preset.heatmap_size))
        assert float((got - want[:3]).abs().max()) <= 1e-4
        assert torch.equal(codec.decode(got)[0], codec.decode(want[:3])[0])
        side = json.loads(item.sidecar.read_text())
        assert side["file"] == item.path.name and side["input_size"] == list(preset.input_size)
        assert side["heatmap_size"] == list(preset.heatmap_size) and side["color_order"] == preset.color_order
        assert side["flip_permutation"] == get_joint_set(preset.joint_set).flip_permutation()
        assert side["verification"]["passed"] is True and side["checkpoint_sha256"] is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"{preset.name}.onnx", f"{preset.name}.onnx.json", f"{preset.name}.pt", f"{preset.name}.pt.json"]
    )  # no temporary file left behind


def test_a_failed_check_writes_nothing_and_keeps_the_previous_export(real_data, tmp_path):
    preset = FAMILIES["hourglass"]
    model = realistic_weights(preset)
    images = real_data / "mpii" / "images"
    (old,) = export_model(model, preset, tmp_path, ["torchscript"], images)
    before = old.path.read_bytes(), old.sidecar.read_text()
    with pytest.raises(ExportError, match=r"onnx export of tiny_student_mpii does not match PyTorch on 5 "
                                          r"crops .*tolerance -1\), decoded joints identical; nothing was written"):
        export_model(model, preset, tmp_path, ["onnx", "torchscript"], images, tolerance=-1.0)
    assert (old.path.read_bytes(), old.sidecar.read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_student_mpii.pt", "tiny_student_mpii.pt.json"]


def test_a_preset_whose_heatmap_size_is_not_the_output_is_refused(real_data, tmp_path):
    preset = ModelPreset("resnet50_64x48", "resnet50", (), "coco", (48, 64), (12, 16), "BGR")  # 48 / 32 rounds up
    with pytest.raises(ExportError, match=r"outputs \(K, h, w\) = \(17, 16, 16\) from a 48x64 input, not the preset's "
                                          r"heatmap_size \(12, 16\)"):
        export_model(realistic_weights(preset), preset, tmp_path, ["torchscript"], real_data / "mpii" / "images")
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_a_checkpoint_and_records_its_hash(real_data, random_weights, tmp_path, capsys):
    weights = random_weights("tiny_student_mpii")
    argv = ["export", "--preset", "tiny_student_mpii", "--checkpoint", str(weights), "--out",
            str(tmp_path / "student"), "--check-images", str(real_data / "mpii" / "images")]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "onnx: " in printed and "torchscript: " in printed and "checked on 5 crops at batch 1 and 5" in printed
    side = json.loads((tmp_path / "student.onnx.json").read_text())
    assert side["checkpoint_sha256"] == sha256_file(weights) and side["preset"] == "tiny_student_mpii"
    assert side["opset"] == 18 and side["input_shape"] == ["batch", 3, 128, 128]
    # The file runs as the checkpoint does.
    preset, model = load_model("tiny_student_mpii", weights)
    crops = check_crops(real_data / "mpii" / "images", preset)
    with torch.inference_mode():
        want = HeatmapNet(model.eval())(crops)
    assert torch.allclose(load_runner("onnx", tmp_path / "student.onnx")(crops), want, atol=1e-4, rtol=0)


def test_cli_without_the_export_extra_says_what_to_install(real_data, random_weights, tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    argv = ["export", "--preset", "tiny_student_mpii", "--checkpoint", str(random_weights("tiny_student_mpii")),
            "--out", f"{tmp_path}/out/", "--check-images", str(real_data / "mpii" / "images")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fpd export: error: ONNX export needs onnx, onnxruntime and onnxscript (onnxruntime is missing): "
                   "pip install 'fast-pose-distillation[export]'"]  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_folder_without_images(random_weights, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = ["export", "--preset", "tiny_student_mpii", "--checkpoint", str(random_weights("tiny_student_mpii")),
            "--out", str(tmp_path / "x"), "--format", "torchscript", "--check-images", str(tmp_path / "empty")]
    assert main(argv) == 2
    assert "to check the export on" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "missing")]) == 2
    assert "--check-images: no such folder" in capsys.readouterr().err


def test_output_paths(tmp_path):
    assert output_paths(tmp_path, ["onnx"], "p") == {"onnx": tmp_path / "p.onnx"}
    assert output_paths(tmp_path / "m.onnx", ["torchscript", "onnx"], "p") == {
        "torchscript": tmp_path / "m.pt", "onnx": tmp_path / "m.onnx"}  # fmt: skip
    assert output_paths(f"{tmp_path}/new/", ["torchscript"], "p") == {"torchscript": tmp_path / "new" / "p.pt"}
    with pytest.raises(ValueError, match="unknown export format"):
        output_paths(tmp_path, ["tflite"], "p")
