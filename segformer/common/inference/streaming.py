"""Whole / sliding-window / test-time-augmented inference in row bands: memory that does not grow with
``num_classes x H x W``.

:func:`segformer.pt.inference.predict_logits` (and its TF twin) return full-resolution logits: ``K x H x W``
floats, about 0.6 GB per megapixel for 150 classes, plus copies. Most callers only want the label map (and
perhaps the confidence of each pixel's class). This module computes exactly what those functions compute,
but a band of output rows at a time, keeping only the model's low-resolution logits (``K x h/4 x w/4`` of
the windows still needed):

* a **pass** is one (scale, flip) of the input; its windows are the original's sliding windows over the
  scaled image (one window covering everything in ``whole`` mode). A window's logits are kept at the
  model's resolution; a band of rows of the scaled image's full-resolution logits is the sum, over the
  windows covering those rows, of each window's logits upsampled bilinearly (``align_corners=False``) to the
  window's size, restricted to the band, divided by the number of windows covering each pixel (the windows
  form a grid, so that number is ``rows_count[y] * cols_count[x]``). Windows run in the original's
  row-major order, lazily, and are dropped as soon as no later band needs them;
* the bands are resized bilinearly to the output size by a streaming row resizer (source rows are kept only
  while an output row still needs them), then, with augmentation, turned into probabilities, un-flipped
  and summed over the passes, band by band;
* a band becomes labels (argmax), the probability of the chosen class, or, only when asked, probabilities.

The framework code supplies, per pass, the scaled (and flipped) image's size and a function returning the
low-resolution logits of a list of windows (it batches equal-sized crops); everything after the model is
numpy float32, the same in both frameworks.

Peak memory: the input, the kept windows' low-resolution logits (about two rows of windows: ``K x
crop_h / 4 x W / 4 x 1.5`` floats in slide mode, the whole ``K x H/4 x W/4`` in whole mode), a few bands of
``K x band_rows x W`` floats, and the outputs (the label map; ``K x H x W`` only for probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from ..images.resize import linear_indices_weights

from .rules import InferenceSettings, Window, sliding_windows

__all__ = [
    "BAND_ELEMENTS",
    "check_labels_out",
    "check_stream_args",
    "run_by_shape",
    "DEFAULT_BAND_ROWS",
    "auto_band_rows",
    "PassSource",
    "StreamResult",
    "bilinear_taps",
    "stream_segmentation",
    "window_grid_counts",
]

DEFAULT_BAND_ROWS = 64
BAND_ELEMENTS = 8 * 1024 * 1024  # floats in one band (32 MB); a band step holds a few arrays of this size


def auto_band_rows(num_classes: int | None, width: int) -> int:
    """Rows per band: as many as keep ``num_classes x rows x width`` within :data:`BAND_ELEMENTS` (1..256);
    :data:`DEFAULT_BAND_ROWS` when the number of classes is not known."""
    if not num_classes:
        return DEFAULT_BAND_ROWS
    return int(min(max(BAND_ELEMENTS // (int(num_classes) * max(int(width), 1)), 1), 256))
WindowLogits = Callable[[Sequence[Window]], Sequence[np.ndarray]]


def bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(low, high, weight)`` of a bilinear resize ``in_size -> out_size`` with half-pixel centres and no
    antialias (PyTorch ``align_corners=False``): output ``i`` reads ``(1 - weight) * x[low] + weight * x[high]``
    at source coordinate ``max((i + 0.5) * in_size / out_size - 0.5, 0)``."""
    low, high, _, weight = linear_indices_weights(in_size, out_size, np.float32)
    return low, high, weight


def window_grid_counts(size: Sequence[int], windows: Sequence[Window]) -> tuple[np.ndarray, np.ndarray]:
    """Windows covering each row and each column (int32 ``(H,)``, ``(W,)``); a pixel's count is their product,
    because the original's windows are the product of one set of row ranges and one of column ranges."""
    rows = np.zeros(int(size[0]), np.int32)
    cols = np.zeros(int(size[1]), np.int32)
    for y1, y2 in sorted({(w.y1, w.y2) for w in windows}):
        rows[y1:y2] += 1
    for x1, x2 in sorted({(w.x1, w.x2) for w in windows}):
        cols[x1:x2] += 1
    return rows, cols


def _lerp(array: np.ndarray, axis: int, low: np.ndarray, high: np.ndarray, weight: np.ndarray) -> np.ndarray:
    shape = [1] * array.ndim
    shape[axis] = weight.size
    first = np.take(array, low, axis=axis)
    result = np.take(array, high, axis=axis)
    result -= first
    result *= weight.reshape(shape)
    result += first
    return result


