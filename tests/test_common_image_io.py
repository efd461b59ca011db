"""Image files decoded as people expect, bad files named with their reason, inputs expanded.

Expected pixels are computed here with numpy from the arrays the files were written from.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segformer.common.images.image_io import BadImageError, check_image, expand_inputs, expand_named_inputs, image_size, load_image

ORIENTATION = 0x0112


def _quadrants(height: int = 20, width: int = 40) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2, : width // 2] = (255, 0, 0)
    image[: height // 2, width // 2:] = (0, 255, 0)
    image[height // 2:, : width // 2] = (0, 0, 255)
    image[height // 2:, width // 2:] = (255, 255, 0)
    return image


@pytest.mark.parametrize("orientation, expected", [
    (1, lambda a: a),
    (3, lambda a: a[::-1, ::-1]),
    (6, lambda a: np.rot90(a, k=-1)),  # stored rotated: shown turned 90 degrees clockwise
    (8, lambda a: np.rot90(a, k=1)),
    (2, lambda a: a[:, ::-1]),
])
def test_exif_orientation_is_applied(tmp_path, orientation, expected):
    pixels = _quadrants()
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path, exif=exif)
    got = load_image(path)
    np.testing.assert_array_equal(got, expected(pixels))
    assert image_size(path) == got.shape[:2]


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    pixels = _quadrants(64, 128)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    got = load_image(tmp_path / "photo.jpg").astype(int)
    want = np.rot90(pixels, k=-1).astype(int)
    assert got.shape == (128, 64, 3)
    assert np.abs(got - want)[8:-8, 8:-8].mean() < 6  # JPEG: compare away from the colour edges


@pytest.mark.parametrize("top", [65535, 4095, 255])
def test_16_bit_png_scaled_by_its_real_range(tmp_path, top):
    values = np.linspace(0, top, 30 * 50).reshape(30, 50).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    bits_top = {65535: 65535, 4095: 4095, 255: 255}[top]
    want = np.round(values.astype(np.float64) * 255 / bits_top).astype(np.uint8)
    got = load_image(path)
    np.testing.assert_array_equal(got, np.repeat(want[:, :, None], 3, axis=2))
    assert (got == 255).mean() < 0.01  # not the 99.6 % white of a clipping conversion


def test_float_tiff_unit_range_and_wide_range_and_nan(tmp_path):
    unit = np.linspace(0, 1, 20 * 10, dtype=np.float32).reshape(20, 10)
    Image.fromarray(unit, mode="F").save(tmp_path / "unit.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "unit.tif")[..., 0], np.round(unit.astype(np.float64) * 255).astype(np.uint8))
    wide = np.linspace(-2, 6, 20 * 10, dtype=np.float32).reshape(20, 10)
    Image.fromarray(wide, mode="F").save(tmp_path / "wide.tif")
    want = np.round((wide.astype(np.float64) + 2) * 255 / 8).astype(np.uint8)
    np.testing.assert_array_equal(load_image(tmp_path / "wide.tif")[..., 1], want)
    bad = unit.copy()
    bad[3, 3] = np.nan
    Image.fromarray(bad, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(BadImageError, match=r"nan.tif: floating-point image with NaN"):
        load_image(tmp_path / "nan.tif")
    assert "NaN" in check_image(tmp_path / "nan.tif")


def test_cmyk_palette_and_la_converted(tmp_path):
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    np.testing.assert_allclose(load_image(tmp_path / "cmyk.jpg").reshape(-1, 3).mean(0), [255, 0, 0], atol=3)
    palette_image = Image.new("P", (4, 2))
    palette_image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette_image.putdata([0, 1, 1, 0, 1, 0, 0, 1])
    palette_image.info["transparency"] = 0
    palette_image.save(tmp_path / "pal.png", transparency=0)
    got = load_image(tmp_path / "pal.png")
    indices = np.array([0, 1, 1, 0, 1, 0, 0, 1]).reshape(2, 4)
    np.testing.assert_array_equal(got, np.array([[10, 20, 30], [200, 100, 50]], np.uint8)[indices])
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    alpha = np.full((3, 4), 77, np.uint8)
    Image.fromarray(np.stack([grey, alpha], axis=-1), mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_image(tmp_path / "la.png"), np.repeat(grey[:, :, None], 3, axis=2))


def test_bad_files_named_with_reason(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(_quadrants(64, 64)).save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.png").write_text("this is text, not a picture")
    cases = {
        "truncated.jpg": "truncated",
        "notes.png": "not an image",
        "missing.png": "does not exist",
    }
    for name, reason in cases.items():
        with pytest.raises(BadImageError, match=rf"{name}: .*{reason}") as info:
            load_image(tmp_path / name)
        assert info.value.path.endswith(name) and isinstance(info.value, ValueError)
        assert reason in check_image(tmp_path / name)
    assert check_image(good) is None
    with pytest.raises(BadImageError, match=r"64x64 = 4,096 pixels is above the limit of 1,000.*decompression bomb"):
        load_image(good, max_pixels=1000)


def test_decompression_bomb_refused_by_pillow_limit(tmp_path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # Pillow raises above twice the limit, warns above it
    assert "decompression bomb" in check_image(tmp_path / "big.png")
    Image.new("L", (50, 50)).save(tmp_path / "warn.png")  # 2500: between the limit and twice it
    assert "decompression bomb" in check_image(tmp_path / "warn.png")


def test_expand_folders_globs_lists(tmp_path):
    for name in ["b.png", "a.JPG", "sub/c.webp", "sub/deeper/d.tif", "notes.txt", "sub/readme.md"]:
        path = tmp_path / "photos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    photos = tmp_path / "photos"
    assert expand_inputs([photos]) == [photos / "a.JPG", photos / "b.png", photos / "sub/c.webp", photos / "sub/deeper/d.tif"]
    assert [name for _, name in expand_named_inputs([photos])] == ["a", "b", "sub/c", "sub/deeper/d"]
    assert expand_inputs([str(photos / "**" / "*.*")]) == sorted(
        [photos / "a.JPG", photos / "b.png", photos / "sub/c.webp", photos / "sub/deeper/d.tif"])
    (tmp_path / "list.txt").write_text("# my picks\nphotos/b.png\n\nphotos/notes.txt\n")
    assert expand_inputs([f"@{tmp_path / 'list.txt'}"]) == [tmp_path / "photos/b.png", tmp_path / "photos/notes.txt"]
    assert expand_inputs([photos / "b.png", photos]) == [photos / "b.png", photos / "a.JPG", photos / "sub/c.webp",
                                                         photos / "sub/deeper/d.tif"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"folder .*empty.* holds no image files"):
        expand_inputs([tmp_path / "empty"])
    with pytest.raises(ValueError, match=r"pattern .*\*\.gif.* matches no image files"):
        expand_inputs([str(photos / "*.gif")])
    with pytest.raises(FileNotFoundError, match="file list"):
        expand_inputs(["@" + str(tmp_path / "nope.txt")])


def test_processor_refuses_integers_outside_0_255_unless_told_how():
    from segformer import SegformerImageProcessor

    processor = SegformerImageProcessor(do_resize=False)
    image = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 1000).astype(np.uint16)
    with pytest.raises(ValueError, match=r"images\[0\]: integer image \(uint16\) has values 0\.\.59000, outside 0\.\.255.*rescale_factor"):
        processor(image, return_tensors="np")
    got = processor(image, rescale_factor=1 / 65535, return_tensors="np")["pixel_values"][0]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    want = ((image.astype(np.float64) / 65535 - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)
    negative = np.full((4, 5, 3), -3, np.int32)
    with pytest.raises(ValueError, match="outside 0..255"):
        processor(negative)
    with pytest.raises(ValueError, match="NaN or infinity"):
        processor(np.full((4, 5, 3), np.inf, np.float32))
    assert processor(image.clip(0, 255), return_tensors="np")["pixel_values"].shape == (1, 3, 4, 5)
