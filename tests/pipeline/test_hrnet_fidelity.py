"""Our loaders, augmentation and target encoding against numbers produced by HRNet's own dataset code.

``tests/fixtures/hrnet_reference/{mpii,coco}.json`` hold real annotations (MPII ``valid_first5``, COCO val2017
``subset4``) and what HRNet computed from them: ``MPIIDataset._get_db`` / ``COCODataset._get_db`` centres and
scales, and whole training samples of ``JointsDataset.__getitem__`` (half-body, zoom, rotation, flip, affine,
``fliplr_joints``, ``generate_target``) with its random draws forced to the values stored in ``draws``. We feed
the same draws to our ``sample_crop`` inside ``DistillDataset`` and compare what comes out. The crops were
chosen so that some visible joints fall outside the crop but keep HRNet's weight 1 (Gaussian window still on
the heatmap) and others fall beyond the window (weight 0). Images are blank stand-ins of the real sizes:
targets depend on the image only through its width (the flip).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.joints import COCO, MPII, JointSet
from pipeline import augment
from pipeline.augment import AugmentConfig, CropParams
from pipeline.codec import HeatmapCodec
from pipeline.data.coco import load_coco
from pipeline.data.mpii import load_mpii
from pipeline.records import SampleRecord
from pipeline.training import data as training_data
from pipeline.training.data import DistillDataset

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hrnet_reference"


def _reference(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _blank_image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height)).save(path)


class ReplayedDraws:
    """HRNet's draws in its order: ``random()`` replays its uniforms, ``standard_normal()`` its ``randn``."""

    def __init__(self, draws: list[list]) -> None:
        self.draws = [(kind, float(value)) for kind, value in draws]

    def _next(self, kind: str) -> float:
        assert self.draws, "our sample_crop drew more numbers than HRNet did"
        got, value = self.draws.pop(0)
        assert got == kind, f"HRNet drew a {got} here, ours asks for a {kind}"
        return value

    def random(self) -> float:
        return self._next("uniform")

    def standard_normal(self) -> float:
        return self._next("normal")


@pytest.fixture(scope="module")
def mpii_records(tmp_path_factory: pytest.TempPathFactory) -> list[SampleRecord]:
    ref, root = _reference("mpii"), tmp_path_factory.mktemp("mpii")
    (root / "annot").mkdir()
    (root / "annot" / "valid.json").write_text(json.dumps(ref["entries"]))
    for name, (width, height) in ref["image_sizes"].items():
        _blank_image(root / "images" / name, width, height)
    return load_mpii(root, "valid")


@pytest.fixture(scope="module")
def coco_records(tmp_path_factory: pytest.TempPathFactory) -> list[SampleRecord]:
    ref, root = _reference("coco"), tmp_path_factory.mktemp("coco")
    payload = {key: ref[key] for key in ("images", "annotations", "categories")}
    (root / "annotations").mkdir()
    (root / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(payload))
    for info in ref["images"]:
        _blank_image(root / "images" / "val2017" / info["file_name"], info["width"], info["height"])
    return load_coco(root, "val2017", input_aspect=ref["input_size"][0] / ref["input_size"][1])


def test_mpii_centres_and_scales_equal_hrnet_get_db(mpii_records: list[SampleRecord]) -> None:
    # HRNet: c_y += 15 s, s *= 1.25, then c -= 1; same float64 operations, so equal to the last bit.
    db = _reference("mpii")["db"]
    assert len(mpii_records) == len(db)
    for record, ref in zip(mpii_records, db, strict=True):
        assert record.center == tuple(ref["center"])
        assert record.scale == tuple(ref["scale"])
    assert mpii_records[0].center == (965.0, 339.0 + 15 * 4.718488)  # (966, 340) in the 1-based json


def test_coco_centres_and_scales_equal_hrnet_get_db(coco_records: list[SampleRecord]) -> None:
    db = _reference("coco")["db"]
    assert len(coco_records) == len(db) == 12  # two annotations without keypoints dropped, as HRNet does
    # HRNet's _xywh2cs works in float32, ours in float64.
    np.testing.assert_allclose([r.center for r in coco_records], [d["center"] for d in db], rtol=1e-6)
    np.testing.assert_allclose([r.scale for r in coco_records], [d["scale"] for d in db], rtol=1e-6)


