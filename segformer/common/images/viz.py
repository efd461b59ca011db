"""Pictures of label maps: colourized masks, overlays on the image, lossless PNG files.

A label map is an integer array ``(H, W)`` of class indices; ``ignore_index`` (255 by default) marks
unlabelled pixels, drawn black by ``colorize`` and left as the photo by ``overlay``. A palette is a uint8
``(num_classes, 3)`` array or the name of a built-in label set (``"ade20k"``, ``"cityscapes"``). Every file
is written atomically (``segformer.common.base.atomic.atomic_write_bytes``).
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image

from segformer.common.base.atomic import atomic_write_bytes
from segformer.common.images.image_arrays import label_values
from segformer.common.images.labels import IGNORE_INDEX, get_palette

__all__ = ["colorize", "legend", "load_mask_png", "overlay", "save_mask_png", "save_png"]


_OVERLAY_BAND_PIXELS = 1 << 20


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Image.Image):
        return np.asarray(value)
    if type(value).__module__.startswith("torch"):
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy") and callable(value.numpy):
        return np.asarray(value.numpy())
    return np.asarray(value)


def _palette_array(palette: np.ndarray | str | Any, what: str) -> np.ndarray:
    if isinstance(palette, str):
        try:
            return get_palette(palette)
        except ValueError as err:
            raise ValueError(f"{what}: palette: {err}") from None
    array = np.asarray(palette)
    if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] < 1:
        raise ValueError(f"{what}: palette must have shape (num_classes, 3), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or array.min() < 0 or array.max() > 255:
        raise ValueError(f"{what}: palette values must be numbers in [0, 255]")
    if np.issubdtype(array.dtype, np.floating) and (array.max() <= 1.0 or not np.array_equal(array, np.round(array))):
        raise ValueError(
            f"{what}: palette values must be whole numbers in [0, 255] (uint8 colours), got {array.dtype} values in "
            f"[{array.min():g}, {array.max():g}]; colours in [0, 1] would all turn black or near-black: pass "
            "(palette * 255).round().astype('uint8')"
        )
    return array.astype(np.uint8)


def _label_map(label_map: Any, what: str) -> np.ndarray:
    array = _as_numpy(label_map)
    if array.ndim != 2:
        raise ValueError(f"{what}: label_map must be 2-D (H, W), got shape {array.shape}")
    return label_values(array, f"{what}: label_map")


def colorize(label_map: Any, palette: np.ndarray | str, ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """Colour a label map.

    Args:
        label_map: integer ``(H, W)`` class indices (numpy, torch or tf).
        palette: uint8 ``(num_classes, 3)`` or a built-in label set name.
        ignore_index: pixels with this value are black (``None``: no ignore value).

    Returns:
        uint8 ``(H, W, 3)`` RGB image.
    """
    labels = _label_map(label_map, "colorize")
    colours = _palette_array(palette, "colorize")
    ignored = labels == ignore_index if ignore_index is not None else np.zeros(labels.shape, dtype=bool)
    valid = labels[~ignored]
    if valid.size and (valid.min() < 0 or valid.max() >= len(colours)):
        raise ValueError(
            f"colorize: label_map values must be in [0, {len(colours) - 1}] (palette has {len(colours)} colours)"
            f" or equal ignore_index={ignore_index}; got values in [{valid.min()}, {valid.max()}]"
        )
    result = colours[np.where(ignored, 0, labels)]
    result[ignored] = 0
    return result


def _rgb_image(image: Any, what: str) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = _as_numpy(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what}: image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    array = array[..., :3]
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{what}: image contains NaN or infinity")
        scale = 255.0 if array.max() <= 1.0 else 1.0
        return np.clip(np.round(array * scale), 0, 255).astype(np.uint8)
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
            raise ValueError(f"{what}: image must be uint8, integers in [0, 255], or floats; got dtype {array.dtype}")
        array = array.astype(np.uint8)
    return array


def overlay(
    image: Any,
    label_map: Any,
    palette: np.ndarray | str,
    alpha: float = 0.5,
    ignore_index: int | None = IGNORE_INDEX,
) -> np.ndarray:
    """Blend a colourized label map over an image: ``round((1 - alpha) * image + alpha * colour)``.

    Args:
        image: RGB ``(H, W, 3)`` uint8 (floats in [0, 1] or [0, 255], grayscale and RGBA are converted), or a
            PIL image.
        label_map: integer ``(H, W)`` class indices, same ``H, W`` as the image.
        palette: uint8 ``(num_classes, 3)`` or a built-in label set name.
        alpha: weight of the mask colour, in [0, 1].
        ignore_index: pixels with this value keep the image unchanged.

    Returns:
        uint8 ``(H, W, 3)``.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha}")
    rgb = _rgb_image(image, "overlay")
    labels = _label_map(label_map, "overlay")
    if rgb.shape[:2] != labels.shape:
        raise ValueError(f"overlay: image is {rgb.shape[:2]} (H, W) but label_map is {labels.shape}; they must match")
    result = np.empty(rgb.shape, dtype=np.uint8)
    rows = max(1, _OVERLAY_BAND_PIXELS // max(labels.shape[1], 1))
    for top in range(0, labels.shape[0], rows):  # row bands: float temporaries stay small on huge images
        band = slice(top, top + rows)
        colours = colorize(labels[band], palette, ignore_index=ignore_index).astype(np.float64)
        blended = (1.0 - float(alpha)) * rgb[band].astype(np.float64) + float(alpha) * colours
        result[band] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
        if ignore_index is not None:
            ignored = labels[band] == ignore_index
            result[band][ignored] = rgb[band][ignored]
    return result


def legend(class_ids: list[int], id2label: dict[int, str], palette: np.ndarray | str, swatch: int = 16) -> np.ndarray:
    """A uint8 RGB legend: one row per class id (its colour swatch, ``id name``), white background."""
    from PIL import ImageDraw, ImageFont

    colours = _palette_array(palette, "palette")
    if not class_ids:
        raise ValueError("legend: class_ids is empty; pass at least one class id")
    for class_id in class_ids:
        if not 0 <= int(class_id) < len(colours):
            raise ValueError(f"legend: class id {class_id} is outside the palette's {len(colours)} colours")
    font = ImageFont.load_default()
    texts = [f"{int(c)} {id2label.get(int(c), str(int(c)))}" for c in class_ids]
    row = swatch + 4
    width = swatch + 12 + max(int(font.getlength(t)) for t in texts) + 8
    picture = Image.new("RGB", (width, row * len(texts) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    for index, (class_id, text) in enumerate(zip(class_ids, texts)):
        top = 4 + index * row
        draw.rectangle([4, top, 4 + swatch - 1, top + swatch - 1], fill=tuple(int(v) for v in colours[int(class_id)]),
                       outline=(0, 0, 0))
        draw.text((swatch + 12, top + 2), text, fill=(0, 0, 0), font=font)
    return np.asarray(picture)


def save_png(path: str | os.PathLike, rgb: Any, overwrite: bool = True) -> None:
    """Write an RGB ``(H, W, 3)`` (or grayscale ``(H, W)``) uint8 image as PNG, atomically."""
    array = _as_numpy(rgb)
    if array.dtype != np.uint8:
        raise TypeError(f"save_png: rgb must be uint8, got {array.dtype} (use colorize / overlay, or convert)")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ValueError(f"save_png: rgb must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"save_png: rgb is empty, shape {array.shape}")
    picture = Image.fromarray(np.ascontiguousarray(array))
    _write_png(picture, path, overwrite)


def _write_png(picture: Image.Image, path: str | os.PathLike, overwrite: bool) -> None:
    """Encode in memory, then write atomically (an environment fault is an ``OSError`` naming ``path``)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue(), overwrite=overwrite)


def save_mask_png(
    path: str | os.PathLike,
    label_map: Any,
    palette: np.ndarray | str | None = None,
    overwrite: bool = True,
) -> None:
    """Write a label map losslessly as PNG, atomically.

    Label values in [0, 255] (with at most 256 palette colours) give a palette-mode ("P") PNG: the pixel
    values are the class indices and viewers show the palette colours (index 255 black unless the palette
    gives it a colour). Larger values (or a palette of more than 256 colours) give a 16-bit grayscale PNG
    (values up to 65535). Read either back with ``load_mask_png``.

    Args:
        label_map: integer ``(H, W)``, values >= 0.
        palette: uint8 ``(N, 3)``, a built-in label set name, or ``None`` (grayscale ramp).
    """
    labels = _label_map(label_map, "save_mask_png")
    if labels.size == 0:
        raise ValueError(f"save_mask_png: label_map is empty, shape {labels.shape}")
    if labels.min() < 0 or labels.max() > 65535:
        raise ValueError(
            f"save_mask_png: label values must be in [0, 65535], got [{labels.min()}, {labels.max()}]"
        )
    colours = _palette_array(palette, "save_mask_png") if palette is not None else None
    if labels.max() <= 255 and (colours is None or len(colours) <= 256):
        indices = np.ascontiguousarray(labels.astype(np.uint8))
        picture = Image.frombytes("P", (indices.shape[1], indices.shape[0]), indices.tobytes())
        table = np.zeros((256, 3), dtype=np.uint8)
        if colours is None:
            table[:] = np.arange(256, dtype=np.uint8)[:, None]
        else:
            table[: len(colours)] = colours
        picture.putpalette(table.reshape(-1).tolist())
    else:
        picture = Image.fromarray(labels.astype(np.uint16))
    _write_png(picture, path, overwrite)


def load_mask_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label map written by ``save_mask_png`` (or any "P", "L" or 16-bit PNG) as int64 ``(H, W)``."""
    with Image.open(path) as picture:
        if picture.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
            raise ValueError(
                f"load_mask_png: {os.fspath(path)!r} has mode {picture.mode!r}; a label map PNG is 'P', 'L' or 16-bit"
            )
        return np.asarray(picture).astype(np.int64)
