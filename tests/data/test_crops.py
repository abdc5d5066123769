import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import geometry
from pipeline.data.crops import CropDataset, crop_record
from pipeline.data.images import load_image, to_tensor
from pipeline.records import SampleRecord

logger = logging.getLogger(__name__)


def _record(
    root: Path, image: str, center: tuple[float, float], scale: float, rotation: float = 0.0, aspect: float = 0.75
) -> SampleRecord:
    return SampleRecord("test", root, image, center, (scale, scale / aspect), f"{image}#0", rotation=rotation)


@pytest.mark.parametrize("rotation", [0.0, 30.0])
def test_crop_matches_cv2_warp_affine(real_data: Path, rotation: float) -> None:
    root = real_data / "coco" / "images" / "val2017"
    record = _record(root, "000000000785.jpg", (389.6, 217.6), 1.2, rotation)
    size = (96, 128)
    matrix, crop = crop_record(record, size, use_draft=False)
    np.testing.assert_allclose(matrix, geometry.crop_matrix(record.center, record.scale, rotation, size))
    source = np.asarray(load_image(record.path).image)
    reference = cv2.warpAffine(source, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    diff = np.abs(np.asarray(crop, dtype=np.float64) - reference)
    # Pillow and OpenCV round bilinear weights differently: a grey level or two, never a shifted crop.
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 3.0


@pytest.mark.parametrize(
    ("size", "scale", "factor", "max_full_diff"), [((256, 256), 4.72, 2, 2.5), ((64, 64), 4.72, 8, 8.0)]
)
def test_draft_crops_are_close_to_full_decode_crops(
    real_data: Path, size: tuple[int, int], scale: float, factor: int, max_full_diff: float
) -> None:
    record = _record(real_data / "mpii" / "images", "005808361.jpg", (966.0, 410.8), scale, aspect=1.0)
    zoom = size[0] / (scale * 200)
    assert load_image(record.path, draft_scale=zoom).draft_factor == factor
    full = np.asarray(crop_record(record, size, use_draft=False)[1], dtype=np.float64)
    draft = np.asarray(crop_record(record, size, use_draft=True)[1], dtype=np.float64)
    full_diff = np.abs(full - draft).mean()
    # Measured: 1.98 grey levels at 1/2, 6.78 at 1/8. Most of it is the aliasing of the full-decode path
    # (bilinear sampling of one pixel in 15); against an area-averaged reference the draft crop is within 1.
    image = np.asarray(load_image(record.path).image)
    reduced_size = (-(-image.shape[1] // factor), -(-image.shape[0] // factor))  # libjpeg rounds up
    small = cv2.resize(image, reduced_size, interpolation=cv2.INTER_AREA)
    matrix = geometry.crop_matrix(record.center, record.scale, 0.0, size)
    corrected = np.array([[factor, 0.0, (factor - 1) / 2], [0.0, factor, (factor - 1) / 2]])
    naive = np.array([[factor, 0.0, 0.0], [0.0, factor, 0.0]])  # without the (k - 1) / 2 pixel-centre term
    reference = cv2.warpAffine(small, geometry.compose_affine(matrix, corrected), size).astype(np.float64)
    shifted = cv2.warpAffine(small, geometry.compose_affine(matrix, naive), size).astype(np.float64)
    logger.info("draft 1/%d: |full - draft| %.2f, |draft - area ref| %.2f, |uncorrected - area ref| %.2f",
                factor, full_diff, np.abs(draft - reference).mean(), np.abs(shifted - reference).mean())  # fmt: skip
    assert full_diff < max_full_diff
    assert np.abs(draft - reference).mean() < 1.0
    assert np.abs(shifted - reference).mean() > 2.0 * np.abs(draft - reference).mean()


def test_crop_dataset_items_and_bad_files(real_data: Path, tmp_path: Path) -> None:
    good = _record(real_data / "coco" / "images" / "val2017", "000000040083.jpg", (250.0, 160.0), 1.0)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    broken = _record(tmp_path, "broken.jpg", (10.0, 10.0), 0.1)
    missing = _record(tmp_path, "gone.jpg", (10.0, 10.0), 0.1)
    dataset = CropDataset([good, broken, missing], (48, 64), "BGR")
    assert len(dataset) == 3
    item = dataset[0]
    assert item["ok"] and item["error"] == "" and item["index"] == 0 and item["image"].shape == (3, 64, 48)
    crop = crop_record(good, (48, 64))[1]
    torch.testing.assert_close(item["image"], to_tensor(crop, "BGR"))
    for index, name in ((1, "broken.jpg"), (2, "gone.jpg")):
        item = dataset[index]
        assert not item["ok"] and name in item["error"] and item["index"] == index
        assert item["image"].shape == (3, 64, 48) and not item["image"].any()
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3)))
    assert batch["ok"].tolist() == [True, False, False]
    with pytest.raises(ValueError, match="color_order"):
        CropDataset([good], (48, 64), "bgr")


def test_crops_are_full_decodes_unless_draft_is_asked(tmp_path: Path) -> None:
    # A textured JPEG that the crop shrinks 6x: draft mode would decode it at 1/4, which gives other pixels.
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(texture).resize((400, 400), Image.Resampling.BICUBIC).save(tmp_path / "t.jpg", quality=90)
    record = _record(tmp_path, "t.jpg", (200.0, 200.0), 2.0, aspect=1.0)
    size = (64, 64)
    assert load_image(record.path, draft_scale=size[0] / (2.0 * 200)).draft_factor == 4
    full = to_tensor(crop_record(record, size, use_draft=False)[1], "RGB")
    draft = to_tensor(crop_record(record, size, use_draft=True)[1], "RGB")
    assert not torch.allclose(full, draft, atol=0.05)
    torch.testing.assert_close(to_tensor(crop_record(record, size)[1], "RGB"), full, rtol=0, atol=0)
    torch.testing.assert_close(CropDataset([record], size, "RGB")[0]["image"], full, rtol=0, atol=0)
    torch.testing.assert_close(CropDataset([record], size, "RGB", use_draft=True)[0]["image"], draft, rtol=0, atol=0)
