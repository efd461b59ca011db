"""Reading image files as people expect, and turning folders / globs / file lists into sorted file lists.

:func:`load_image` decodes any file Pillow reads into a uint8 ``(H, W, 3)`` RGB array:

* EXIF orientation (and a TIFF's Orientation tag) is applied (the picture comes out the way a viewer shows it,
  as transformers' loader does);
* palette (``P`` / ``PA``), grey + alpha (``LA``), CMYK, YCbCr, LAB, HSV, min-is-white and 1-bit images go through
  Pillow's conversions to RGB (alpha dropped); TIFFs are read by ``tifffile`` (extra ``tiff``) where their samples
  are grey or RGB values of 8 bits or more and its codecs decode them, by Pillow otherwise (LZW, JPEG, CCITT ...);
* images deeper than 8 bits are scaled by their real range instead of clipped: integer images
  (16-bit PNG / TIFF, mode ``I``) by the smallest bit depth that holds their largest value (a 12-bit scan
  in a 16-bit file is divided by 4095, a full 16-bit one by 65535; values <= 255 are kept); float images
  (mode ``F``) with all values in [0, 1] are multiplied by 255, others are mapped linearly from their
  minimum..maximum to 0..255; negative integer images likewise; NaN / Inf pixels are an error.

Every failure (missing, unreadable, truncated, not an image, above the pixel limit, not a regular file: a FIFO,
device, socket or folder is refused from ``stat`` before anything opens it) raises
:class:`BadImageError` (a ``ValueError``) whose message names the file and the reason.

:func:`expand_inputs` turns command-line items into files: a folder gives every file with an image
extension below it (recursively), a glob (``photos/**/*.jpg``) its matching image files, ``@list.txt``
(a string; a ``Path`` is always a path) the paths listed in that UTF-8 text file (one per line, relative to
the list's folder; ``#`` starts a comment), and a plain path itself (whatever its extension, so a wrong file
is reported rather than ignored; a file whose name starts with ``@`` is passed as ``./@name.png``). Folder
and glob results are sorted;
duplicates are dropped, the first occurrence kept. Output names (:func:`expand_named_inputs`) keep the
sub-folders below a folder or below a glob's fixed prefix (``shots/**/*.jpg`` names ``shots/a/x.jpg`` ``a/x``);
listed and plain files are named by their stem.
"""

from __future__ import annotations

import glob
import io
import math
import os
import stat
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "check_image",
    "expand_inputs",
    "expand_named_inputs",
    "image_size",
    "image_to_rgb",
    "load_image",
    "open_image",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
_GLOB_CHARS = frozenset("*?[")
_ORIENTATION = 0x0112  # EXIF tag


class BadImageError(ValueError):
    """An image file that cannot be used; ``path`` and ``reason`` are attributes, the message holds both."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def expand_inputs(items: Iterable[str | os.PathLike], what: str = "images") -> list[Path]:
    """Files for ``items`` (folders, globs, ``@list`` files, paths); see the module docstring.

    A folder or glob without image files and a missing ``@list`` file are errors naming the item.
    A plain path that does not exist is kept (the caller reports it with the other bad files).
    """
    return [path for path, _ in expand_named_inputs(items, what)]


def expand_named_inputs(items: Iterable[str | os.PathLike], what: str = "images") -> list[tuple[Path, str]]:
    """Like :func:`expand_inputs`, with an output name per file: the path below its folder (or below a glob's
    fixed leading folders) without the extension (``a/b/photo``) for files found in a folder or by a glob, the
    file's stem otherwise."""
    result: list[tuple[Path, str]] = []
    for item in items:
        text = os.fspath(item)
        if isinstance(item, str) and text.startswith("@"):  # a Path object is always a path
            list_path = Path(text[1:])
            for entry in _list_entries(list_path, text, what):
                path = Path(entry) if Path(entry).is_absolute() else list_path.parent / entry
                result.append((path, path.stem))
            continue
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_image_name(p))
            if not found:
                raise ValueError(f"{what}: folder {text!r} holds no image files (looked for {list(IMAGE_EXTENSIONS)}, recursively)")
            result.extend((p, p.relative_to(path).with_suffix("").as_posix()) for p in found)
        elif not path.exists() and _GLOB_CHARS & set(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if os.path.isfile(p) and _is_image_name(Path(p)))
            if not found:
                raise ValueError(f"{what}: pattern {text!r} matches no image files (extensions {list(IMAGE_EXTENSIONS)})")
            prefix = _glob_prefix(text)
            result.extend((p, Path(os.path.relpath(p, prefix)).with_suffix("").as_posix()) for p in found)
        else:
            result.append((path, path.stem))
    unique: dict[str, tuple[Path, str]] = {}
    for path, name in result:
        unique.setdefault(os.path.normpath(os.path.abspath(path)), (path, name))
    return list(unique.values())


