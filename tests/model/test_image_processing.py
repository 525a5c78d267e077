"""Tests for EveImageProcessor: resize rules, normalisation, mode conversion and refusal of bad files."""

import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from model.image_processing_eve import CLIP_MEAN, CLIP_STD, EveImageProcessor


@pytest.fixture
def processor() -> EveImageProcessor:
    return EveImageProcessor()


# ---- resize rules -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "target", "tokens"),
    [
        ((1600, 1600), (1600, 1600), 2551),
        ((1920, 1080), (2144, 1216), 2585),
        ((640, 480), (1856, 1408), 2597),
        ((4000, 1000), (3200, 800), 2526),
        ((336, 336), (1600, 1600), 2551),  # small images are upscaled
        ((800, 3200), (800, 3200), 2601),  # tall: 100 rows, so more row-split tokens
        ((23, 575), (320, 8000), 2751),  # 575 / s / 32 = 250.00000000000003 in floats; must not become 251
    ],
)
def test_inference_targets_and_tokens(processor, size, target, tokens):
    assert processor.target_size(*size) == target
    assert processor.num_image_tokens(target[1], target[0]) == tokens


@pytest.mark.parametrize(
    ("size", "target"),
    [
        ((640, 480), (640, 480)),  # not downscaled, already on the grid
        ((1920, 1080), (1920, 1088)),  # not downscaled, height rounded to the nearest multiple
        ((1000, 700), (992, 704)),
        ((4000, 1000), (3200, 800)),  # downscaled to area 1600**2
        ((3200, 3200), (1600, 1600)),
        ((20, 10), (32, 32)),  # at least one patch per side
    ],
)
def test_train_targets(processor, size, target):
    assert processor.target_size(*size, mode="train") == target


def test_max_size_override(processor):
    assert processor.target_size(1600, 1600, max_size=800) == (800, 800)
    assert processor.target_size(3200, 3200, mode="train", max_size=800) == (800, 800)


def test_small_patch_config():
    small = EveImageProcessor(max_size=192, patch_stride=8, dense_stride=2)
    assert small.patch_size == 16
    for mode in ("inference", "train"):
        assert small.target_size(384, 96, mode=mode) == (384, 96)
        assert small.target_size(192, 192, mode=mode) == (192, 192)
    assert small.num_image_tokens(96, 384) == 1 + 6 * 25
    pixels = small.preprocess(Image.new("RGB", (384, 96)))
    assert pixels.shape == (3, 96, 384)


def test_bad_arguments_raise(processor):
    with pytest.raises(ValueError, match="unknown resize mode"):
        processor.target_size(10, 10, mode="crop")
    with pytest.raises(ValueError, match="positive"):
        processor.target_size(0, 10)


# ---- tensors ------------------------------------------------------------------------------------------------------


def test_white_image_normalisation(processor):
    pixels = processor.preprocess(Image.new("RGB", (50, 50), "white"), max_size=64)
    assert pixels.dtype == torch.float32
    assert pixels.shape == (3, 64, 64)
    expected = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(pixels[:, 10, 20], expected)
    torch.testing.assert_close(pixels.amin(dim=(1, 2)), expected)


def test_every_pixel_is_normalised_as_the_official_float32_formula(processor):
    rgb = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)  # kept at its size in train mode
    pixels = processor.preprocess(Image.fromarray(rgb), mode="train")
    mean, std = np.asarray(CLIP_MEAN, dtype=np.float32), np.asarray(CLIP_STD, dtype=np.float32)
    expected = ((rgb.astype(np.float32) / np.float32(255) - mean) / std).transpose(2, 0, 1)
    assert pixels.is_contiguous() and torch.equal(pixels, torch.from_numpy(np.ascontiguousarray(expected)))


def test_channel_order_is_chw(processor):
    pixels = processor.preprocess(Image.new("RGB", (64, 32), (255, 0, 0)), mode="train")
    assert pixels.shape == (3, 32, 64)
    assert pixels[0].mean() > 1 and pixels[1].mean() < -1 and pixels[2].mean() < -1


def test_call_is_list_in_list_out(processor):
    out = processor([Image.new("RGB", (640, 480)), Image.new("RGB", (64, 64))], mode="train")
    assert [tuple(t.shape) for t in out] == [(3, 480, 640), (3, 64, 64)]


def test_paths_and_pil_give_same_tensor(processor, tmp_path):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    path = tmp_path / "noise.png"
    image.save(path)
    reference = processor.preprocess(image, mode="train")
    with Image.open(path) as lazy:
        for source in (str(path), path, lazy):
            torch.testing.assert_close(processor.preprocess(source, mode="train"), reference)


def test_from_config_and_to_dict():
    config = SimpleNamespace(
        image_max_size=800, patch_stride=8, dense_stride=2, image_mean=[0.5] * 3, image_std=[0.25] * 3
    )
    proc = EveImageProcessor.from_config(config)
    assert proc.patch_size == 16 and proc.max_size == 800
    settings = proc.to_dict()
    assert settings["image_mean"] == [0.5] * 3
    assert EveImageProcessor(**settings).to_dict() == settings


# ---- modes and orientation ----------------------------------------------------------------------------------------


def _with_transparency(image: Image.Image, index: int) -> Image.Image:
    image.info["transparency"] = index
    return image


