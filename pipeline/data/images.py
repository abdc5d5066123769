"""Image decoding to RGB (any Pillow mode), JPEG draft decoding, content fingerprints, network input tensors.

EXIF orientation: by default pixels are read as stored and the orientation tag is ignored, as MPII/COCO
annotations refer to the raw pixel grid (HRNet's ``JointsDataset`` and MMPose read with OpenCV's
``IMREAD_IGNORE_ORIENTATION``). ``exif_orientation=True`` gives the picture as a person sees it instead (what
Pillow's ``ImageOps.exif_transpose`` gives), for unlabeled folder photos: a phone photo is stored sideways and
upright only through its tag. Which records get which is decided in one place, ``SampleRecord.apply_exif_orientation``;
``read_image_size`` and ``load_image`` read the tag from the file header alike, so the size a scan saw is the size
decoded. An image that needs turning is decoded in full (no draft: the reduced grid of a turned odd-sized image is
not ``draft_to_original``'s).

JPEG draft mode: libjpeg can decode at 1/2, 1/4 or 1/8 of the size by scaling the DCT, faster than a full decode.
A crop that shrinks the image anyway (zoom < 1/2) keeps its resolution when it starts from such a reduced image,
but not its pixels: the scaled DCT is not what the bilinear crop of a full decode samples, and on the real MPII
and COCO photos crops differ by 1.8-5.3 grey levels on average and by 37-242 at some pixels (docs/cache.md), so it
is opt-in (``load_image(draft_scale=...)``, ``use_draft`` of ``pipeline.data.crops``). Reduced pixel ``i``
averages the original pixels ``k*i .. k*i + k - 1``, so its centre is the original coordinate
``k * i + (k - 1) / 2``: ``LoadedImage.draft_to_original`` is that matrix, to compose with
the crop matrix.

Training decodes to arrays (``load_image_array``): a plain JPEG goes to OpenCV's decoder straight from the file's
bytes (the same libjpeg-turbo pixels as Pillow's, checked on the real sample photos, without Pillow's header
parsing in Python); anything else goes through ``load_image``. The network input is normalised by
``normalize_images``, on whatever device its uint8 pixels are (the training step does it on the accelerator).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from PIL.Image import Transpose

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DRAFT_FACTORS = (8, 4, 2)
ORIENTATION_TAG = 0x0112
EXIF_TRANSPOSE = {
    2: Transpose.FLIP_LEFT_RIGHT, 3: Transpose.ROTATE_180, 4: Transpose.FLIP_TOP_BOTTOM, 5: Transpose.TRANSPOSE,
    6: Transpose.ROTATE_270, 7: Transpose.TRANSVERSE, 8: Transpose.ROTATE_90,
}  # fmt: skip
"""EXIF orientation (2..8; 1 is upright) -> the transpose that makes the stored pixels upright, as in Pillow's
``ImageOps.exif_transpose``; 5..8 swap width and height."""


class ImageDecodeError(ValueError):
    """An image file that cannot be read: missing, not an image, corrupt or truncated. The message names it."""


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image.

    Attributes:
        image: the RGB image, reduced by ``draft_factor`` in each direction.
        draft_factor: 1 for a full decode, else the JPEG draft reduction (2, 4 or 8).
        original_size: (width, height) of the full image, after the EXIF turn when one was applied.
    """

    image: Image.Image
    draft_factor: int
    original_size: tuple[int, int]

    @property
    def draft_to_original(self) -> np.ndarray:
        """(2, 3) matrix from decoded pixel coordinates to original ones: ``x = k * x_draft + (k - 1) / 2``."""
        k = float(self.draft_factor)
        return np.array([[k, 0.0, (k - 1.0) / 2.0], [0.0, k, (k - 1.0) / 2.0]])


def draft_factor_for(zoom: float) -> int:
    """The largest JPEG reduction (8, 4, 2, else 1) that keeps at least the crop's resolution.

    Args:
        zoom: crop output pixels per original image pixel.
    """
    for k in DRAFT_FACTORS:
        if zoom * k <= 1.0:
            return k
    return 1


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, keeping the colour channels and dropping alpha."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        # 16/32-bit grey: Pillow's own conversion clips at 255; rescale 16-bit data to 8 bits instead.
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and values.max(initial=0.0) > 255.0):
            values = values / 257.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # palette transparency is only understood via RGBA
    return image.convert("RGB")


def _orientation_of(image: Image.Image) -> int:
    """The EXIF orientation still to apply to an opened image, 1 (upright) when absent or not a known value.

    Pillow turns a TIFF itself, its size at open and its pixels at load: nothing is left to apply. PNG is read
    from the chunks before the pixel data: Pillow's ``getexif`` on a PNG decodes the whole file to look for a
    late ``eXIf`` chunk, which would make folder scans decode every image.
    """
    if image.format == "TIFF":
        return 1
    if image.format == "PNG":
        exif = Image.Exif()
        if "exif" in image.info:
            exif.load(image.info["exif"])
    else:
        exif = image.getexif()
    value = exif.get(ORIENTATION_TAG, 1)
    return value if value in EXIF_TRANSPOSE else 1


