"""Pillow's bilinear resize of uint8 images, as integer arithmetic that a graph can run bit-exactly.

The image processor resizes uint8 images with ``PIL.Image.resize(size, BILINEAR)`` (as Hugging Face's
does). To run that step inside a Keras model with the same numbers, the resize is written here as what
Pillow computes (``libImaging/Resample.c``, 8 bits per channel):

* per axis, input size ``n`` -> output size ``m``: ``scale = n / m``, ``filterscale = max(scale, 1)``,
  ``support = filterscale`` (the triangle filter's support is 1); output pixel ``i`` has centre
  ``c = (i + 0.5) * scale`` and reads inputs ``xmin = max(int(c - support + 0.5), 0)`` up to
  ``min(int(c + support + 0.5), n)`` (exclusive) with weights ``tri(((j - c) + 0.5) / filterscale)``
  (``tri(x) = max(1 - |x|, 0)``), summed in input order and divided by their sum;
* the weights are fixed-point: ``k = int(0.5 + w * 2**22)``;
* a pass computes ``clip((2**21 + sum(pixel * k)) >> 22, 0, 255)`` in integers and rounds to uint8; the width
  pass runs first, unless the height shrinks by more than twice as many pixels as the width
  (``in_h - h > max(2 * (in_w - w), 0)``): then the height pass runs first; a pass whose size does not
  change is the identity.

With 22 fractional bits, ``255 * (2**22 + taps) + 2**21`` stays below ``2**31``: int32 accumulation is exact.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PRECISION_BITS", "bilinear_coefficients", "height_first", "resize_uint8"]

PRECISION_BITS = 22


def bilinear_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(start, weights)`` of one axis: int32 ``(out_size,)`` first input index of each output pixel, and
    int32 ``(out_size, taps)`` fixed-point weights of inputs ``start + t`` (zero past the last input used)."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got in_size={in_size}, out_size={out_size}")
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    taps = int(math.ceil(support)) * 2 + 1
    inverse = 1.0 / filterscale
    start = np.zeros(out_size, dtype=np.int32)
    weights = np.zeros((out_size, taps), dtype=np.int32)
    for index in range(out_size):
        center = (index + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), in_size) - first
        row = []
        total = 0.0
        for tap in range(count):
            value = abs(((tap + first) - center + 0.5) * inverse)
            weight = 1.0 - value if value < 1.0 else 0.0
            row.append(weight)
            total += weight
        start[index] = first
        for tap, weight in enumerate(row):
            if total != 0.0:
                weight = weight / total
            weights[index, tap] = int(0.5 + weight * (1 << PRECISION_BITS))
    return start, weights


def _pass(image: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    in_size = image.shape[axis]
    if in_size == out_size:
        return image
    start, weights = bilinear_coefficients(in_size, out_size)
    shape = [1] * image.ndim
    shape[axis] = out_size
    total = np.full(image.shape[:axis] + (out_size,) + image.shape[axis + 1 :], 1 << (PRECISION_BITS - 1), np.int64)
    for tap in range(weights.shape[1]):
        index = np.minimum(start + tap, in_size - 1)
        total += np.take(image, index, axis=axis).astype(np.int64) * weights[:, tap].reshape(shape)
    return np.clip(total >> PRECISION_BITS, 0, 255).astype(np.uint8)


def resize_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow's ``resize((width, height), BILINEAR)`` of a uint8 ``(H, W)`` or ``(H, W, C)`` image, in numpy."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"image must be uint8 (H, W) or (H, W, C), got {image.dtype} {image.shape}")
    height, width = int(size[0]), int(size[1])
    if height_first(image.shape[:2], (height, width)):
        return _pass(_pass(image, 0, height), 1, width)
    return _pass(_pass(image, 1, width), 0, height)


def height_first(in_size: tuple[int, int], out_size: tuple[int, int]) -> bool:
    """Whether Pillow runs the height pass first: the height shrinks by more than twice the width's change."""
    shrink = in_size[0] - out_size[0]
    return shrink > 0 and shrink > (in_size[1] - out_size[1]) * 2