def _our_sample(
    record: SampleRecord, ref: dict, joint_set: JointSet, cfg: AugmentConfig, draws: list, monkeypatch
) -> tuple[dict, CropParams]:
    """``DistillDataset[0]`` of ``record`` with HRNet's draws replayed into our ``sample_crop``."""
    drawn: list[CropParams] = []

    def replayed_sample_crop(record, cfg, rng, image_width, joint_set, input_size) -> CropParams:
        del rng  # the dataset's own generator is replaced by HRNet's recorded draws
        stream = ReplayedDraws(draws)
        params = augment.sample_crop(record, cfg, stream, image_width, joint_set, input_size)
        assert not stream.draws, f"HRNet drew more numbers than we did: {stream.draws}"
        drawn.append(params)
        return params

    monkeypatch.setattr(training_data, "sample_crop", replayed_sample_crop)
    input_size, heatmap_size = tuple(ref["input_size"]), tuple(ref["heatmap_size"])
    dataset = DistillDataset(
        [record], joint_set=joint_set, input_size=input_size, heatmap_size=heatmap_size, color_order="RGB",
        codec=HeatmapCodec(input_size, heatmap_size, ref["sigma"]), augment=cfg,
    )  # fmt: skip
    item = dataset[0]
    # The GT targets are encoded in the training step, from the sample's joints in the crop.
    item["target"], item["target_weight"] = dataset.codec.encode(item["joints"], item["visibility"])
    return item, drawn[0]


def _check_against_hrnet(
    item: dict, params: CropParams, record: SampleRecord, hrnet: dict, ref: dict, joint_set: JointSet, image_width: int
) -> dict[str, int]:
    # The crop: HRNet's meta centre is after its flip (c_x = width - c_x - 1).
    cx = image_width - 1 - params.center[0] if params.flip else params.center[0]
    np.testing.assert_allclose([cx, params.center[1]], hrnet["center"], rtol=1e-6)
    np.testing.assert_allclose(params.scale, hrnet["scale"], rtol=1e-6)
    assert params.rotation == pytest.approx(hrnet["rotation"], abs=1e-9)
    # target_weight and the target heatmaps.
    np.testing.assert_array_equal(item["target_weight"].numpy(), hrnet["target_weight"])
    target = item["target"].numpy()
    np.testing.assert_allclose(target.sum(axis=(1, 2)), hrnet["target_sum"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(target.max(axis=(1, 2)), hrnet["target_max"], rtol=1e-5, atol=1e-7)
    flat = target.reshape(len(target), -1).argmax(axis=1)
    np.testing.assert_array_equal(np.stack([flat % target.shape[2], flat // target.shape[2]], 1), hrnet["target_peak"])
    # Joints in input pixels (HRNet moves visible joints only).
    size = tuple(ref["input_size"])
    joints, visibility = augment.transform_joints(record.joints, record.visibility, params, size, image_width,
                                                  joint_set)  # fmt: skip
    seen = [k for k, xy in enumerate(hrnet["joints"]) if xy is not None]
    assert np.flatnonzero(visibility > 0).tolist() == seen
    np.testing.assert_allclose(joints[seen], [hrnet["joints"][k] for k in seen], atol=2e-3)
    # What the crops were chosen to show: visible joints outside the crop that HRNet still trains, others it drops.
    inside = (joints[:, 0] >= 0) & (joints[:, 0] < size[0]) & (joints[:, 1] >= 0) & (joints[:, 1] < size[1])
    weight = np.asarray(hrnet["target_weight"])
    return {"kept_outside": int(np.sum((visibility > 0) & ~inside & (weight > 0))),
            "dropped": int(np.sum((visibility > 0) & (weight == 0)))}  # fmt: skip


def test_mpii_training_samples_equal_hrnet(mpii_records: list[SampleRecord], monkeypatch) -> None:
    ref = _reference("mpii")
    cfg = AugmentConfig.for_dataset("mpii")
    counts = {"kept_outside": 0, "dropped": 0}
    for sample in ref["samples"]:
        base = mpii_records[sample["entry"]]
        # HRNet's db centre moved by the same offset (pushes part of the body out of the crop).
        dx, dy = sample["center_offset"]
        record = dataclasses.replace(base, center=(base.center[0] + dx, base.center[1] + dy))
        item, params = _our_sample(record, ref, MPII, cfg, sample["draws"], monkeypatch)
        width = ref["image_sizes"][record.image][0]
        for key, value in _check_against_hrnet(item, params, record, sample["hrnet"], ref, MPII, width).items():
            counts[key] += value
    assert counts == {"kept_outside": 24, "dropped": 31}


def test_coco_training_samples_equal_hrnet(coco_records: list[SampleRecord], monkeypatch) -> None:
    ref = _reference("coco")
    cfg = AugmentConfig.for_dataset("coco")
    widths = {info["file_name"]: info["width"] for info in ref["images"]}
    counts = {"kept_outside": 0, "dropped": 0}
    half_body = 0
    for sample in ref["samples"]:
        record = coco_records[sample["record"]]
        item, params = _our_sample(record, ref, COCO, cfg, sample["draws"], monkeypatch)
        half_body += params.center != record.center
        for key, value in _check_against_hrnet(item, params, record, sample["hrnet"], ref, COCO,
                                               widths[record.image]).items():  # fmt: skip
            counts[key] += value
    assert half_body >= 5  # most samples are half-body crops, where most cut-off joints come from
    print("coco", counts, half_body)
    assert counts["kept_outside"] >= 15 and counts["dropped"] >= 15, counts