def _upsample(logits: np.ndarray, row_taps: tuple, col_taps: tuple) -> np.ndarray:
    """Bilinear ``(K, h, w) -> (K, rows, W)`` for the output rows whose taps are ``row_taps``: columns first,
    on the few source rows those output rows read, then rows, a block of classes at a time (the block's
    arrays stay in the cache). Each axis is ``low + (high - low) * weight`` in float32."""
    low, high, weight = row_taps
    first, last = int(low[0]), int(high[-1]) + 1  # the taps are non-decreasing
    low, high = low - first, high - first
    classes, rows, width = logits.shape[0], low.size, col_taps[0].size
    out = np.empty((classes, rows, width), np.float32)
    step = max(1, _BLOCK_ELEMENTS // max(rows * width, 1))
    scale = weight.reshape(1, rows, 1)
    for start in range(0, classes, step):
        cols = _lerp(logits[start : start + step, first:last], 2, *col_taps)
        block = out[start : start + step]
        np.take(cols, low, axis=1, out=block, mode="clip")
        upper = np.take(cols, high, axis=1, mode="clip")
        upper -= block
        upper *= scale
        block += upper
    return out


_BLOCK_ELEMENTS = 256 * 1024  # floats per block of classes in the band loops (1 MB)


def _top(band: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(labels, largest, finite)`` of a ``(K, rows, W)`` band: the argmax over classes (the first of equal
    largest values, as ``numpy.argmax``), the largest value, and whether every value is finite."""
    largest = band.max(axis=0)
    finite = bool(np.isfinite(largest).all()) and bool(np.isfinite(band.min()))
    if not finite:  # NaN: numpy's rule (the first NaN wins)
        return band.argmax(axis=0), largest, False
    labels = np.zeros(largest.shape, np.intp)
    for k in range(band.shape[0] - 1, -1, -1):  # descending, so the smallest equal class is written last
        np.copyto(labels, k, where=band[k] == largest)
    return labels, largest, True


def run_by_shape(items: Sequence, batch_size: int, run: Callable[[list], Sequence]) -> list:
    """``run`` on batches of at most ``batch_size`` items of equal ``shape`` (items are arrays or tensors);
    returns ``run``'s per-item results in the items' order."""
    out: list = [None] * len(items)
    groups: dict[tuple, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(tuple(item.shape), []).append(index)
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            for index, result in zip(chunk, run([items[i] for i in chunk])):
                out[index] = result
    return out


def check_stream_args(settings: InferenceSettings, direct_upsampling: bool, window_batch: int) -> None:
    """The arguments ``predict_streaming`` adds to ``predict_logits``'s (both frameworks)."""
    if direct_upsampling and (settings.mode != "whole" or settings.augmented):
        raise ValueError("direct_upsampling applies to whole mode without augmentation (one scale, no flip)")
    if isinstance(window_batch, bool) or not isinstance(window_batch, int) or window_batch < 1:
        raise ValueError(f"window_batch must be an int >= 1, got {window_batch!r}")


def check_labels_out(labels_out: object, num_classes: int | None, size: Sequence[int] | None = None) -> np.ndarray:
    """``labels_out`` (the array a label map is written into) checked before any work: a writable numpy array of
    an integer dtype that holds every class id ``0..num_classes - 1`` (uint8 up to 256 classes), of shape
    ``size`` when given. ``TypeError`` for the wrong type / dtype, ``ValueError`` otherwise."""
    if not isinstance(labels_out, np.ndarray):
        raise TypeError(f"labels_out must be a numpy array (e.g. a numpy.memmap), got {type(labels_out).__name__}")
    dtype = labels_out.dtype
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"labels_out must have an integer dtype (uint8 up to 256 classes, else int32), got {dtype}")
    if num_classes is not None and np.iinfo(dtype).max < num_classes - 1:
        raise ValueError(
            f"labels_out has dtype {dtype}, which holds class ids up to {np.iinfo(dtype).max}, but the model has "
            f"{num_classes} classes (ids up to {num_classes - 1}); use uint16 or int32"
        )
    if not labels_out.flags.writeable:
        raise ValueError("labels_out is read-only; pass a writable array (a numpy.memmap opened with mode 'w+' or 'r+')")
    if labels_out.ndim != 2:
        raise ValueError(f"labels_out must be 2-D (H, W), got shape {labels_out.shape}")
    if size is not None and labels_out.shape != tuple(size):
        raise ValueError(f"labels_out has shape {labels_out.shape}, expected {tuple(size)} (H, W of the image)")
    return labels_out


@dataclass(frozen=True)
class PassSource:
    """One (scale, flip) pass.

    ``size``: the frame the model's logits are upsampled to: the scaled image's size (the original's rule),
    or, for Hugging Face's post-processing in whole mode, directly the output size. ``window_logits(windows)``
    returns float32 ``(K, h, w)`` model-resolution logits per window (in ``whole`` mode one window covering
    ``size``, for which the framework runs the whole image).
    """

    size: tuple[int, int]
    flipped: bool
    window_logits: WindowLogits


def _window_bands(
    source: PassSource, settings: InferenceSettings, band_rows: int | None, num_classes: int | None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(y0, band)``: float32 ``(K, rows, W)`` bands of the pass's full-resolution logits at ``source.size``."""
    height, width = source.size
    band_rows = band_rows or auto_band_rows(num_classes, width)
    if settings.mode == "slide":
        windows = sliding_windows((height, width), settings.crop_size, settings.stride)
    else:
        windows = [Window(0, height, 0, width)]
    row_counts, col_counts = window_grid_counts((height, width), windows)
    grid_rows: list[list[Window]] = []
    for window in windows:  # row-major: a new grid row starts when y1 changes
        if not grid_rows or grid_rows[-1][0].y1 != window.y1:
            grid_rows.append([])
        grid_rows[-1].append(window)
    kept: list[tuple[Window, np.ndarray, tuple]] = []  # window, low-res logits, taps
    next_row = 0
    done = 0
    while done < height:
        band_end = min(done + band_rows, height)
        while next_row < len(grid_rows) and grid_rows[next_row][0].y1 < band_end:
            row = grid_rows[next_row]
            for window, logits in zip(row, source.window_logits(row)):
                taps = (bilinear_taps(logits.shape[1], window.height), bilinear_taps(logits.shape[2], window.width))
                kept.append((window, np.asarray(logits, np.float32), taps))
            next_row += 1
        band = None
        for window, logits, (row_taps, col_taps) in kept:
            top, bottom = max(done, window.y1), min(band_end, window.y2)
            if top >= bottom:
                continue
            local = slice(top - window.y1, bottom - window.y1)
            values = _upsample(logits, (row_taps[0][local], row_taps[1][local], row_taps[2][local]), col_taps)
            if band is None and values.shape[1:] == (band_end - done, width):  # one window covers the band
                band = values
                continue
            if band is None:
                band = np.zeros((logits.shape[0], band_end - done, width), np.float32)
            band[:, top - done : bottom - done, window.x1 : window.x2] += values
        if row_counts[done:band_end].max() > 1 or col_counts.max() > 1:
            counts = row_counts[done:band_end, None] * col_counts[None, :]
            band /= counts.astype(np.float32)
        yield done, band
        kept = [item for item in kept if item[0].y2 > band_end]
        done = band_end


def _resize_bands(
    bands: Iterator[tuple[int, np.ndarray]], in_size: tuple[int, int], out_size: tuple[int, int], band_rows: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Bilinear resize of a stream of row bands at ``in_size`` into bands of ``band_rows`` rows at ``out_size``."""
    if tuple(in_size) == tuple(out_size):
        yield from bands
        return
    row_low, row_high, row_weight = bilinear_taps(in_size[0], out_size[0])
    col_taps = bilinear_taps(in_size[1], out_size[1])
    buffer: np.ndarray | None = None
    buffer_start = 0
    emitted = 0
    for start, band in bands:
        if buffer is None:
            buffer, buffer_start = band, start
        else:
            buffer = np.concatenate([buffer, band], axis=1)
        available = buffer_start + buffer.shape[1]
        ready = out_size[0] if available >= in_size[0] else int(np.searchsorted(row_high, available, side="left"))
        while emitted < ready and (ready - emitted >= band_rows or available >= in_size[0]):
            end = min(emitted + band_rows, ready)
            rows = slice(emitted, end)
            picked = _lerp(buffer, 1, row_low[rows] - buffer_start, row_high[rows] - buffer_start, row_weight[rows])
            yield emitted, _lerp(picked, 2, *col_taps)
            emitted = end
            if emitted < out_size[0]:
                drop = min(int(row_low[emitted]) - buffer_start, buffer.shape[1])
                if drop > 0:
                    buffer = buffer[:, drop:]
                    buffer_start += drop


def _softmax(band: np.ndarray) -> np.ndarray:
    shifted = np.exp(band - band.max(axis=0, keepdims=True))
    shifted /= shifted.sum(axis=0, keepdims=True)
    return shifted


def _top_probability(band: np.ndarray, largest: np.ndarray) -> np.ndarray:
    """The softmax probability of the largest logit, ``1 / sum(exp(l - max))`` (summed class by class, in
    order), without normalizing every class."""
    total = np.zeros_like(largest)
    scratch = np.empty_like(largest)
    for values in band:
        np.subtract(values, largest, out=scratch)
        np.exp(scratch, out=scratch)
        total += scratch
    return np.float32(1.0) / total


@dataclass
class StreamResult:
    """What :func:`stream_segmentation` returns for one image (arrays at the output size).

    ``labels``: int32 ``(H, W)`` (or the ``labels_out`` array given); ``class_pixels``: int64 ``(K,)`` pixels
    per class; ``class_confidence``: float64 ``(K,)`` sum over each class's pixels of the probability of the
    chosen class (divide by ``class_pixels`` for the mean); ``finite``: no logit was NaN or infinite;
    ``confidence``: float32 ``(H, W)``, the
    probability of each pixel's class, when asked; ``probabilities``: float32 ``(K, H, W)`` when asked
    (averaged over passes with augmentation); ``logits``: float32 ``(K, H, W)`` when asked (without
    augmentation the window-averaged logits, with it the log of the averaged probabilities).
    """

    labels: np.ndarray
    class_pixels: np.ndarray
    class_confidence: np.ndarray
    finite: bool
    confidence: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    logits: np.ndarray | None = None


def stream_segmentation(
    passes: Callable[[float, bool], PassSource],
    output_size: tuple[int, int],
    settings: InferenceSettings,
    return_confidence: bool = False,
    return_probabilities: bool = False,
    return_logits: bool = False,
    band_rows: int | None = None,
    labels_out: np.ndarray | None = None,
    num_classes: int | None = None,
) -> StreamResult:
    """Labels (and what else is asked) of one image, band by band (see the module docstring).

    Args:
        passes: ``(scale, flipped) -> PassSource``: the framework side, called once per pass.
        output_size: ``(H_out, W_out)`` of the results.
        settings: validated inference settings (mode, windows, scales, flip, size_divisor).
        band_rows: output rows per band; ``None``: :func:`auto_band_rows` of ``num_classes`` (the model's).
        labels_out: an int array ``(H_out, W_out)`` to write the labels into (e.g. a ``numpy.memmap``).
    """
    if band_rows is not None and band_rows < 1:
        raise ValueError(f"band_rows must be >= 1, got {band_rows}")
    height, width = int(output_size[0]), int(output_size[1])
    rows_out = band_rows or auto_band_rows(num_classes, width)
    if labels_out is not None:
        check_labels_out(labels_out, num_classes, (height, width))
    labels = np.empty((height, width), np.int32) if labels_out is None else labels_out
    confidence = np.empty((height, width), np.float32) if return_confidence else None
    probabilities = logits_out = class_pixels = class_confidence = None
    finite = True
    streams = []
    for scale, flipped in settings.passes:
        source = passes(scale, flipped)
        source_rows = band_rows or auto_band_rows(num_classes, source.size[1])
        bands = _window_bands(source, settings, source_rows, num_classes)
        streams.append((_resize_bands(bands, source.size, (height, width), rows_out), flipped))
    augmented = settings.augmented
    while True:
        pulled = [(next(stream, None), flipped) for stream, flipped in streams]
        if pulled[0][0] is None:
            break
        start = pulled[0][0][0]
        total = None
        for (band_start, band), flipped in pulled:
            if band_start != start:
                raise RuntimeError("passes produced misaligned bands")
            value = _softmax(band) if augmented else band
            if flipped:
                value = value[:, :, ::-1]
            total = value if total is None else total + value
        if augmented:
            total = total / np.float32(len(pulled))
        rows = slice(start, start + total.shape[1])
        band_labels, largest, band_finite = _top(total)
        finite = finite and band_finite
        labels[rows] = band_labels
        band_probabilities = total if augmented else (_softmax(total) if return_probabilities else None)
        band_confidence = (largest if augmented else _top_probability(total, largest)).astype(np.float32)
        if class_pixels is None:
            class_pixels = np.zeros(total.shape[0], np.int64)
            class_confidence = np.zeros(total.shape[0], np.float64)
        flat = band_labels.reshape(-1)
        class_pixels += np.bincount(flat, minlength=total.shape[0])
        class_confidence += np.bincount(flat, weights=band_confidence.reshape(-1), minlength=total.shape[0])
        if return_confidence:
            confidence[rows] = band_confidence
        if return_probabilities:
            if probabilities is None:
                probabilities = np.empty((total.shape[0], height, width), np.float32)
            probabilities[:, rows] = band_probabilities
        if return_logits:
            if logits_out is None:
                logits_out = np.empty((total.shape[0], height, width), np.float32)
            logits_out[:, rows] = np.log(total) if augmented else total
    return StreamResult(labels=labels, class_pixels=class_pixels, class_confidence=class_confidence, finite=finite,
                        confidence=confidence, probabilities=probabilities, logits=logits_out)
