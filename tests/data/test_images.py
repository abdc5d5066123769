from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data import images
from pipeline.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDecodeError,
    draft_factor_for,
    load_image,
    load_image_array,
    normalize_images,
    read_image_size,
    to_tensor,
)
from storage.hashing import file_fingerprint


def _gradient(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    return Image.fromarray(np.concatenate([np.broadcast_to(x, (height, width, 1)),
                                           np.broadcast_to(y, (height, width, 1)),
                                           np.full((height, width, 1), 128.0)], axis=2).astype(np.uint8))  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "fmt", "expected"),
    [
        ("L", "PNG", (77, 77, 77)),
        ("1", "PNG", (255, 255, 255)),
        ("LA", "PNG", (77, 77, 77)),
        ("RGBA", "PNG", (200, 30, 10)),  # alpha dropped, colour kept
        ("CMYK", "JPEG", None),
        ("I;16", "PNG", (128, 128, 128)),
        ("P", "PNG", (200, 30, 10)),
    ],
)
def test_every_mode_decodes_to_rgb(tmp_path: Path, mode: str, fmt: str, expected: tuple | None) -> None:
    path = tmp_path / f"img.{fmt.lower()}"
    if mode == "I;16":
        Image.fromarray(np.full((6, 8), 128 * 257, dtype=np.uint16)).save(path)  # 16-bit grey, half range
    elif mode == "1":
        Image.new("1", (8, 6), 1).save(path)
    elif mode in ("L", "LA"):
        Image.new(mode, (8, 6), 77 if mode == "L" else (77, 10)).save(path)
    elif mode == "RGBA":
        Image.new("RGBA", (8, 6), (200, 30, 10, 0)).save(path)
    elif mode == "P":
        image = Image.new("RGB", (8, 6), (200, 30, 10)).quantize(4)
        image.info["transparency"] = 0
        image.save(path, transparency=0)
    else:
        Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    loaded = load_image(path)
    assert loaded.image.mode == "RGB" and loaded.image.size == (8, 6) and loaded.draft_factor == 1
    pixel = loaded.image.getpixel((3, 3))
    if expected is None:
        assert pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60
    else:
        assert pixel == expected


def test_exif_orientation_is_ignored(tmp_path: Path) -> None:
    image = _gradient(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": raw pixels must stay 40x20
    image.save(tmp_path / "o.jpg", exif=exif.tobytes())
    loaded = load_image(tmp_path / "o.jpg")
    assert loaded.image.size == (40, 20)


def test_decode_errors_name_the_file_and_cause(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match=r"missing\.jpg: file not found"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageDecodeError, match=r"junk\.jpg: not a readable image"):
        load_image(tmp_path / "junk.jpg")
    _gradient(256, 256).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match=r"cut\.jpg: cannot decode \(image file is truncated"):
        load_image(tmp_path / "cut.jpg")
    assert read_image_size(tmp_path / "cut.jpg") == (256, 256)  # the header alone is still readable
    with pytest.raises(ImageDecodeError, match=r"junk\.jpg"):
        read_image_size(tmp_path / "junk.jpg")


@pytest.mark.parametrize(("zoom", "factor"), [(1.0, 1), (0.6, 1), (0.5, 2), (0.3, 2), (0.25, 4), (0.2, 4), (0.05, 8)])
def test_draft_factor_keeps_crop_resolution(zoom: float, factor: int) -> None:
    assert draft_factor_for(zoom) == factor


def test_draft_decode_reduces_jpeg_and_maps_back(tmp_path: Path) -> None:
    _gradient(203, 101).save(tmp_path / "g.jpg", quality=95)
    _gradient(203, 101).save(tmp_path / "g.png")
    loaded = load_image(tmp_path / "g.jpg", draft_scale=0.3)
    assert loaded.draft_factor == 2 and loaded.original_size == (203, 101)
    assert loaded.image.size == (102, 51)  # libjpeg rounds up
    np.testing.assert_allclose(loaded.draft_to_original @ [10.0, 4.0, 1.0], [20.5, 8.5])
    # Pixel i of the reduced image is the mean of original pixels 2i and 2i + 1, i.e. centred at 2i + 0.5.
    full = np.asarray(load_image(tmp_path / "g.jpg").image, dtype=np.float64)
    reduced = np.asarray(loaded.image, dtype=np.float64)
    pooled = (full[0:100:2, 0:200:2] + full[0:100:2, 1:201:2] + full[1:101:2, 0:200:2] + full[1:101:2, 1:201:2]) / 4
    assert np.abs(reduced[:50, :100] - pooled).mean() < 2.0
    assert load_image(tmp_path / "g.png", draft_scale=0.1).draft_factor == 1  # draft is JPEG-only
    assert load_image(tmp_path / "g.jpg", draft_scale=0.9).draft_factor == 1


def test_fingerprint_is_a_content_hash(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "b.bin").write_bytes(b"abc")
    (tmp_path / "c.bin").write_bytes(b"abd")
    fa = file_fingerprint(tmp_path / "a.bin")
    assert len(fa) == 32 and int(fa, 16) >= 0
    assert fa == file_fingerprint(tmp_path / "b.bin") != file_fingerprint(tmp_path / "c.bin")


