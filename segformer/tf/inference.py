"""Full-resolution, sliding-window and test-time-augmented inference (TensorFlow / Keras 3).

TF twin of ``segformer/pt/inference.py``: same functions, same arguments, same numbers (bilinear resizes
are ``segformer.tf.layers.resize_bilinear``: half-pixel centres without antialias like PyTorch's
``align_corners=False``, correct under XLA too). The rules live in :mod:`segformer.common.inference`.

``model`` is a :class:`~segformer.tf.TFSegformerForSemanticSegmentation` (called with
``training=False``) or any callable mapping ``pixel_values`` to logits (a tensor, an output object with
``.logits``, or a tuple whose first item is the logits), e.g. a ``tf.function(jit_compile=True)`` of the
model. ``data_format`` says how both the pixel values and the logits are laid out:
``"channels_first"`` (B, C, H, W) -> (B, K, h, w), the models' default, or ``"channels_last"``
(B, H, W, C) -> (B, h, w, K). Internally everything is resized in channels-last.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from ..common.inference.rules import (
    InferenceSettings,
    Window,
    check_inference_args,
    resolve_output_sizes,
    scaled_size,
    sliding_windows,
    window_counts,
)
from ..common.model.pixel_values import DATA_FORMATS
from ..common.inference.streaming import PassSource, StreamResult, check_stream_args, run_by_shape, stream_segmentation
from .layers import resize_bilinear

__all__ = ["upsample_logits", "predict_logits", "predict_labels", "predict_streaming", "DATA_FORMATS"]



def _check_data_format(data_format: str) -> None:
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {list(DATA_FORMATS)}, got {data_format!r}")


def _to_last(x: tf.Tensor, data_format: str) -> tf.Tensor:
    return tf.transpose(x, (0, 2, 3, 1)) if data_format == "channels_first" else x


def _from_last(x: tf.Tensor, data_format: str) -> tf.Tensor:
    return tf.transpose(x, (0, 3, 1, 2)) if data_format == "channels_first" else x


def _resize_last(x: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
    """Bilinear resize of channels-last (B, h, w, K) to ``size``; the input itself at that size."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[1:3]) == size:
        return x
    return resize_bilinear(x, size)


def upsample_logits(logits: tf.Tensor, size: Sequence[int], data_format: str = "channels_first") -> tf.Tensor:
    """Bilinear resize (half-pixel centres, no antialias) of logits to ``size = (H, W)``.

    ``(B, K, h, w)`` -> ``(B, K, H, W)`` (``channels_first``) or ``(B, h, w, K)`` -> ``(B, H, W, K)``.
    """
    _check_data_format(data_format)
    logits = tf.convert_to_tensor(logits)
    if logits.shape.rank != 4:
        raise ValueError(f"logits must have rank 4, got shape {tuple(logits.shape)}")
    return _from_last(_resize_last(_to_last(logits, data_format), size), data_format)


def _logits_of(output: Any) -> tf.Tensor:
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    return tf.convert_to_tensor(output)


def _call(model: Callable, pixel_values: tf.Tensor) -> Any:
    import keras

    if isinstance(model, keras.layers.Layer):
        return model(pixel_values, training=False)
    return model(pixel_values)


def _encode_decode(model: Callable, image: tf.Tensor, data_format: str) -> tf.Tensor:
    """Channels-last image (B, h, w, C) -> channels-last logits upsampled to (B, h, w, K)."""
    logits = tf.convert_to_tensor(_logits_of(_call(model, _from_last(image, data_format))))
    if logits.shape.rank != 4 or logits.shape[0] != image.shape[0]:
        raise ValueError(
            f"model returned logits of shape {tuple(logits.shape)} for pixel_values of batch {image.shape[0]}; "
            f"expected rank 4 ({data_format}) with the same batch"
        )
    return _resize_last(_to_last(logits, data_format), image.shape[1:3])


def _slide(model: Callable, image: tf.Tensor, settings: InferenceSettings, data_format: str) -> tf.Tensor:
    """Overlap-averaged channels-last logits (B, H, W, K) of the original's windows over (B, H, W, C)."""
    h_img, w_img = int(image.shape[1]), int(image.shape[2])
    windows = sliding_windows((h_img, w_img), settings.crop_size, settings.stride)
    counts = window_counts((h_img, w_img), windows)
    total = None
    for window in windows:
        logits = _encode_decode(model, image[:, window.y1 : window.y2, window.x1 : window.x2, :], data_format)
        padded = tf.pad(logits, [[0, 0], [window.y1, h_img - window.y2], [window.x1, w_img - window.x2], [0, 0]])
        total = padded if total is None else total + padded
    return total / tf.constant(counts[None, :, :, None], dtype=total.dtype)


