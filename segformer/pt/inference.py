"""Full-resolution, sliding-window and test-time-augmented inference (PyTorch).

Mirrored by ``segformer/tf/inference.py`` (same functions, same arguments). The rules (window grid,
overlap averaging, scale list, output sizes) are the original mmsegmentation ones and live in
:mod:`segformer.common.inference`; this module only does the tensor work.

``model`` is a :class:`~segformer.pt.SegformerForSemanticSegmentation` in eval mode, or any callable
that maps ``pixel_values (B, C, h, w)`` to logits ``(B, K, h', w')`` (a tensor, an output object with
``.logits``, or a tuple whose first item is the logits). Everything runs under ``torch.inference_mode``.

Memory: ``whole`` mode holds the model's activations for the whole image plus the upsampled logits
``(B, K, H, W)``; ``slide`` mode holds one window's activations at a time plus the running sum
``(B, K, H, W)``. With the eval fast path the decode head never builds its 4 x decoder_hidden_size
concatenation at 1/4 resolution.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..common.inference.rules import (
    InferenceSettings,
    Window,
    check_inference_args,
    resolve_output_sizes,
    scaled_size,
    sliding_windows,
    window_counts,
)
from ..common.inference.streaming import PassSource, StreamResult, check_stream_args, run_by_shape, stream_segmentation

__all__ = ["upsample_logits", "predict_logits", "predict_labels", "predict_streaming", "compile_for_inference"]


def compile_for_inference(model: nn.Module, *, freezing: bool = True, dynamic: bool | None = False) -> Any:
    """The eval fast path under ``torch.compile`` (inductor backend): fused element-wise passes (LayerNorm,
    GELU, bias, residual adds) and, with ``freezing``, weights folded as constants (the decode-head fold is
    computed once at compile time, convolution / linear weights prepacked for oneDNN).

    Opt-in: the first call of each input shape compiles (0.5-2.5 minutes for b0 on a 2-core CPU, depending
    on its load; gcc needed); later calls reuse it. Outputs equal the eager fast path within float rounding. With
    ``freezing=True`` the compiled model keeps the weights it saw at the first call: compile again after
    loading other weights. ``dynamic`` is passed to ``torch.compile`` (``False``: one graph per input size).
    Returns the compiled module; call it like the model (eval mode, best under ``torch.inference_mode``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(freezing, bool):
        raise TypeError(f"freezing must be a bool, got {type(freezing).__name__}")
    if dynamic is not None and not isinstance(dynamic, bool):
        raise TypeError(f"dynamic must be None or a bool, got {type(dynamic).__name__}")
    model.eval()
    return torch.compile(model, backend="inductor", dynamic=dynamic, options={"freezing": freezing})


def upsample_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``, no antialias) of ``(B, K, h, w)`` logits to ``size = (H, W)``.

    Returns ``(B, K, H, W)``; the input itself when it already has that size.
    """
    if logits.ndim != 4:
        raise ValueError(f"logits must have shape (B, K, h, w), got {tuple(logits.shape)}")
    size = (int(size[0]), int(size[1]))
    if tuple(logits.shape[2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _logits_of(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"model must return logits (a tensor, an object with .logits or a tuple), got {type(output).__name__}")


def _encode_decode(model: Callable, pixel_values: torch.Tensor) -> torch.Tensor:
    """The model's logits upsampled to the size of ``pixel_values``: (B, K, h, w)."""
    logits = _logits_of(model(pixel_values))
    if logits.ndim != 4 or logits.shape[0] != pixel_values.shape[0]:
        raise ValueError(
            f"model returned logits of shape {tuple(logits.shape)} for pixel_values {tuple(pixel_values.shape)}; "
            "expected (B, K, h, w) with the same batch"
        )
    return upsample_logits(logits, pixel_values.shape[2:])


def _slide(model: Callable, pixel_values: torch.Tensor, settings: InferenceSettings) -> torch.Tensor:
    """Overlap-averaged logits (B, K, H, W) of the original's sliding windows over (B, C, H, W)."""
    image_size = tuple(pixel_values.shape[2:])
    windows = sliding_windows(image_size, settings.crop_size, settings.stride)
    counts = torch.from_numpy(window_counts(image_size, windows)).to(pixel_values.device)
    total = None
    for window in windows:
        crop = pixel_values[:, :, window.y1 : window.y2, window.x1 : window.x2]
        logits = _encode_decode(model, crop)
        if total is None:
            total = logits.new_zeros((pixel_values.shape[0], logits.shape[1]) + image_size)
        total[:, :, window.y1 : window.y2, window.x1 : window.x2] += logits
    return total / counts.to(total.dtype)


