"""Image files decoded as people expect, bad files named with their reason, inputs expanded.

Expected pixels are computed here with numpy from the arrays the files were written from.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

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
    image = (np.arange(5 * 4 * 3).reshape(5, 4, 3) * 1000).astype(np.uint16)
    with pytest.raises(ValueError, match=r"images\[0\]: integer image \(uint16\) has values 0\.\.59000, outside 0\.\.255.*rescale_factor"):
        processor(image, return_tensors="np")
    got = processor(image, rescale_factor=1 / 65535, return_tensors="np")["pixel_values"][0]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    want = ((image.astype(np.float64) / 65535 - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)
    negative = np.full((5, 4, 3), -3, np.int32)
    with pytest.raises(ValueError, match="outside 0..255"):
        processor(negative)
    with pytest.raises(ValueError, match="NaN or infinity"):
        processor(np.full((5, 4, 3), np.inf, np.float32))
    assert processor(image.clip(0, 255), return_tensors="np")["pixel_values"].shape == (1, 3, 5, 4)


# ----------------------------------------------------------------------------------------------------------------
# TIFF variants: the colours an image viewer shows (Pillow's own conversion to RGB is the reference here)


def _rgb_pixels(height: int = 20, width: int = 30) -> np.ndarray:
    return np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)


_PIL_VARIANTS = {
    "cmyk": lambda rgb: rgb.convert("CMYK"),
    "palette": lambda rgb: rgb.convert("P"),
    "one-bit": lambda rgb: rgb.convert("1"),
    "ycbcr": lambda rgb: rgb.convert("YCbCr"),
    "grey-alpha": lambda rgb: rgb.convert("LA"),
    "rgba": lambda rgb: rgb.convert("RGBA"),
}


_COMPRESSIONS = [  # every pair Pillow can write (CCITT group 4 takes 1-bit pixels only; JPEG no palette / 1-bit)
    (variant, compression) for variant in sorted(_PIL_VARIANTS) for compression in (None, "tiff_lzw", "jpeg", "group4", "packbits")
    if (compression != "group4" or variant == "one-bit") and (compression != "jpeg" or variant not in ("one-bit", "palette"))
]


@pytest.mark.parametrize("variant, compression", _COMPRESSIONS)
def test_tiff_variants_decode_to_the_viewers_colours(tmp_path, variant, compression):
    picture = _PIL_VARIANTS[variant](Image.fromarray(_rgb_pixels()))
    path = tmp_path / f"{variant}.tif"
    picture.save(path, compression=compression)
    with Image.open(path) as stored:
        expected = np.asarray(stored.convert("RGB"))
    np.testing.assert_array_equal(load_image(path), expected)
    assert image_size(path) == expected.shape[:2]


def test_min_is_white_tiffs_are_inverted(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    grey = np.random.default_rng(3).integers(0, 256, (12, 17), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "white8.tif", grey, photometric="miniswhite")
    np.testing.assert_array_equal(load_image(tmp_path / "white8.tif"), np.repeat(255 - grey[:, :, None], 3, axis=2))
    ink = grey > 128
    tifffile.imwrite(tmp_path / "white1.tif", ink, photometric="miniswhite")  # 1-bit, set bits are black
    want = np.where(ink, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(load_image(tmp_path / "white1.tif"), np.repeat(want[:, :, None], 3, axis=2))


def test_two_channel_tiff_from_tifffile_is_its_grey(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    grey = np.random.default_rng(4).integers(0, 256, (9, 14), dtype=np.uint8)
    alpha = np.full_like(grey, 90)
    tifffile.imwrite(tmp_path / "la.tif", np.stack([grey, alpha], -1), photometric="minisblack", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(load_image(tmp_path / "la.tif"), np.repeat(grey[:, :, None], 3, axis=2))


_ORIENTED = {  # how a viewer shows stored pixels under each TIFF / EXIF orientation value
    1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, k=-1), 7: lambda a: np.rot90(a, k=2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}


@pytest.mark.parametrize("writer", ["pillow", "tifffile-tiled"])
@pytest.mark.parametrize("orientation", sorted(_ORIENTED))
def test_tiff_orientation_tag_is_applied(tmp_path, orientation, writer):
    pixels = _rgb_pixels(14, 22)
    path = tmp_path / "turned.tif"
    if writer == "pillow":
        Image.fromarray(pixels).save(path, tiffinfo={ORIENTATION: orientation})
    else:
        tifffile = pytest.importorskip("tifffile")
        tifffile.imwrite(path, pixels, photometric="rgb", tile=(16, 16), extratags=[(ORIENTATION, "H", 1, orientation, True)])
    expected = _ORIENTED[orientation](pixels)
    with Image.open(path) as stored:  # Pillow's EXIF rule agrees with the table above
        np.testing.assert_array_equal(np.asarray(ImageOps.exif_transpose(stored).convert("RGB")), expected)
    np.testing.assert_array_equal(load_image(path), expected)
    assert image_size(path) == expected.shape[:2]


@pytest.mark.parametrize("variant, compression", [("palette", None), ("cmyk", None), ("ycbcr", "tiff_lzw"),
                                                  ("one-bit", "group4"), ("grey-alpha", "jpeg")])
@pytest.mark.parametrize("orientation", [3, 5, 6, 8])
@pytest.mark.parametrize("tifffile", ["tifffile", "Pillow only"])
def test_tiff_orientation_of_files_pillow_decodes(tmp_path, monkeypatch, variant, compression, orientation, tifffile):
    """The turn is applied once, by the table, whatever Pillow's own handling of the tag (which in some versions
    and modes turns the pixels itself, or scrambles them), with or without tifffile."""
    from segformer.common.images import image_io

    if tifffile == "Pillow only":
        monkeypatch.setattr(image_io, "_tifffile", lambda: None)
    picture = _PIL_VARIANTS[variant](Image.fromarray(_rgb_pixels(14, 22)))
    picture.save(tmp_path / "plain.tif", compression=compression)
    picture.save(tmp_path / "turned.tif", compression=compression, tiffinfo={ORIENTATION: orientation})
    with Image.open(tmp_path / "plain.tif") as stored:
        expected = _ORIENTED[orientation](np.asarray(stored.convert("RGB")))
    np.testing.assert_array_equal(load_image(tmp_path / "turned.tif"), expected)
    assert image_size(tmp_path / "turned.tif") == expected.shape[:2]


def test_segmenter_honours_the_tiff_orientation(tmp_path):
    pytest.importorskip("torch")
    from conftest import fixture_path
    from segformer import Segmenter

    pixels = _rgb_pixels(40, 64)
    Image.fromarray(pixels).save(tmp_path / "turned.tif", tiffinfo={ORIENTATION: 6})
    Image.fromarray(np.ascontiguousarray(np.rot90(pixels, k=-1))).save(tmp_path / "upright.png")
    segmenter = Segmenter.from_pretrained(str(fixture_path("hf/tiny-seg")), resize="none")
    turned, upright = segmenter([tmp_path / "turned.tif", tmp_path / "upright.png"], keep_confidence=False)
    assert turned.label_map.shape == (64, 40)
    np.testing.assert_array_equal(turned.label_map, upright.label_map)


# ----------------------------------------------------------------------------------------------------------------
# Non-regular files are refused from stat alone (opening a FIFO would block forever)


_NON_REGULAR_PROBE = r"""
import os, sys
from segformer.common.images.image_io import BadImageError, check_image, image_size, load_image
path = sys.argv[1]
for call in (load_image, image_size):
    try:
        call(path)
    except BadImageError as err:
        print(call.__name__, err.reason)