def load_image(path: str | Path, *, draft_scale: float | None = None, exif_orientation: bool = False) -> LoadedImage:
    """Decode an image file to RGB.

    Args:
        path: image file.
        draft_scale: the crop zoom (output pixels per image pixel) the image is decoded for. Below 1/2, a JPEG
            is decoded at a reduced size that still has at least the crop's resolution (see the module notes);
            None or other formats: full decode.
        exif_orientation: turn the pixels upright by the EXIF orientation tag (unlabeled folder photos; the
            caller passes ``record.apply_exif_orientation``); False keeps the raw pixel grid.

    Returns:
        The decoded image and its draft factor.

    Raises:
        ImageDecodeError: missing, unreadable, corrupt or truncated file; the message names the file and cause.
    """
    path = Path(path)
    with _image_errors(path, "cannot decode"), Image.open(path) as image:
        turn = EXIF_TRANSPOSE.get(_orientation_of(image)) if exif_orientation else None
        original_size = image.size
        factor = 1
        if draft_scale is not None and image.format == "JPEG" and turn is None:
            wanted = draft_factor_for(draft_scale)
            if wanted > 1:
                request = (max(image.width // wanted, 1), max(image.height // wanted, 1))
                result = image.draft(None, request)
                if result is not None:
                    factor = round(original_size[0] / result[1][2])
        image.load()
        rgb = _to_rgb(image)  # loaded pixels outlive the file handle closed by the with block
    if turn is not None:
        rgb = rgb.transpose(turn)
    return LoadedImage(image=rgb, draft_factor=factor, original_size=rgb.size if turn is not None else original_size)


def read_image_size(path: str | Path, *, exif_orientation: bool = False) -> tuple[int, int]:
    """(width, height) from the file header only (Pillow opens lazily), for cheap scans of large folders.

    Args:
        path: image file.
        exif_orientation: the size once turned upright by the EXIF tag (swapped for orientations 5..8), as
            ``load_image`` with the same flag decodes it.

    Raises:
        ImageDecodeError: missing file or unreadable header.
    """
    with _image_errors(path, "cannot read header"), Image.open(path) as image:
        width, height = image.size
        if exif_orientation and _orientation_of(image) >= 5:
            return height, width
        return width, height


@contextmanager
def _image_errors(path: str | Path, action: str) -> Iterator[None]:
    """Turn Pillow's and the OS's errors into one ``ImageDecodeError`` that names the file and the cause."""
    try:
        yield
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{path}: not a readable image (unknown format or corrupt header)") from None
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"{path}: {action} ({exc})") from exc


def load_image_array(path: str | Path, color_order: str, *, exif_orientation: bool = False) -> np.ndarray:
    """Decode an image file to an (H, W, 3) uint8 array with its channels in ``color_order``: ``load_image``'s pixels.

    A JPEG of one or three components that ends with its end-of-image marker, read on its raw pixel grid, is
    decoded by OpenCV from the file's bytes; any other file (other formats, CMYK JPEGs, whose colour conversion
    differs from Pillow's, truncated files, EXIF orientation to apply) by ``load_image``, whose errors name the file.

    Args:
        path: image file.
        color_order: ``"RGB"`` or ``"BGR"`` (the model preset's).
        exif_orientation: turn the pixels upright by the EXIF orientation tag (``record.apply_exif_orientation``).

    Raises:
        ImageDecodeError: missing, unreadable, corrupt or truncated file; the message names the file and cause.
    """
    _check_color_order(color_order)
    if not exif_orientation:
        with _image_errors(path, "cannot read"):
            data = Path(path).read_bytes()
        if _jpeg_components(data) in (1, 3) and data.endswith(b"\xff\xd9"):
            flag = cv2.IMREAD_COLOR_RGB if color_order == "RGB" else cv2.IMREAD_COLOR
            array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
            if array is not None:
                return array
    array = np.asarray(load_image(path, exif_orientation=exif_orientation).image)
    return array if color_order == "RGB" else np.ascontiguousarray(array[:, :, ::-1])


def _jpeg_components(data: bytes) -> int | None:
    """The component count of a JPEG's frame header (1 grey, 3 YCbCr, 4 CMYK), None when ``data`` is no JPEG up to it.

    Walks the marker segments from the start of the file to the first SOFn (every marker but DHT, JPG and DAC in
    0xC0..0xCF), whose byte 9 is the count.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return data[pos + 9]
        pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """Network inputs from uint8 pixels: ``(x / 255 - mean) / std`` in float32, channels first, on their device.

    The ImageNet mean/std are applied in the pixels' channel order as the BGR codebases do (their mean "R" goes
    to channel 0 whatever it holds). They enter as Python scalars, one channel at a time: mean/std tensors would
    be host-to-device copies, each a sync of the training step.

    Args:
        images: (..., H, W, 3) uint8.

    Returns:
        (..., 3, H, W) float32, contiguous.
    """
    if images.dtype != torch.uint8 or images.shape[-1] != 3:
        raise ValueError(f"normalize_images expects (..., H, W, 3) uint8 pixels, got {images.dtype} "
                         f"{tuple(images.shape)}")  # fmt: skip
    stats = zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)
    return torch.stack([(images[..., c] / 255.0 - mean) / std for c, (mean, std) in enumerate(stats)], dim=-3)


def to_tensor(crop: Image.Image, color_order: str) -> torch.Tensor:
    """A network input: (3, H, W) float32, ImageNet-normalised, channels in ``color_order``.

    Colour order is applied once per crop, here (Pillow crops) or at decode (``load_image_array``): ``"BGR"``
    swaps the channels first (models trained with OpenCV decoding, e.g. the MPII hourglass presets), then
    ``normalize_images`` applies the ImageNet mean/std in that channel order as those codebases do.
    """
    _check_color_order(color_order)
    array = np.asarray(crop.convert("RGB") if crop.mode != "RGB" else crop)
    if color_order == "BGR":
        array = array[:, :, ::-1]
    # a copy: Pillow's array is read-only, which torch.from_numpy warns about
    return normalize_images(torch.from_numpy(np.array(array)))


def _check_color_order(color_order: str) -> None:
    if color_order not in ("RGB", "BGR"):
        raise ValueError(f"color_order must be 'RGB' or 'BGR', got {color_order!r}")
