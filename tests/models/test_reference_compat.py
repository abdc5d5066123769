"""Our networks against the public FPD / HRNet code: state_dict keys, order, shapes, parameter and MAC counts.

The reference lists (``../shared/reference``) were measured by importing the original model classes; every
released checkpoint of those repositories therefore loads into our modules with ``strict=True``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import models
from models.complexity import trace_macs

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference"

# Reference entry -> (our model name, num_joints, options).
HG_TEACHER = {"num_stacks": 8, "num_features": 256, "num_blocks": 1}
BUILD = {
    "pose_hrnet_w32_256x192_coco": ("hrnet_w32", 17, {}),
    "pose_hrnet_w48_256x192_coco": ("hrnet_w48", 17, {}),
    "pose_hrnet_w32_256x256_mpii": ("hrnet_w32", 16, {}),
    "pose_hrnet_w48_256x256_mpii": ("hrnet_w48", 16, {}),
    "hourglass_teacher_s8_f256_mpii": ("hourglass", 16, HG_TEACHER),
    "hourglass_student_s4_f128_mpii": ("hourglass", 16, {"num_stacks": 4, "num_features": 128, "num_blocks": 1}),
    "pose_resnet_50_256x192_coco": ("resnet50", 17, {}),
    # Extras that cost nothing more to check.
    "pose_hrnet_w32_384x288_coco": ("hrnet_w32", 17, {}),
    "pose_hrnet_w48_384x288_coco": ("hrnet_w48", 17, {}),
    "pose_resnet_50_256x256_mpii": ("resnet50", 16, {}),
    "hourglass_s4_f256_mpii_yaml_as_is": ("hourglass", 16, {"num_stacks": 4, "num_features": 256}),
    "unofficial_hg_s8_b1_mpii": ("hourglass", 16, HG_TEACHER),
}


def _entries() -> list[dict]:
    path = REFERENCE / "model_sizes.json"
    if not path.is_file():
        return []
    return [e for e in json.loads(path.read_text())["models"] if e["name"] in BUILD]


ENTRIES = _entries()
pytestmark = pytest.mark.skipif(not ENTRIES, reason=f"reference files not found under {REFERENCE}")


@functools.cache
def _meta_model(name: str) -> nn.Module:
    # Meta tensors: shapes without memory or initialisation cost, enough for keys, counts and MACs.
    arch, num_joints, options = BUILD[name]
    with torch.device("meta"):
        return models.create_model(arch, num_joints=num_joints, **options)


def _signature(model: nn.Module) -> list[list]:
    return [[key, list(t.shape)] for key, t in model.state_dict().items()]


def _reference_signature(entry: dict) -> list[list]:
    return json.loads((REFERENCE / entry["state_dict_file"]).read_text())


def test_every_main_entry_is_covered():
    main = [e["name"] for e in json.loads((REFERENCE / "model_sizes.json").read_text())["models"] if not e["extra"]]
    assert sorted(main) == sorted(e["name"] for e in ENTRIES if not e["extra"])
    assert len(main) == 7


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["name"])
def test_state_dict_keys_order_shapes_and_params(entry):
    model = _meta_model(entry["name"])
    assert _signature(model) == _reference_signature(entry)
    assert sum(p.numel() for p in model.parameters()) == entry["params"]


@pytest.mark.parametrize("entry", [e for e in ENTRIES if not e["extra"]], ids=lambda e: e["name"])
def test_macs_gflops_and_output_shapes(entry):
    model = _meta_model(entry["name"])
    input_hw = tuple(entry["input_hw"])
    macs, output = trace_macs(model, input_hw)
    assert macs == entry["macs_conv_linear"]
    outputs = output if isinstance(output, list) else [output]
    assert [list(o.shape) for o in outputs] == entry["output_shapes"]
    cost = models.complexity(model, input_hw) if entry["name"].startswith("pose_hrnet_w32_256x192") else None
    if cost is not None:  # the public wrapper, once: same count, HRNet's 2**30 units
        assert (cost.params, cost.macs) == (entry["params"], macs)
        assert f"{cost.gflops:.3f}" == "7.120"
    assert round(macs / 2**30, 3) == round(entry["gflops_conv_linear"], 3)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if not e["extra"]], ids=lambda e: e["name"])
def test_official_checkpoint_layout_loads_strictly(entry):
    """A state_dict with exactly the reference keys and shapes (as in the released files) loads with strict=True."""
    model = _meta_model(entry["name"])
    state = {
        key: torch.empty(shape, device="meta", dtype=torch.int64 if key.endswith("num_batches_tracked") else None)
        for key, shape in _reference_signature(entry)
    }
    result = model.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_a_renamed_layer_breaks_the_signature():
    entry = next(e for e in ENTRIES if e["name"] == "hourglass_student_s4_f128_mpii")
    with torch.device("meta"):
        model = models.create_model("hourglass", num_joints=16, num_stacks=4, num_features=128)
    model.add_module("fc_inject", model.fc_)
    del model.fc_
    assert _signature(model) != _reference_signature(entry)
    with pytest.raises(RuntimeError, match="fc_inject"):
        model.load_state_dict({k: torch.empty(s, device="meta") for k, s in _reference_signature(entry)}, assign=True)


def test_student_stem_width_is_a_quarter_of_num_features():
    model = _meta_model("hourglass_student_s4_f128_mpii")
    assert tuple(model.conv1.weight.shape) == (32, 3, 7, 7)
