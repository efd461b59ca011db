"""Framework-free parts of quantized deployment: calibration images, label-map agreement, ONNX Runtime int8.

* :func:`calibration_pixel_values` - the user's images (files, folders, globs, ``@lists``) through a
  :class:`~segformer.common.images.image_processing.SegformerImageProcessor` at one fixed size: the calibration set of
  static int8 (ONNX Runtime) and the representative dataset of TFLite full-integer conversion.
* :func:`label_agreement` - the fraction of pixels whose arg-max class is the same in two logits tensors.
* :func:`quantize_onnx` - int8 of an ONNX file with ONNX Runtime: static (QDQ, per-channel int8 weights, uint8
  activations calibrated by min / max on the calibration set) or dynamic (weights only); written atomically.

Used by ``segformer/pt/quantize.py``, ``segformer/tf/export.py`` and ``segformer export``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..base.atomic import atomic_path

__all__ = [
    "ONNX_INT8_MODES",
    "calibration_pixel_values",
    "label_agreement",
    "quantize_onnx",
    "random_pixel_values",
    "representative_batches",
]

ONNX_INT8_MODES = ("static", "dynamic")
# static int8 quantizes the convolutions and matrix products; elementwise ops (GELU, LayerNorm, softmax,
# residual adds) stay float, which costs a quantize / dequantize pair each and buys nothing on CPU
_STATIC_OP_TYPES = ("Conv", "MatMul", "Gemm")


def calibration_pixel_values(
    images: Iterable[Any],
    size: Sequence[int],
    processor: Any = None,
    limit: int | None = None,
    what: str = "calibration",
) -> list[np.ndarray]:
    """Each calibration image as ``(1, C, height, width)`` float32 pixel values, in order.

    Args:
        images: image paths, folders (every image below them), globs, ``@FILE`` lists, or decoded images
            (uint8 ``(H, W, 3)`` arrays, PIL images), mixed freely.
        size: ``(height, width)`` every image is resized to (the fixed input of the exported model).
        processor: the model's :class:`SegformerImageProcessor` (normalization); default ImageNet statistics.
        limit: use at most this many images (the first ones).
        what: the argument named in errors (``--calibration`` on the command line).

    Raises ``ValueError`` when no image is given, naming ``what``; unreadable files raise the image loader's
    error, which names the file.
    """
    from ..images.image_io import expand_inputs, load_image
    from ..images.image_processing import SegformerImageProcessor
    from .rules import as_size_pair

    height, width = as_size_pair("size", size)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be None or a positive int, got {limit!r}")
    if isinstance(images, (str, os.PathLike, np.ndarray)):
        images = [images]
    items = list(images)
    if not items:
        raise ValueError(f"{what}: no calibration images given; pass image files, folders or globs")
    decoded: list[Any] = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            decoded.extend(expand_inputs([item], what))
        else:
            decoded.append(item)
    if limit is not None:
        decoded = decoded[:limit]
    processor = processor if processor is not None else SegformerImageProcessor()
    result = []
    for item in decoded:
        image = load_image(item) if isinstance(item, (str, os.PathLike)) else item
        batch = processor(image, size={"height": height, "width": width}, return_tensors="np")["pixel_values"]
        result.append(np.ascontiguousarray(batch[:1], dtype=np.float32))
    return result


def random_pixel_values(count: int, size: Sequence[int], seed: int = 0, channels: int = 3) -> list[np.ndarray]:
    """``count`` random ``(1, channels, height, width)`` float32 inputs: uniform uint8 images normalized with
    the ImageNet statistics (the range real pixel values have), reproducible from ``seed``."""
    from ..images.image_processing import SegformerImageProcessor
    from .rules import as_size_pair

    height, width = as_size_pair("size", size)
    rng = np.random.default_rng(seed)
    processor = SegformerImageProcessor(do_resize=False, do_convert_rgb=channels == 3)
    out = []
    for _ in range(int(count)):
        image = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
        out.append(np.ascontiguousarray(processor(image, return_tensors="np")["pixel_values"], dtype=np.float32))
    return out


def representative_batches(pixel_values: Sequence[np.ndarray], data_format: str = "channels_first") -> Iterator[list[np.ndarray]]:
    """TFLite's representative dataset: one ``[array]`` per calibration input, channels-last when
    ``data_format="channels_last"`` (``(1, H, W, C)``)."""
    if data_format not in ("channels_first", "channels_last"):
        raise ValueError(f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}")
    for array in pixel_values:
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 4:
            raise ValueError(f"calibration pixel values must be (1, C, H, W) arrays, got shape {array.shape}")
        yield [np.ascontiguousarray(array.transpose(0, 2, 3, 1) if data_format == "channels_last" else array)]


def label_agreement(reference: Any, other: Any, axis: int = 1) -> float:
    """Fraction of positions where ``argmax(reference, axis) == argmax(other, axis)`` (logits of the same
    shape, e.g. ``(B, K, h, w)`` with ``axis=1``)."""
    reference, other = np.asarray(reference), np.asarray(other)
    if reference.shape != other.shape:
        raise ValueError(f"logits shapes differ: {reference.shape} vs {other.shape}")
    return float(np.mean(np.argmax(reference, axis=axis) == np.argmax(other, axis=axis)))


class _Reader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over a list of pixel values."""

    def __init__(self, input_name: str, pixel_values: Sequence[np.ndarray]) -> None:
        self._items = iter([{input_name: np.asarray(p, dtype=np.float32)} for p in pixel_values])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def rewind(self) -> None:  # part of the protocol; calibration reads the set once
        pass


def quantize_onnx(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    calibration: Sequence[np.ndarray] | None = None,
    mode: str = "static",
    per_channel: bool = True,
    overwrite: bool = True,
) -> Path:
    """Write an int8 copy of the ONNX file ``src`` to ``dst`` (atomically) with ONNX Runtime.

    ``mode="static"`` (needs ``calibration``: pixel values from :func:`calibration_pixel_values`): QDQ format,
    int8 weights (per output channel with ``per_channel``) and uint8 activations with ranges calibrated by
    min / max over the calibration set, for convolutions and matrix products; the rest stays float. The
    dynamic batch / height / width axes of ``src`` remain dynamic. ``mode="dynamic"``: int8 weights of the
    matrix products, activations quantized per call (no calibration; on CPU slower than float32 for this
    model, see ``benchmarks/README.md``).
    """
    from ..base.deps import require

    require("onnxruntime", "int8 quantization of an ONNX file")
    require("onnx", "int8 quantization of an ONNX file")
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in ONNX_INT8_MODES:
        raise ValueError(f"mode must be one of {list(ONNX_INT8_MODES)}, got {mode!r}")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"src {os.fspath(src)!r} is not an ONNX file")
    if mode == "static" and not calibration:
        raise ValueError("static int8 needs calibration images (calibration=[pixel values ...]); none were given")
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"file {os.fspath(dst)!r} already exists; pass overwrite=True to replace it")
    input_name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="segformer-int8-") as scratch, atomic_path(dst, overwrite=overwrite) as tmp:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)  # shape inference + graph folding
        if mode == "static":
            quantize_static(
                str(prepared), str(tmp), _Reader(input_name, calibration or []),
                quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                per_channel=per_channel, op_types_to_quantize=list(_STATIC_OP_TYPES),
            )
        else:
            quantize_dynamic(str(prepared), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
                             op_types_to_quantize=["MatMul", "Gemm"])
    return dst
