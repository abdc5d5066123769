"""Person crops as network inputs, for teacher inference and evaluation (no augmentation).

Images are decoded in full unless asked otherwise: the teachers were trained, and students train, on full
decodes, and a JPEG draft decode is some grey levels off them (docs/cache.md, "JPEG draft decoding").

One bad file must never stop a run over 100k images: a record whose image cannot be decoded yields ``ok=False``,
a zero image and the error message, and the caller records it as a failure by name.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pipeline import geometry
from pipeline.data.images import ImageDecodeError, load_image, to_tensor
from pipeline.records import PIXEL_STD, SampleRecord

logger = logging.getLogger(__name__)


def crop_record(
    record: SampleRecord, input_size: geometry.Size, *, use_draft: bool = False
) -> tuple[np.ndarray, Image.Image]:
    """Decode and crop one record's person box (upright by EXIF for folder photos: ``apply_exif_orientation``).

    Args:
        record: the person to crop (its ``center``, ``scale``, ``rotation``).
        input_size: crop (width, height).
        use_draft: decode JPEGs at a reduced size when the crop shrinks them by 2 or more (faster, not the
            pixels of a full decode).

    Returns:
        (matrix, crop): the (2, 3) original-image-to-crop matrix and the crop as a PIL RGB image.

    Raises:
        ImageDecodeError: the image cannot be decoded.
    """
    matrix = geometry.crop_matrix(record.center, record.scale, record.rotation, input_size)
    zoom = input_size[0] / (float(record.scale[0]) * PIXEL_STD)
    loaded = load_image(
        record.path, draft_scale=zoom if use_draft else None, exif_orientation=record.apply_exif_orientation
    )
    # The decoded pixel grid may be the reduced one: go from it to the original grid, then crop.
    image_matrix = geometry.compose_affine(matrix, loaded.draft_to_original) if loaded.draft_factor > 1 else matrix
    return matrix, geometry.warp_image(loaded.image, image_matrix, input_size)


class CropDataset(Dataset):
    """Crops of ``records`` at ``input_size`` as normalised tensors.

    Item: ``image`` (3, H, W) float32, ``index`` int (position in ``records``), ``ok`` bool, ``error`` str
    (empty when ok). A record whose image cannot be decoded gives ``ok=False`` and a zero image.

    Args:
        records: people to crop.
        input_size: network input (width, height).
        color_order: ``"RGB"`` or ``"BGR"``, the model preset's channel order.
        use_draft: allow JPEG draft decoding (see ``pipeline.data.images``); off by default.
    """

    def __init__(
        self,
        records: Sequence[SampleRecord],
        input_size: geometry.Size,
        color_order: str,
        *,
        use_draft: bool = False,
    ) -> None:
        if color_order not in ("RGB", "BGR"):
            raise ValueError(f"color_order must be 'RGB' or 'BGR', got {color_order!r}")
        self.records = list(records)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.color_order = color_order
        self.use_draft = use_draft

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int | bool | str]:
        record = self.records[index]
        try:
            _, crop = crop_record(record, self.input_size, use_draft=self.use_draft)
        except ImageDecodeError as exc:
            logger.warning("skipping %s: %s", record.key, exc)
            w, h = self.input_size
            return {"image": torch.zeros(3, h, w), "index": index, "ok": False, "error": str(exc)}
        return {"image": to_tensor(crop, self.color_order), "index": index, "ok": True, "error": ""}