def _single_pass(
    model: Callable, pixel_values: torch.Tensor, size: tuple[int, int], settings: InferenceSettings
) -> torch.Tensor:
    """Logits at ``size`` of one (possibly rescaled / flipped) image batch: (B, K, *size)."""
    if settings.mode == "slide":
        logits = _slide(model, pixel_values, settings)
    else:
        logits = _encode_decode(model, pixel_values)
    return upsample_logits(logits, size)


def _predict(
    model: Callable, pixel_values: torch.Tensor, size: tuple[int, int], settings: InferenceSettings
) -> torch.Tensor:
    input_size = tuple(pixel_values.shape[2:])
    if not settings.augmented:
        scale = settings.scales[0]
        target = scaled_size(input_size, scale, settings.size_divisor)
        scaled = upsample_logits(pixel_values, target)
        logits = _single_pass(model, scaled, size, settings)
        return logits.softmax(dim=1) if settings.return_probabilities else logits
    total = None
    for scale, flipped in settings.passes:
        target = scaled_size(input_size, scale, settings.size_divisor)
        scaled = upsample_logits(pixel_values, target)
        if flipped:
            scaled = scaled.flip(-1)
        probabilities = _single_pass(model, scaled, size, settings).softmax(dim=1)
        if flipped:
            probabilities = probabilities.flip(-1)
        total = probabilities if total is None else total + probabilities
    probabilities = total / len(settings.passes)
    return probabilities if settings.return_probabilities else probabilities.log()