def _glob_prefix(pattern: str) -> str:
    """The fixed folder a glob pattern starts from: its leading components without ``*``, ``?`` or ``[``."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return os.path.join(*fixed) if fixed else os.curdir


def _list_entries(list_path: Path, text: str, what: str) -> list[str]:
    """The paths an ``@list`` file names: one per line, blank lines and ``#`` comments skipped."""
    literal = f"; an image whose name starts with '@' is passed as './{text}'" if os.path.isfile(text) else ""
    try:
        mode = os.stat(list_path).st_mode
    except OSError:
        raise FileNotFoundError(f"{what}: file list {text[1:]!r} (given as {text!r}) does not exist{literal}") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{what}: file list {text[1:]!r} (given as {text!r}) is not a regular file{literal}")
    data = list_path.read_bytes()
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        lines = None
        where = f"byte {data[err.start]:#04x} at offset {err.start} is not UTF-8"
    else:
        where = "it holds NUL bytes" if "\x00" in data.decode("utf-8") else None
    if where is not None:
        raise ValueError(f"{what}: file list {text[1:]!r} (given as {text!r}) is not a text file ({where}); a list "
                         f"holds one image path per line{literal}")
    entries = [line.strip() for line in lines or () if line.strip() and not line.strip().startswith("#")]
    if not entries:
        raise ValueError(f"{what}: file list {text[1:]!r} (given as {text!r}) names no files (one path per line){literal}")
    return entries


def _scale_deep(array: np.ndarray, path: str) -> np.ndarray:
    """A 2-D / 3-D integer or float array deeper than 8 bits -> uint8 by its real range."""
    if array.dtype.kind == "f":
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise BadImageError(path, "floating-point image with NaN or infinite pixels")
        low, high = float(values.min()), float(values.max())
        if low >= 0.0 and high <= 1.0:
            return np.round(values * 255.0).astype(np.uint8)
    else:
        values = array.astype(np.int64)
        low, high = int(values.min()), int(values.max())
        if low >= 0:
            if high <= 255:
                return values.astype(np.uint8)
            top = 2 ** max(8, math.ceil(math.log2(high + 1))) - 1
            return np.round(values * (255.0 / top)).astype(np.uint8)
    if high == low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def image_to_rgb(image: Image.Image, path: str = "<image>") -> np.ndarray:
    """A Pillow image (EXIF orientation applied here) -> uint8 ``(H, W, 3)`` RGB (see the module docstring)."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        grey = _scale_deep(np.asarray(image), path)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("P", "PA"):
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def image_size(path: str | os.PathLike, max_pixels: int | None = None) -> tuple[int, int]:
    """``(height, width)`` as :func:`load_image` returns it (EXIF / TIFF orientation included), from the header only."""
    name = os.fspath(path)
    _check_regular(name)
    tifffile = _tifffile() if name.lower().endswith((".tif", ".tiff")) else None
    if tifffile is not None:
        try:
            with tifffile.TiffFile(name) as tiff:
                page = tiff.pages[0]
                height, width = page.imagelength, page.imagewidth
                orientation = _tiff_orientation(page)
        except Exception as err:  # damaged or not a TIFF: Pillow's reading below reports it
            del err
        else:
            _check_pixels(name, width, height, max_pixels)
            return (width, height) if orientation in (5, 6, 7, 8) else (height, width)
    with open_image(name, max_pixels) as image:
        width, height = image.size
        turned = image.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8)
        stored = getattr(image, "tag_v2", {})
        if turned and (stored.get(256), stored.get(257)) == (height, width) != (width, height):
            turned = False  # a TIFF whose size this Pillow reports as shown already
        if turned:
            width, height = height, width
    return height, width


TIFF_MEMMAP_BYTES = 256 * 2**20  # larger TIFFs are decoded into a temporary memory-mapped file
# TIFF photometric interpretations whose samples are the pixel values tifffile's fast path keeps (grey, RGB); the
# others (min-is-white, palette, CMYK, YCbCr, CIELab, ...) and 1-bit images go through Pillow's conversions.
_TIFF_DIRECT_PHOTOMETRIC = (1, 2)  # MINISBLACK, RGB


def _tifffile() -> Any:
    try:
        import tifffile
    except ImportError:
        return None
    return tifffile


def _tiff_orientation(page: Any) -> int:
    tag = page.tags.get(_ORIENTATION)
    try:
        value = int(tag.value) if tag is not None else 1
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` (rows, columns, ...) shown as its orientation tag says: the same turns and flips as Pillow's
    ``ImageOps.exif_transpose`` (2 mirror, 3 turn 180, 4 flip, 5 transpose, 6 turn clockwise, 7 transverse,
    8 turn counter-clockwise)."""
    if orientation in (5, 6, 7, 8):
        array = array.swapaxes(0, 1)  # transpose; then 6 = mirror, 7 = turn 180, 8 = flip
    flip_rows = orientation in (3, 4, 7, 8)
    flip_columns = orientation in (2, 3, 6, 7)
    return array[:: -1 if flip_rows else 1, :: -1 if flip_columns else 1]