def _single_pass(
    model: Callable, image: tf.Tensor, size: tuple[int, int], settings: InferenceSettings, data_format: str
) -> tf.Tensor:
    if settings.mode == "slide":
        logits = _slide(model, image, settings, data_format)
    else:
        logits = _encode_decode(model, image, data_format)
    return _resize_last(logits, size)


def _predict(
    model: Callable, image: tf.Tensor, size: tuple[int, int], settings: InferenceSettings, data_format: str
) -> tf.Tensor:
    """Channels-last image (B, H, W, C) -> channels-last result (B, *size, K)."""
    input_size = (int(image.shape[1]), int(image.shape[2]))
    if not settings.augmented:
        scaled = _resize_last(image, scaled_size(input_size, settings.scales[0], settings.size_divisor))
        logits = _single_pass(model, scaled, size, settings, data_format)
        return tf.nn.softmax(logits, axis=-1) if settings.return_probabilities else logits
    total = None
    for scale, flipped in settings.passes:
        scaled = _resize_last(image, scaled_size(input_size, scale, settings.size_divisor))
        if flipped:
            scaled = tf.reverse(scaled, axis=[2])
        probabilities = tf.nn.softmax(_single_pass(model, scaled, size, settings, data_format), axis=-1)
        if flipped:
            probabilities = tf.reverse(probabilities, axis=[2])
        total = probabilities if total is None else total + probabilities
    probabilities = total / float(len(settings.passes))
    return probabilities if settings.return_probabilities else tf.math.log(probabilities)


def predict_logits(
    model: Callable,
    pixel_values: Any,
    mode: str = "whole",
    crop_size: int | Sequence[int] = (1024, 1024),
    stride: int | Sequence[int] = (768, 768),
    output_size: int | Sequence[int] | Sequence[Sequence[int]] | None = None,
    scales: float | Sequence[float] = (1.0,),
    flip: bool = False,
    return_probabilities: bool = False,
    size_divisor: int | None = None,
    data_format: str = "channels_first",
) -> tf.Tensor | list[tf.Tensor]:
    """Logits (or class probabilities) at full resolution, the original's way (TF twin of
    :func:`segformer.pt.inference.predict_logits`, same arguments plus ``data_format``).

    Args:
        pixel_values: float ``(B, C, H, W)`` (``channels_first``) or ``(B, H, W, C)``; numpy or tf.
        mode, crop_size, stride, output_size, scales, flip, return_probabilities, size_divisor: as in
            the PyTorch version (see :mod:`segformer.common.inference` for the rules).

    Returns:
        float32 ``(B, K, h, w)`` (``channels_first``) or ``(B, h, w, K)``, or a list of per-image
        ``(K, h_i, w_i)`` / ``(h_i, w_i, K)`` tensors with per-image output sizes. With augmentation,
        averaged probabilities (``return_probabilities``) or their logarithm.
    """
    settings = check_inference_args(mode, crop_size, stride, scales, flip, return_probabilities, size_divisor)
    image = _image_last(pixel_values, data_format)
    batch = int(image.shape[0])
    sizes, per_image = resolve_output_sizes(batch, (int(image.shape[1]), int(image.shape[2])), output_size)
    if per_image:
        return [_from_last(_predict(model, image[i : i + 1], sizes[i], settings, data_format), data_format)[0]
                for i in range(batch)]
    return _from_last(_predict(model, image, sizes[0], settings, data_format), data_format)


def _image_last(pixel_values: Any, data_format: str) -> tf.Tensor:
    """Validated pixel values as a channels-last float tensor (B, H, W, C)."""
    _check_data_format(data_format)
    if isinstance(pixel_values, np.ndarray) and not np.issubdtype(pixel_values.dtype, np.floating):
        raise TypeError(f"pixel_values must be floating point (normalized images), got dtype {pixel_values.dtype}")
    pixel_values = tf.convert_to_tensor(pixel_values)
    if not pixel_values.dtype.is_floating:
        raise TypeError(f"pixel_values must be floating point (normalized images), got dtype {pixel_values.dtype.name}")
    if pixel_values.shape.rank != 4 or min(pixel_values.shape) < 1:
        raise ValueError(
            f"pixel_values must have shape {'(B, C, H, W)' if data_format == 'channels_first' else '(B, H, W, C)'}, "
            f"got {tuple(pixel_values.shape)}"
        )
    return _to_last(pixel_values, data_format)


