"""Framework-agnostic half of whole / sliding-window / test-time-augmented inference.

``segformer/pt/inference.py`` and ``segformer/tf/inference.py`` do the tensor work with the same API;
everything that is only arithmetic on sizes lives here: argument validation, the sliding-window grid,
the per-pixel window count, the scale list and the output-size rules.

The rules are the original's (mmsegmentation ``EncoderDecoder`` and its test configs):

* ``encode_decode``: the model's logits (H/4 x W/4) are upsampled bilinearly (``align_corners=False``)
  to the size of the image (or window) that went in.
* ``whole`` inference: one pass over the image, then a resize to the output size if it differs.
* ``slide`` inference (crop ``(h_crop, w_crop)``, stride ``(h_stride, w_stride)``):
  ``h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1`` (same for w); window
  ``(h_idx, w_idx)`` is ``y1 = h_idx * h_stride; y2 = min(y1 + h_crop, h_img); y1 = max(y2 - h_crop, 0)``
  (same for x): the last window is snapped to the border and windows are smaller than the crop when
  the image is. Each window's logits (upsampled to the window) are summed into the image, divided by
  the number of windows covering each pixel, then resized to the output size if it differs.
* test-time augmentation (``aug_test``): for every scale (and, with ``flip``, both the image and its
  horizontal mirror) run the inference above at the output size, softmax over classes, un-flip, sum the
  probabilities and divide by the number of passes.

A scaled image has size ``int(h * scale + 0.5) x int(w * scale + 0.5)`` (mmcv ``rescale_size``), then,
with ``size_divisor``, rounded up to multiples of it (the original's ``AlignedResize``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..base.errors import ResourceLimitError
from ..base.sizes import as_bool, as_size_pair, is_int

__all__ = [
    "MODES",
    "Window",
    "InferenceSettings",
    "as_size_pair",
    "MAX_WINDOWS",
    "check_work",
    "as_bool",
    "check_inference_args",
    "device_error",
    "check_window_count",
    "grid_shape",
    "sliding_windows",
    "window_counts",
    "check_scales",
    "scaled_size",
    "tta_passes",
    "resolve_output_sizes",
]

MODES = ("whole", "slide")
# Sliding windows one image may take (over every test-time pass) unless the caller raises the limit: an 8000 x 8000
# image at the 512 / 341 default is 529 windows; a stride of 1 on a 120 x 160 image with 64-pixel crops is 5529.
MAX_WINDOWS = 4096


@dataclass(frozen=True)
class Window:
    """One sliding window: rows ``y1:y2`` and columns ``x1:x2`` of the image (end exclusive)."""

    y1: int
    y2: int
    x1: int
    x2: int

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    @property
    def width(self) -> int:
        return self.x2 - self.x1


@dataclass(frozen=True)
class InferenceSettings:
    """Validated arguments of ``predict_logits`` (see :func:`check_inference_args`)."""

    mode: str
    crop_size: tuple[int, int]
    stride: tuple[int, int]
    scales: tuple[float, ...]
    flip: bool
    return_probabilities: bool
    size_divisor: int | None

    @property
    def passes(self) -> list[tuple[float, bool]]:
        return tta_passes(self.scales, self.flip)

    @property
    def augmented(self) -> bool:
        """True when probabilities are averaged over several passes (more than one scale, or flip)."""
        return len(self.passes) > 1


def check_scales(scales: float | Sequence[float]) -> tuple[float, ...]:
    """Scale ratios as a non-empty tuple of positive finite floats (a single number is one scale)."""
    if isinstance(scales, (int, float, np.floating, np.integer)) and not isinstance(scales, bool):
        items: tuple = (scales,)
    else:
        try:
            items = tuple(scales)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(f"scales must be a number or a sequence of positive numbers, got {scales!r}") from None
    if not items:
        raise ValueError("scales must hold at least one ratio, got an empty sequence; e.g. scales=(1.0,)")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float, np.floating, np.integer)):
            raise ValueError(f"scales must hold positive numbers, got {scales!r}")
        if not math.isfinite(float(item)) or float(item) <= 0.0:
            raise ValueError(f"scales must hold positive finite numbers, got {scales!r}")
        out.append(float(item))
    return tuple(out)


def device_error(device: object, framework: str, available: Sequence[str], why: str = "") -> ValueError:
    """The one error for a device that this framework build / machine does not have, listing those it has."""
    reason = f" ({why})" if why else ""
    return ValueError(f"device={device!r} is not available to {framework}{reason}; available: {', '.join(available)}")


def check_window_count(sizes: Sequence[Sequence[int]], crop_size: Sequence[int], stride: Sequence[int],
                       max_windows: int | None = MAX_WINDOWS, what: str = "image") -> int:
    """The number of sliding windows over images (or test-time passes) of ``sizes``, refused with a
    :class:`~segformer.common.base.errors.ResourceLimitError` above ``max_windows`` (``None``: no limit)
    before any window runs."""
    count = 0
    for size in sizes:
        rows, cols = grid_shape(size, crop_size, stride)
        count += rows * cols
    if max_windows is not None and count > max_windows:
        crop, step = as_size_pair("crop_size", crop_size), as_size_pair("stride", stride)
        raise ResourceLimitError(
            f"{what}: slide mode with crop_size={crop} and stride={step} would run {count} windows "
            f"(input {' + '.join(f'{h}x{w}' for h, w in sizes)}), more than max_windows={max_windows}; use a larger "
            "stride (at most the crop size) or raise max_windows (--max-windows)"
        )
    return count


WHOLE_MODE_EXCESS = 8  # whole mode may cost at most this many times slide mode before it is refused
WHOLE_MODE_FREE_GFLOPS = 1000.0  # below this a whole-mode pass is never refused (seconds on a CPU)


def check_work(config, mode: str, sizes: Sequence[Sequence[int]], crop_size: Sequence[int], stride: Sequence[int],
               max_windows: int | None = MAX_WINDOWS, what: str = "image") -> None:
    """Refuse, before any work, an image whose model passes (one per test-time input of ``sizes``) cost too much:
    in slide mode more than ``max_windows`` windows (:func:`check_window_count`); in whole mode more than
    :data:`WHOLE_MODE_EXCESS` times the FLOPs of slide mode at ``crop_size`` / ``stride`` (and above
    :data:`WHOLE_MODE_FREE_GFLOPS`): attention grows with the square of the pixels, so a whole pass over a huge
    image (b0 on 8000x8000: 125 TFLOPs, 19 times slide mode) runs for tens of minutes. ``max_windows=None`` lifts
    both limits. Raises :class:`~segformer.common.base.errors.ResourceLimitError`."""
    if mode == "slide":
        check_window_count(sizes, crop_size, stride, max_windows, what)
        return
    if max_windows is None:
        return
    from ..model.flops import count_flops

    whole = sum(count_flops(config, int(h), int(w), path="fast").gflops for h, w in sizes)
    if whole <= WHOLE_MODE_FREE_GFLOPS:
        return
    window = count_flops(config, *[min(int(c), int(s)) for c, s in zip(crop_size, max(sizes, key=lambda hw: hw[0] * hw[1]))],
                         path="fast").gflops
    slide = sum(window * math.prod(grid_shape(size, crop_size, stride)) for size in sizes)
    if whole > WHOLE_MODE_EXCESS * slide:
        raise ResourceLimitError(
            f"{what}: whole mode would cost about {whole:,.0f} GFLOPs (input {' + '.join(f'{h}x{w}' for h, w in sizes)}), "
            f"{whole / slide:.0f} times the {slide:,.0f} GFLOPs of mode='slide' with crop_size={tuple(crop_size)}, "
            f"stride={tuple(stride)} (attention grows with the square of the pixels); use mode='slide' (--mode slide) "
            "or a smaller resize, or max_windows=None (--max-windows 0) to run it anyway"
        )


def check_inference_args(
    mode: str = "whole",
    crop_size: int | Sequence[int] = (1024, 1024),
    stride: int | Sequence[int] = (768, 768),
    scales: float | Sequence[float] = (1.0,),
    flip: bool = False,
    return_probabilities: bool = False,
    size_divisor: int | None = None,
) -> InferenceSettings:
    """Validate the arguments shared by both frameworks' ``predict_logits``.

    ``crop_size`` / ``stride`` are only read in ``slide`` mode but are checked always. A stride larger
    than the crop would leave pixels that no window covers, so ``stride <= crop_size`` per axis.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    crop = as_size_pair("crop_size", crop_size)
    step = as_size_pair("stride", stride)
    if step[0] > crop[0] or step[1] > crop[1]:
        raise ValueError(
            f"stride {step} must not exceed crop_size {crop} on either axis: windows would leave gaps"
        )
    as_bool("flip", flip)
    as_bool("return_probabilities", return_probabilities)
    if size_divisor is not None and (not is_int(size_divisor) or int(size_divisor) < 1):
        raise ValueError(f"size_divisor must be None or a positive int, got {size_divisor!r}")
    return InferenceSettings(
        mode=mode,
        crop_size=crop,
        stride=step,
        scales=check_scales(scales),
        flip=bool(flip),
        return_probabilities=bool(return_probabilities),
        size_divisor=None if size_divisor is None else int(size_divisor),
    )