def _tiff_direct(page: Any) -> bool:
    """Whether tifffile's pixels are the picture as it is shown (grey or RGB samples of 8 bits or more)."""
    return int(page.photometric) in _TIFF_DIRECT_PHOTOMETRIC and page.bitspersample >= 8 and "Y" in page.axes


def _load_tiff(name: str, max_pixels: int | None) -> np.ndarray | None:
    """A TIFF / BigTIFF through ``tifffile`` (optional extra ``tiff``): tiled and compressed files are decoded into
    a temporary memory-mapped file, so a gigapixel image does not have to fit in memory. ``None`` where Pillow
    should read it instead: without tifffile, for photometric interpretations other than grey / RGB, 1-bit
    images, and compressions tifffile cannot decode without ``imagecodecs`` (LZW, JPEG, CCITT, ...)."""
    tifffile = _tifffile()
    if tifffile is None:
        return None
    try:
        with tifffile.TiffFile(name) as tiff:
            page = tiff.pages[0]
            height, width = page.imagelength, page.imagewidth
            _check_pixels(name, width, height, max_pixels)
            if not _tiff_direct(page):
                return None
            axes, orientation = page.axes, _tiff_orientation(page)
            big = height * width * max(1, page.samplesperpixel) * page.dtype.itemsize > TIFF_MEMMAP_BYTES
            array = page.asarray(out="memmap" if big else None)
    except BadImageError:
        raise
    except Exception as err:  # a compression without its codec, or damaged: Pillow reads it or names the reason
        del err
        return None
    if "S" in axes and axes.index("S") < axes.index("Y"):
        array = np.moveaxis(array, axes.index("S"), -1)  # planar (S, H, W) storage
        axes = axes.replace("S", "") + "S"
    if array.ndim != len(axes) or axes.replace("S", "") != "YX":
        return None  # stacks, volumes: Pillow reads the first image
    if array.ndim == 3:
        array = array[:, :, 0] if array.shape[-1] < 3 else array[:, :, :3]  # grey + alpha -> grey; alpha dropped
    array = _orient(array, orientation)
    if array.ndim == 2:
        grey = array if array.dtype == np.uint8 else _scale_deep(np.asarray(array), name)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if array.dtype == np.uint8:
        return array if array.flags.c_contiguous else np.ascontiguousarray(array)
    return _scale_deep(np.asarray(array), name)


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Decode ``path`` into a uint8 ``(H, W, 3)`` RGB array; :class:`BadImageError` names file and reason.

    ``max_pixels`` refuses larger images before decoding them (default: Pillow's decompression-bomb
    limit, ``PIL.Image.MAX_IMAGE_PIXELS``). TIFF / BigTIFF files are read with ``tifffile`` when it is installed
    (large ones as a memory-mapped array on disk).
    """
    name = os.fspath(path)
    _check_regular(name)
    unoriented = None
    if name.lower().endswith((".tif", ".tiff")):
        array = _load_tiff(name, max_pixels)
        if array is not None:
            return array
        unoriented = _tiff_without_orientation(name)
    with open_image(name, max_pixels, data=unoriented[0] if unoriented else None) as image:
        try:
            image.load()
            rgb = image_to_rgb(image, name)
        except BadImageError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise BadImageError(name, _reason(err)) from None
    return np.ascontiguousarray(_orient(rgb, unoriented[1])) if unoriented else rgb


def _tiff_without_orientation(name: str) -> tuple[io.BytesIO, int] | None:
    """A TIFF that Pillow decodes, as bytes with its Orientation tag set to 1, and the orientation it had (``None``
    for orientation 1). Pillow's own handling of the tag differs between versions and, in some (uncompressed
    palette / CMYK, LZW YCbCr), scrambles the pixels; the pixels are turned here instead, by the one rule of
    :func:`_orient`. The tag is found by reading the first IFD (classic or BigTIFF); a damaged file is left to
    Pillow's reading, which reports it."""
    try:
        with open(name, "rb") as handle:
            data = bytearray(handle.read())
        order = {b"II": "little", b"MM": "big"}[bytes(data[:2])]
        number = lambda start, size: int.from_bytes(data[start : start + size], order)  # noqa: E731
        big = number(2, 2) == 43
        offset = number(8, 8) if big else number(4, 4)
        count = number(offset, 8 if big else 2)
        first, step = offset + (8 if big else 2), 20 if big else 12
        for entry in range(first, first + count * step, step):
            if number(entry, 2) != _ORIENTATION:
                continue
            size = {3: 2, 4: 4, 16: 8}.get(number(entry + 2, 2), 0)  # SHORT, LONG, LONG8, stored inline
            value = entry + (12 if big else 8)
            orientation = number(value, size) if size and number(entry + 4, 8 if big else 4) == 1 else 1
            if not 2 <= orientation <= 8:
                return None
            data[value : value + size] = (1).to_bytes(size, order)
            return io.BytesIO(bytes(data)), orientation
    except (KeyError, IndexError, ValueError, OSError):
        return None
    return None