def _pass_source(
    model: Callable, image: tf.Tensor, scale: float, flipped: bool, settings: InferenceSettings, data_format: str,
    direct_size: tuple[int, int] | None, window_batch: int,
) -> PassSource:
    """The (scale, flip) pass over one channels-last image ``(1, H, W, C)`` (twin of the PyTorch one)."""
    target = scaled_size((int(image.shape[1]), int(image.shape[2])), scale, settings.size_divisor)
    scaled = _resize_last(image, target)
    if flipped:
        scaled = tf.reverse(scaled, axis=[2])

    def window_logits(windows: Sequence[Window]) -> list[np.ndarray]:
        crops = [scaled] if settings.mode == "whole" else [scaled[:, w.y1 : w.y2, w.x1 : w.x2, :] for w in windows]

        def run(batch: list[tf.Tensor]) -> list[np.ndarray]:
            inputs = _from_last(tf.concat(batch, axis=0), data_format)
            logits = _to_last(tf.convert_to_tensor(_logits_of(_call(model, inputs))), data_format)
            return list(np.asarray(tf.cast(logits, tf.float32)).transpose(0, 3, 1, 2))

        return run_by_shape(crops, window_batch, run)

    return PassSource(size=direct_size or target, flipped=flipped, window_logits=window_logits)


def predict_streaming(
    model: Callable,
    pixel_values: Any,
    mode: str = "whole",
    crop_size: int | Sequence[int] = (1024, 1024),
    stride: int | Sequence[int] = (768, 768),
    output_size: int | Sequence[int] | None = None,
    scales: float | Sequence[float] = (1.0,),
    flip: bool = False,
    size_divisor: int | None = None,
    return_confidence: bool = False,
    return_probabilities: bool = False,
    return_logits: bool = False,
    direct_upsampling: bool = False,
    band_rows: int | None = None,
    window_batch: int = 1,
    labels_out: np.ndarray | None = None,
    data_format: str = "channels_first",
) -> StreamResult:
    """TF twin of :func:`segformer.pt.inference.predict_streaming` (same arguments plus ``data_format`` of the
    pixel values; the results are numpy, probabilities / logits ``(K, H, W)`` whatever the data format)."""
    settings = check_inference_args(mode, crop_size, stride, scales, flip, False, size_divisor)
    image = _image_last(pixel_values, data_format)
    if int(image.shape[0]) != 1:
        raise ValueError(f"predict_streaming takes one image, got batch {int(image.shape[0])}")
    (size,), _ = resolve_output_sizes(1, (int(image.shape[1]), int(image.shape[2])), output_size)
    check_stream_args(settings, direct_upsampling, window_batch)
    direct = size if direct_upsampling else None
    return stream_segmentation(
        lambda scale, flipped: _pass_source(model, image, scale, flipped, settings, data_format, direct, window_batch),
        size, settings, return_confidence=return_confidence, return_probabilities=return_probabilities,
        return_logits=return_logits, band_rows=band_rows, labels_out=labels_out,
            num_classes=getattr(getattr(model, "config", None), "num_labels", None),
    )


def predict_labels(model: Callable, pixel_values: Any, **kwargs: Any) -> tf.Tensor | list[tf.Tensor]:
    """Per-pixel class ids: argmax over classes of :func:`predict_logits` (same keyword arguments), computed
    image by image in row bands (:func:`predict_streaming`): full-resolution logits are never held.

    Returns int64 ``(B, h, w)`` (or a list of ``(h_i, w_i)``).
    """
    kwargs.pop("return_probabilities", None)
    output_size = kwargs.pop("output_size", None)
    data_format = kwargs.get("data_format", "channels_first")
    image = _image_last(pixel_values, data_format)
    batch = int(image.shape[0])
    sizes, per_image = resolve_output_sizes(batch, (int(image.shape[1]), int(image.shape[2])), output_size)
    labels = [
        tf.constant(predict_streaming(model, _from_last(image[i : i + 1], data_format), output_size=sizes[i],
                                      **kwargs).labels, tf.int64)
        for i in range(batch)
    ]
    return labels if per_image else tf.stack(labels)