def _float_ramp() -> Image.Image:
    return Image.fromarray(np.array([[0.0, 500.0, 1000.0]], dtype=np.float32), mode="F")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: Image.new("1", (3, 1), 1), (255, 255, 255)),
        (lambda: Image.new("L", (3, 1), 128), (128, 128, 128)),
        (lambda: Image.new("LA", (3, 1), (128, 255)), (128, 128, 128)),
        (lambda: Image.new("LA", (3, 1), (0, 0)), (255, 255, 255)),  # transparent -> white, not black
        (lambda: Image.new("RGB", (3, 1), (255, 0, 0)).convert("P"), (255, 0, 0)),
        (lambda: _with_transparency(Image.new("P", (3, 1), 0), 0), (255, 255, 255)),
        (lambda: Image.new("RGBA", (3, 1), (255, 0, 0, 255)), (255, 0, 0)),
        (lambda: Image.new("RGBA", (3, 1), (255, 0, 0, 0)), (255, 255, 255)),
        (lambda: Image.new("RGBA", (3, 1), (0, 0, 0, 128)), (127, 127, 127)),
        (lambda: Image.new("CMYK", (3, 1), (0, 0, 0, 0)), (255, 255, 255)),
        (lambda: Image.new("CMYK", (3, 1), (0, 255, 255, 0)), (255, 0, 0)),
        (lambda: Image.new("I;16", (3, 1), 32768), (128, 128, 128)),  # mid grey stays mid grey
        (lambda: Image.new("I;16", (3, 1), 65535), (255, 255, 255)),
        (lambda: Image.new("I", (3, 1), 100), (100, 100, 100)),
        (lambda: Image.new("I", (3, 1), 32768), (128, 128, 128)),  # 16-bit data stored as 32-bit
        (lambda: Image.new("F", (3, 1), 100.0), (100, 100, 100)),
    ],
)
def test_modes_convert_to_rgb(processor, make, expected):
    rgb = processor.load_image(make())
    assert rgb.mode == "RGB"
    assert np.abs(np.asarray(rgb, dtype=int) - np.array(expected)).max() <= 2


def test_float_image_is_scaled_by_its_maximum(processor):
    grey = np.asarray(processor.load_image(_float_ramp()))[0, :, 0]
    assert grey.tolist() == [0, 128, 255]


def test_sixteen_bit_png_from_disk_stays_grey(processor, tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(path)
    assert np.asarray(processor.load_image(path)).mean() == pytest.approx(128, abs=1)


def _rotated_jpeg(folder: Path) -> Path:
    """A 40 x 20 JPEG whose EXIF orientation says: rotate 90 degrees clockwise to display (20 x 40)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = folder / "rotated.jpg"
    Image.new("RGB", (40, 20), "blue").save(path, exif=exif)
    return path


def test_exif_orientation_is_applied(processor, tmp_path):
    path = _rotated_jpeg(tmp_path)
    with Image.open(path) as raw:
        assert raw.size == (40, 20)
    assert processor.load_image(path).size == (20, 40)
    assert processor.preprocess(path, mode="train").shape == (3, 32, 32)


def test_the_callers_image_is_left_untouched(processor, tmp_path):
    with Image.open(_rotated_jpeg(tmp_path)) as image:
        assert processor.preprocess(image, mode="train").shape == (3, 32, 32)
        assert image.size == (40, 20)
        assert image.getexif().get(0x0112) == 6


# ---- bad input ----------------------------------------------------------------------------------------------------


def _truncated_png(path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("corrupt.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)),
        ("empty.jpg", lambda p: p.write_bytes(b"")),
        ("notes.png", lambda p: p.write_text("this is not an image\n")),
        ("truncated.png", _truncated_png),
        ("missing.png", lambda p: None),
    ],
)
def test_unreadable_files_raise_value_error(processor, tmp_path, name, write):
    path = tmp_path / name
    write(path)
    with pytest.raises(ValueError, match=rf"{name} is not a readable image"):
        processor.preprocess(path)


def test_truncated_pil_image_raises(processor, tmp_path):
    path = tmp_path / "cut.png"
    _truncated_png(path)
    with Image.open(path) as lazy, pytest.raises(ValueError, match="cut.png is not a readable image"):
        processor.load_image(lazy)


def _png_claiming_size(path: Path, width: int, height: int) -> None:
    """A real 1x1 PNG whose IHDR is patched to claim width x height; decoding it would need gigabytes."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC over chunk type + IHDR data
    path.write_bytes(bytes(data))


@pytest.fixture
def no_decode(monkeypatch):
    """Record any attempt to decode pixels."""
    calls = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append(self))
    return calls


@pytest.mark.parametrize(
    ("width", "height", "size_text"),
    [(100_000, 100_000, "10000000000 pixels"), (10_000, 10_000, "10000x10000")],  # PIL's own check, then ours
)
def test_decompression_bomb_is_refused_before_decoding(processor, tmp_path, no_decode, width, height, size_text):
    path = tmp_path / "bomb.png"
    _png_claiming_size(path, width, height)
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match=rf"bomb.png is not a readable image: .*{size_text}"):
        processor.load_image(path)
    assert no_decode == []
    assert Image.MAX_IMAGE_PIXELS == limit  # PIL's global setting is left alone


def test_large_images_respect_max_image_pixels(tmp_path, no_decode):
    strict = EveImageProcessor(max_image_pixels=1_000_000)
    path = tmp_path / "big.png"
    Image.new("1", (2000, 1000)).save(path)
    with pytest.raises(ValueError, match="big.png is not a readable image: 2000x1000 pixels exceeds"):
        strict.load_image(path)
    with pytest.raises(ValueError, match="2000x1000"):
        strict.load_image(Image.new("1", (2000, 1000)))
    assert no_decode == []