def grid_shape(image_size: Sequence[int], crop_size: Sequence[int], stride: Sequence[int]) -> tuple[int, int]:
    """Number of windows ``(h_grids, w_grids)``: ``max(img - crop + stride - 1, 0) // stride + 1`` per axis."""
    h_img, w_img = as_size_pair("image_size", image_size)
    h_crop, w_crop = as_size_pair("crop_size", crop_size)
    h_stride, w_stride = as_size_pair("stride", stride)
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    return h_grids, w_grids


def sliding_windows(image_size: Sequence[int], crop_size: Sequence[int], stride: Sequence[int]) -> list[Window]:
    """The original's windows over an image of ``image_size = (h_img, w_img)``, row-major (h outer).

    Each window is at most ``crop_size``; the last one per axis is snapped to the border, and an image
    smaller than the crop gets one window the size of the image on that axis.
    """
    h_img, w_img = as_size_pair("image_size", image_size)
    h_crop, w_crop = as_size_pair("crop_size", crop_size)
    h_stride, w_stride = as_size_pair("stride", stride)
    h_grids, w_grids = grid_shape((h_img, w_img), (h_crop, w_crop), (h_stride, w_stride))
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * h_stride
            x1 = w_idx * w_stride
            y2 = min(y1 + h_crop, h_img)
            x2 = min(x1 + w_crop, w_img)
            y1 = max(y2 - h_crop, 0)
            x1 = max(x2 - w_crop, 0)
            windows.append(Window(y1, y2, x1, x2))
    return windows


