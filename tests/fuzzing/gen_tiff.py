"""TIFF variants: modes (RGB, RGBA, grey, 1-bit, palette, CMYK, 16-bit grey and RGB, grey + alpha), compressions
(none, LZW, deflate, PackBits, JPEG, CCITT G3 / G4), MinIsWhite photometry and the Orientation tag, written by
Pillow or, where Pillow cannot write a variant, by the small TIFF writer below.

Oracle: every file is made from a known RGB picture, so what a viewer shows is computed here in numpy (palette
lookup, CMYK -> RGB, MinIsWhite inversion, 16-bit / 257, the eight EXIF orientations as array flips and
transposes). ``load_image`` must return it (JPEG within a mean difference of 12) and ``image_size`` its
``(height, width)``. Pillow decodes every one of these files, so a refusal counts as "valid refused".
"""

from __future__ import annotations

import struct

import numpy as np

from fuzzing.cases import Case, require

COMPRESSIONS = ["raw", "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits", "jpeg"]


def setup(folder):
    return {}


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for stored pixels ``array`` with EXIF / TIFF Orientation ``orientation``."""
    transpose = lambda a: np.swapaxes(a, 0, 1)  # noqa: E731
    return {
        1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: transpose, 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(transpose(a), 2), 8: lambda a: np.rot90(a, 1),
    }[orientation](array)


def write_tiff(path, data: bytes, width: int, height: int, bits: list[int], photometric: int, extra: int | None = None,
               orientation: int | None = None) -> None:
    """A little-endian, uncompressed, one-strip TIFF."""
    samples = len(bits)
    entries = [(256, 4, [width]), (257, 4, [height]), (258, 3, bits), (259, 3, [1]), (262, 3, [photometric]),
               (273, 4, [0]), (277, 3, [samples]), (278, 4, [height]), (279, 4, [len(data)]), (284, 3, [1])]
    if orientation is not None:
        entries.append((274, 3, [orientation]))
    if extra is not None:
        entries.append((338, 3, [extra]))
    entries.sort()
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    out_of_line = bytearray()
    base = ifd_offset + ifd_size
    data_offset = base + 64  # room for the out-of-line values (BitsPerSample of up to 4 samples)
    ifd = bytearray(struct.pack("<H", len(entries)))
    for tag, kind, values in entries:
        if tag == 273:
            values = [data_offset]
        fmt = "<" + ("H" if kind == 3 else "I") * len(values)
        raw = struct.pack(fmt, *values)
        if len(raw) <= 4:
            ifd += struct.pack("<HHI", tag, kind, len(values)) + raw.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, kind, len(values), base + len(out_of_line))
            out_of_line += raw
    ifd += struct.pack("<I", 0)
    body = b"II*\0" + struct.pack("<I", ifd_offset) + bytes(ifd) + bytes(out_of_line).ljust(64, b"\0") + data
    path.write_bytes(body)


def _picture(rng):
    height, width = int(rng.integers(4, 25)), int(rng.integers(4, 25))
    blocks = rng.integers(0, 256, size=(max(1, height // 4), max(1, width // 4), 3), dtype=np.uint8)
    picture = np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1)[:height, :width]  # blocks: JPEG keeps them
    picture = np.pad(picture, ((0, height - picture.shape[0]), (0, width - picture.shape[1]), (0, 0)), mode="edge")
    picture[0, 0], picture[-1, -1] = 0, 255  # the full range (16-bit files are then read by it)
    return picture


def make_case(rng, context, folder):
    from PIL import Image

    from segformer.common.images.image_io import image_size, load_image

    picture = _picture(rng)
    grey = picture[:, :, 0]
    height, width = grey.shape
    variant = str(rng.choice(["RGB", "RGBA", "L", "1", "P", "CMYK", "I;16", "L_miniswhite", "1_miniswhite", "LA",
                              "RGB16"]))
    orientation = int(rng.choice([1, 1, 2, 3, 4, 5, 6, 7, 8])) if rng.random() < 0.5 else None
    compression = str(rng.choice(COMPRESSIONS))
    path = folder / f"image.{rng.choice(['tif', 'tiff', 'TIF'])}"
    tolerance = 0.0
    info = {274: orientation} if orientation else {}
    if variant in ("L_miniswhite", "1_miniswhite", "LA", "RGB16"):
        compression = "raw"
        if variant == "L_miniswhite":
            write_tiff(path, (255 - grey).tobytes(), width, height, [8], 0, orientation=orientation)
            shown = grey
        elif variant == "1_miniswhite":
            bits = grey > 127
            write_tiff(path, np.packbits(~bits, axis=1).tobytes(), width, height, [1], 0, orientation=orientation)
            shown = np.where(bits, 255, 0).astype(np.uint8)
        elif variant == "LA":
            alpha = np.full_like(grey, 255)
            write_tiff(path, np.stack([grey, alpha], -1).tobytes(), width, height, [8, 8], 1, extra=2,
                       orientation=orientation)
            shown = grey
        else:
            write_tiff(path, (picture.astype("<u2") * 257).tobytes(), width, height, [16, 16, 16], 2,
                       orientation=orientation)
            shown = picture
    else:
        if variant == "1":
            compression = str(rng.choice(["raw", "group3", "group4", "packbits", "tiff_lzw"]))
            bits = grey > 127
            image = Image.fromarray(bits)
            shown = np.where(bits, 255, 0).astype(np.uint8)
        elif variant == "P":
            image = Image.fromarray(picture).quantize(16)
            palette = np.array(image.getpalette()[: 3 * 256], dtype=np.uint8).reshape(-1, 3)
            shown = palette[np.asarray(image)]
            compression = compression if compression != "jpeg" else "raw"
        elif variant == "CMYK":
            key = rng.integers(0, 256, size=grey.shape).astype(np.uint8) if rng.random() < 0.5 else np.zeros_like(grey)
            cmy = 255 - picture
            image = Image.fromarray(np.dstack([cmy, key]), "CMYK")
            shown = np.round(picture.astype(np.float64) * (255 - key[:, :, None]) / 255).astype(np.uint8)
            tolerance = 1.0
            compression = compression if compression != "jpeg" else "raw"
        elif variant == "I;16":
            image = Image.fromarray(grey.astype(np.uint16) * 257)
            shown = grey
            compression = compression if compression in ("raw", "tiff_lzw", "tiff_deflate") else "raw"
        elif variant == "RGBA":
            image = Image.fromarray(np.dstack([picture, np.full_like(grey, 255)]), "RGBA")
            shown = picture
            compression = compression if compression != "jpeg" else "raw"
        elif variant == "L":
            image = Image.fromarray(grey)
            shown = grey
        else:
            image = Image.fromarray(picture)
            shown = picture
        if compression == "jpeg":
            tolerance = 12.0
        image.save(path, compression=None if compression == "raw" else compression, tiffinfo=info)
    shown = orient(shown if shown.ndim == 3 else np.repeat(shown[:, :, None], 3, axis=2), orientation or 1)
    description = {"variant": variant, "compression": compression, "orientation": orientation,
                   "size": [height, width], "name": path.name}

    def run():
        return load_image(path), image_size(path)

    def check(answer, caught):
        decoded, size = answer
        require(decoded.dtype == np.uint8 and decoded.shape == shown.shape,
                f"decoded {decoded.dtype} {decoded.shape}, a viewer shows {shown.shape}")
        diff = np.abs(decoded.astype(np.int16) - shown.astype(np.int16))
        bad = diff.mean() > tolerance if tolerance >= 12 else diff.max() > tolerance
        require(not bad, f"decoded colours differ from what a viewer shows: mean |diff| {diff.mean():.1f}, "
                         f"max {diff.max()} of 255")
        require(tuple(size) == shown.shape[:2], f"image_size {tuple(size)}, the image is {shown.shape[:2]}")

    return Case(description, run, expect="ok", names=(path.name, "tiff", "TIFF"), check=check)