def predict_logits(
    model: Callable,
    pixel_values: torch.Tensor,
    mode: str = "whole",
    crop_size: int | Sequence[int] = (1024, 1024),
    stride: int | Sequence[int] = (768, 768),
    output_size: int | Sequence[int] | Sequence[Sequence[int]] | None = None,
    scales: float | Sequence[float] = (1.0,),
    flip: bool = False,
    return_probabilities: bool = False,
    size_divisor: int | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """Logits (or class probabilities) at full resolution, the original's way.

    Args:
        model: see the module docstring; must be in eval mode if it is an ``nn.Module``.
        pixel_values: ``(B, C, H, W)`` float, normalized (NCHW, as the model takes it).
        mode: ``"whole"`` (one pass) or ``"slide"`` (windows of ``crop_size`` every ``stride``, overlap
            averaged; see :mod:`segformer.common.inference` for the exact window rule).
        crop_size, stride: window size and step ``(height, width)`` (or one int for both), slide mode;
            the defaults are the original Cityscapes test config.
        output_size: ``None`` -> the input size ``(H, W)``; ``(h, w)`` -> that size for every image;
            a sequence of ``B`` pairs -> one size per image (the result is then a list).
        scales: test-time scale ratios; the image is resized bilinearly to ``int(H * s + 0.5)`` (see
            ``size_divisor``) before inference and the result resized to the output size.
        flip: also run every scale on the horizontally flipped image (un-flipped afterwards).
        return_probabilities: return softmax probabilities instead of logits.
        size_divisor: round scaled sizes up to a multiple of this (the original's ``AlignedResize``).

    Returns:
        ``(B, K, h, w)`` tensor (or a list of ``(K, h_i, w_i)`` tensors with per-image output sizes).
        Without augmentation (one scale, no flip) these are the (window-averaged) logits, or their
        softmax. With augmentation the original averages softmax *probabilities* over the passes: the
        result is that average, or, without ``return_probabilities``, its logarithm (log-probabilities:
        same argmax, and ``softmax`` of it gives the average back).
    """
    settings = check_inference_args(mode, crop_size, stride, scales, flip, return_probabilities, size_divisor)
    _check_model_input(model, pixel_values)
    batch = int(pixel_values.shape[0])
    sizes, per_image = resolve_output_sizes(batch, tuple(pixel_values.shape[2:]), output_size)
    with torch.inference_mode():
        if per_image:
            return [_predict(model, pixel_values[i : i + 1], sizes[i], settings)[0] for i in range(batch)]
        return _predict(model, pixel_values, sizes[0], settings)


def _check_model_input(model: Callable, pixel_values: Any) -> None:
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor (B, C, H, W), got {type(pixel_values).__name__}")
    if pixel_values.ndim != 4 or min(pixel_values.shape) < 1:
        raise ValueError(f"pixel_values must have shape (B, C, H, W), got {tuple(pixel_values.shape)}")
    if not pixel_values.is_floating_point():
        raise TypeError(f"pixel_values must be floating point (normalized images), got dtype {pixel_values.dtype}")
    if isinstance(model, nn.Module) and model.training:
        raise ValueError("model is in training mode (dropout, batch statistics); call model.eval() first")


def _pass_source(
    model: Callable, image: torch.Tensor, scale: float, flipped: bool, settings: InferenceSettings,
    direct_size: tuple[int, int] | None, window_batch: int,
) -> PassSource:
    """The (scale, flip) pass over one image ``(1, C, H, W)``: its frame and a window -> logits function."""
    target = scaled_size(tuple(image.shape[2:]), scale, settings.size_divisor)
    scaled = upsample_logits(image, target)
    if flipped:
        scaled = scaled.flip(-1)

    def window_logits(windows: Sequence[Window]) -> list[np.ndarray]:
        crops = [scaled] if settings.mode == "whole" else [scaled[:, :, w.y1 : w.y2, w.x1 : w.x2] for w in windows]

        def run(batch: list[torch.Tensor]) -> list[np.ndarray]:
            logits = _logits_of(model(torch.cat(batch)))
            return [row.float().cpu().numpy() for row in logits]

        return run_by_shape(crops, window_batch, run)

    return PassSource(size=direct_size or target, flipped=flipped, window_logits=window_logits)


def predict_streaming(
    model: Callable,
    pixel_values: torch.Tensor,
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
) -> StreamResult:
    """Labels of ONE image ``(1, C, H, W)`` without full-resolution logits in memory (see
    :mod:`segformer.common.inference.streaming`): the same labels as ``predict_labels`` / the argmax of
    :func:`predict_logits` (ties aside), confidence / probabilities / logits within float rounding.

    Arguments as :func:`predict_logits`, plus: ``return_confidence`` (float32 ``(H, W)``: the probability of
    each pixel's class), ``return_probabilities`` / ``return_logits`` (float32 ``(K, H, W)``: only these
    materialise ``K x H x W``), ``direct_upsampling`` (whole mode without augmentation: upsample the logits
    once, straight to the output size, as Hugging Face's ``post_process_semantic_segmentation`` does, instead
    of the original's to-input-then-to-output), ``band_rows`` (output rows per band; default: as many as keep a band near 32 MB), ``window_batch``
    (windows of equal size run together) and ``labels_out`` (an int array of the output size to fill, e.g. a
    ``numpy.memmap``). Returns a :class:`~segformer.common.inference.streaming.StreamResult` of numpy arrays.
    """
    settings = check_inference_args(mode, crop_size, stride, scales, flip, False, size_divisor)
    _check_model_input(model, pixel_values)
    if pixel_values.shape[0] != 1:
        raise ValueError(f"predict_streaming takes one image (1, C, H, W), got batch {pixel_values.shape[0]}")
    (size,), _ = resolve_output_sizes(1, tuple(pixel_values.shape[2:]), output_size)
    check_stream_args(settings, direct_upsampling, window_batch)
    direct = size if direct_upsampling else None
    with torch.inference_mode():
        return stream_segmentation(
            lambda scale, flipped: _pass_source(model, pixel_values, scale, flipped, settings, direct, window_batch),
            size, settings, return_confidence=return_confidence, return_probabilities=return_probabilities,
            return_logits=return_logits, band_rows=band_rows, labels_out=labels_out,
            num_classes=getattr(getattr(model, "config", None), "num_labels", None),
        )


def predict_labels(model: Callable, pixel_values: torch.Tensor, **kwargs: Any) -> torch.Tensor | list[torch.Tensor]:
    """Per-pixel class ids: ``argmax`` over classes of :func:`predict_logits` (same keyword arguments),
    computed image by image in row bands (:func:`predict_streaming`): full-resolution logits are never held.

    Returns int64 ``(B, h, w)`` (or a list of ``(h_i, w_i)`` with per-image output sizes).
    """
    kwargs.pop("return_probabilities", None)
    output_size = kwargs.pop("output_size", None)
    _check_model_input(model, pixel_values)
    batch = int(pixel_values.shape[0])
    sizes, per_image = resolve_output_sizes(batch, tuple(pixel_values.shape[2:]), output_size)
    labels = [
        torch.from_numpy(predict_streaming(model, pixel_values[i : i + 1], output_size=sizes[i], **kwargs).labels).long()
        for i in range(batch)
    ]
    return labels if per_image else torch.stack(labels)