def window_counts(image_size: Sequence[int], windows: Sequence[Window]) -> np.ndarray:
    """How many windows cover each pixel: int32 array ``(h_img, w_img)``; raises if a pixel is uncovered."""
    h_img, w_img = as_size_pair("image_size", image_size)
    counts = np.zeros((h_img, w_img), dtype=np.int32)
    for window in windows:
        counts[window.y1 : window.y2, window.x1 : window.x2] += 1
    if counts.min() == 0:
        raise ValueError(f"sliding windows leave pixels of a {h_img}x{w_img} image uncovered: {list(windows)}")
    return counts


def scaled_size(size: Sequence[int], scale: float, size_divisor: int | None = None) -> tuple[int, int]:
    """Size of an image of ``size = (h, w)`` resized by ``scale``: ``int(h * scale + 0.5)`` (at least 1),
    then rounded up to a multiple of ``size_divisor`` if given (the original's ``AlignedResize``)."""
    height, width = as_size_pair("size", size)
    scale = check_scales(scale)[0]
    height = max(int(height * scale + 0.5), 1)
    width = max(int(width * scale + 0.5), 1)
    if size_divisor is not None:
        height = int(math.ceil(height / size_divisor)) * size_divisor
        width = int(math.ceil(width / size_divisor)) * size_divisor
    return height, width


def tta_passes(scales: Sequence[float], flip: bool) -> list[tuple[float, bool]]:
    """The (scale, flipped) passes of test-time augmentation: each scale unflipped, then flipped if asked."""
    passes = []
    for scale in scales:
        passes.append((float(scale), False))
        if flip:
            passes.append((float(scale), True))
    return passes


def resolve_output_sizes(
    batch: int, input_size: Sequence[int], output_size: int | Sequence[int] | Sequence[Sequence[int]] | None
) -> tuple[list[tuple[int, int]], bool]:
    """Output size of every image of a batch, and whether the caller asked per image.

    * ``None``: the input size ``(H, W)`` for every image (the original's ``rescale`` to ``ori_shape``).
    * an int or a ``(height, width)`` pair: that size for every image; the result is one tensor.
    * a sequence of ``batch`` pairs (like ``target_sizes`` in post-processing): one size per image;
      the result is a list of per-image tensors.
    """
    if output_size is None:
        size = as_size_pair("input size", input_size)
        return [size] * batch, False
    if is_int(output_size):
        return [as_size_pair("output_size", output_size)] * batch, False
    try:
        items = list(output_size)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            f"output_size must be None, an int, a (height, width) pair or one pair per image, got {output_size!r}"
        ) from None
    if len(items) == 2 and all(is_int(v) for v in items):
        return [as_size_pair("output_size", items)] * batch, False
    if len(items) != batch:
        raise ValueError(
            f"output_size with one (height, width) per image must have batch={batch} entries, got {len(items)}: "
            f"{output_size!r}"
        )
    return [as_size_pair(f"output_size[{i}]", item) for i, item in enumerate(items)], True