def test_to_tensor_normalises_and_swaps_colour_order() -> None:
    crop = Image.new("RGB", (5, 4), (255, 0, 51))
    rgb = to_tensor(crop, "RGB")
    bgr = to_tensor(crop, "BGR")
    assert rgb.shape == (3, 4, 5) and rgb.dtype == torch.float32
    expected_rgb = [(v / 255 - m) / s for v, m, s in zip((255, 0, 51), IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    expected_bgr = [(v / 255 - m) / s for v, m, s in zip((51, 0, 255), IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    np.testing.assert_allclose(rgb[:, 0, 0].numpy(), expected_rgb, rtol=1e-5)
    np.testing.assert_allclose(bgr[:, 2, 3].numpy(), expected_bgr, rtol=1e-5)
    with pytest.raises(ValueError, match="color_order"):
        to_tensor(crop, "rgb")


def _noise(mode: str, size: tuple[int, int] = (64, 48)) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    return Image.fromarray(pixels if mode == "CMYK" else pixels[..., :3], "CMYK" if mode == "CMYK" else "RGB")


@pytest.mark.parametrize(
    ("name", "save", "exif_orientation", "opencv"),
    [
        ("rgb420.jpg", {"quality": 90}, False, True),
        ("rgb444.jpg", {"quality": 90, "subsampling": 0}, False, True),
        ("progressive.jpg", {"quality": 80, "progressive": True}, False, True),
        ("grey.jpg", {"quality": 90}, False, True),
        ("turned.jpg", {"quality": 90}, False, True),  # EXIF orientation 6 on the raw grid: ignored, as load_image
        ("turned.jpg", {"quality": 90}, True, False),  # ... and applied: Pillow's turn
        ("cmyk.jpg", {"quality": 90}, False, False),  # OpenCV's CMYK conversion is not Pillow's: Pillow decodes
        ("rgb.png", {}, False, False),
    ],
)
def test_array_decode_gives_load_images_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, save: dict, exif_orientation: bool, opencv: bool
) -> None:
    image = _noise("CMYK" if name.startswith("cmyk") else "RGB")
    if name.startswith("grey"):
        image = image.convert("L")
    if name.startswith("turned"):
        exif = Image.Exif()
        exif[0x0112] = 6
        save = {**save, "exif": exif.tobytes()}
    image.save(tmp_path / name, **save)
    expected = np.asarray(load_image(tmp_path / name, exif_orientation=exif_orientation).image)
    pillow_calls = []
    real_load_image = images.load_image
    monkeypatch.setattr(images, "load_image", lambda *a, **k: pillow_calls.append(a) or real_load_image(*a, **k))
    rgb = load_image_array(tmp_path / name, "RGB", exif_orientation=exif_orientation)
    bgr = load_image_array(tmp_path / name, "BGR", exif_orientation=exif_orientation)
    assert rgb.dtype == np.uint8 and rgb.shape == expected.shape
    np.testing.assert_array_equal(rgb, expected)
    np.testing.assert_array_equal(bgr, expected[:, :, ::-1])
    assert len(pillow_calls) == (0 if opencv else 2)  # which decoder ran


def test_array_decode_of_the_real_photos_is_pillows(real_data: Path) -> None:
    photos = sorted(real_data.glob("*/images/**/*.jpg"))
    assert len(photos) == 9
    for photo in photos:
        np.testing.assert_array_equal(load_image_array(photo, "RGB"), np.asarray(load_image(photo).image))


def test_array_decode_errors_name_the_file_and_cause(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match=r"missing\.jpg: file not found"):
        load_image_array(tmp_path / "missing.jpg", "RGB")
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff" + b"not a jpeg at all" * 10 + b"\xff\xd9")
    with pytest.raises(ImageDecodeError, match=r"junk\.jpg: not a readable image"):
        load_image_array(tmp_path / "junk.jpg", "RGB")
    _gradient(256, 256).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])  # no end-of-image marker: Pillow says why
    with pytest.raises(ImageDecodeError, match=r"cut\.jpg: cannot decode \(image file is truncated"):
        load_image_array(tmp_path / "cut.jpg", "BGR")
    with pytest.raises(ValueError, match="color_order"):
        load_image_array(tmp_path / "full.jpg", "rgb")


def test_normalize_images_is_the_imagenet_normalisation_of_each_pixel_channels_first() -> None:
    pixels = torch.randint(0, 256, (2, 5, 4, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = normalize_images(pixels)
    assert out.shape == (2, 3, 5, 4) and out.dtype == torch.float32
    # the float32 arithmetic to_tensor has always done, in numpy
    array = pixels.numpy().astype(np.float32) / 255.0
    expected = (array - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    np.testing.assert_array_equal(out.numpy(), expected.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(to_tensor(Image.fromarray(pixels[1].numpy()), "RGB").numpy(), out[1].numpy())
    with pytest.raises(ValueError, match="uint8"):
        normalize_images(pixels.float())