def check_image(path: str | os.PathLike, max_pixels: int | None = None) -> str | None:
    """``None`` if ``path`` decodes completely, else the reason (JPEGs are decoded at reduced scale)."""
    name = os.fspath(path)
    try:
        with open_image(name, max_pixels) as image:
            if image.format == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
            if image.mode == "F":
                _scale_deep(np.asarray(image), name)
    except BadImageError as err:
        return err.reason
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return _reason(err)
    return None


class open_image:
    """``with open_image(path, max_pixels) as image``: ``Image.open`` (header only) with the reasons turned
    into :class:`BadImageError` and the pixel limit checked (``None``: Pillow's)."""

    def __init__(self, path: str, max_pixels: int | None, data: Any = None) -> None:
        self.path = path
        self.max_pixels = max_pixels
        self.data = data  # the file's bytes as a file object, if they were read already
        self.image: Image.Image | None = None

    def __enter__(self) -> Image.Image:
        path = self.path
        _check_regular(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                self.image = Image.open(path if self.data is None else self.data)
        except Image.UnidentifiedImageError:
            raise BadImageError(path, "not an image (no image format recognised)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise BadImageError(path, f"too many pixels, refused as a possible decompression bomb ({err})") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise BadImageError(path, _reason(err)) from None
        try:
            _check_pixels(path, *self.image.size, self.max_pixels)
        except BadImageError:
            self.image.close()
            raise
        return self.image

    def __exit__(self, *exc: object) -> None:
        if self.image is not None:
            self.image.close()


def _check_pixels(path: str, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse ``width x height`` above ``max_pixels`` (``None``: Pillow's decompression-bomb limit) from the header."""
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if limit is not None and width * height > limit:
        raise BadImageError(path, f"{width}x{height} = {width * height:,} pixels is above the limit of {int(limit):,} "
                                  "(refused before decoding, a possible decompression bomb)")


def _check_regular(path: str) -> None:
    """Refuse, from ``stat`` alone (nothing is opened), a path that is not a regular file: opening a FIFO blocks
    until someone writes to it, a device can be endless, a socket cannot be read."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise BadImageError(path, "file does not exist") from None
    except OSError as err:
        raise BadImageError(path, _reason(err)) from None
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise BadImageError(path, "is a folder, not an image file")
    kinds = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
             stat.S_ISSOCK: "a socket"}
    kind = next((text for test, text in kinds.items() if test(mode)), "a special file")
    raise BadImageError(path, f"is {kind}, not a regular image file (refused without opening it)")


def _reason(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if "truncated" in text.lower():
        return f"truncated or damaged file ({text})"
    if isinstance(err, PermissionError):
        return "permission denied (cannot read the file)"
    return f"cannot decode: {text}"