print("check_image", check_image(path))
"""


def _probe(path) -> str:
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", _NON_REGULAR_PROBE, str(path)], capture_output=True, text=True,
                          timeout=60, env=env)  # a hang fails the test instead of stalling the suite
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_fifo_is_refused_without_opening_it(tmp_path):
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    os.mkfifo(tmp_path / "pipe.png")
    out = _probe(tmp_path / "pipe.png")
    for call in ("load_image", "image_size", "check_image"):
        assert f"{call} is a FIFO (named pipe), not a regular image file" in out


def test_device_and_folder_are_refused(tmp_path):
    import os

    if os.path.exists("/dev/zero"):  # endless: reading it as an image would never finish
        assert "load_image is a character device, not a regular image file" in _probe("/dev/zero")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(BadImageError, match="folder.png: is a folder"):
        load_image(tmp_path / "folder.png")


def test_tiff_header_size_honours_the_pixel_limit(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "tiled.tif", _rgb_pixels(40, 50), photometric="rgb", tile=(16, 16))
    assert image_size(tmp_path / "tiled.tif", max_pixels=2000) == (40, 50)
    for call in (image_size, load_image):
        with pytest.raises(BadImageError, match=r"tiled.tif: 50x40 = 2,000 pixels is above the limit of 1,999"):
            call(tmp_path / "tiled.tif", max_pixels=1999)
