"""Framework-free parts of quantized deployment: calibration images, label-map agreement, ONNX Runtime int8.

* :func:`calibration_pixel_values` - the user's images (files, folders, globs, ``@lists``) through a
  :class:`~segformer.common.images.image_processing.SegformerImageProcessor` at one fixed size: the calibration set of
  static int8 (ONNX Runtime) and the representative dataset of TFLite full-integer conversion.
* :func:`label_agreement` - the fraction of pixels whose arg-max class is the same in two logits tensors.
* :func:`quantize_onnx` - int8 of an ONNX file with ONNX Runtime: static (QDQ, per-channel int8 weights,
  activations calibrated by min / max on the calibration set) or dynamic (weights only); written atomically,
  in the integer format of the CPU that will run it (:data:`INT8_TARGETS`, :func:`cpu_int8_target`).
* :func:`onnx_layer_losses` / :func:`rank_layer_losses` - which layers of an int8 file lose most against the
  float32 file (relative error of each layer's output, ranked by how much it grows at that layer).

Why the target CPU matters: on x86-64 without VNNI (AVX2, and AVX-512 without VNNI) ONNX Runtime multiplies
uint8 activations by int8 weights with ``VPMADDUBSW``, which adds two products into a **saturating int16**:
255 x 127 x 2 = 64770 does not fit, the sums clip, and the labels of a file quantized with full 8-bit
weights drift (measured on an emulated Haswell: 85 % label agreement where a VNNI CPU gives 97 %). VNNI's
``VPDPBUSD`` adds four products straight into int32 and never clips. The file is usually run on another
machine than the one that writes it, so the target is the deployment CPU, not necessarily this one.

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
    "DEFAULT_MIN_AGREEMENT",
    "INT8_TARGETS",
    "ONNX_INT8_MODES",
    "calibration_pixel_values",
    "cpu_int8_target",
    "label_agreement",
    "onnx_int8_format",
    "onnx_layer_losses",
    "quantize_onnx",
    "rank_layer_losses",
    "resolve_int8_target",
    "random_pixel_values",
    "representative_batches",
]

ONNX_INT8_MODES = ("static", "dynamic")
# static int8 quantizes the convolutions and matrix products; elementwise ops (GELU, LayerNorm, softmax,
# residual adds) stay float, which costs a quantize / dequantize pair each and buys nothing on CPU
_STATIC_OP_TYPES = ("Conv", "MatMul", "Gemm")
# the least label-map agreement (percent of pixels) with the float32 model that ``segformer export`` accepts
DEFAULT_MIN_AGREEMENT = 99.0

INT8_TARGETS = ("auto", "avx2", "vnni", "arm")
# target -> (activation type, weight type, reduce_range: 7-bit weights, why); ONNX Runtime's QuantType names
_ONNX_FORMATS: dict[str, tuple[str, str, bool, str]] = {
    "vnni": ("QUInt8", "QInt8", False,
             "uint8 activations x int8 weights (x86-64 with AVX512-VNNI or AVX-VNNI: VPDPBUSD sums four products "
             "into int32, no overflow)"),
    "avx2": ("QUInt8", "QInt8", True,
             "uint8 activations x 7-bit weights in -64..64 (reduce_range; any x86-64: VPMADDUBSW sums two "
             "products into a saturating int16, and 2 x 255 x 64 = 32640 fits)"),
    "arm": ("QInt8", "QInt8", False,
            "int8 activations x int8 weights (ARM64: SDOT / widening multiplies accumulate in int32)"),
}


def _cpu_features() -> tuple[str, set[str]]:
    """``(machine, upper-case CPU feature names)`` of the CPU this process runs on.

    numpy's runtime dispatch table is read first: it is filled from the CPUID instruction, as ONNX Runtime
    picks its kernels, so it is right also where ``/proc/cpuinfo`` describes another CPU (an emulator such
    as ``qemu-x86_64 -cpu Haswell`` shows the host's file). Without it, the ``flags`` / ``Features`` lines
    of ``/proc/cpuinfo`` (Linux).
    """
    import platform

    machine = platform.machine().lower()
    features: set[str] = set()
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as table  # numpy 2
    except ImportError:  # pragma: no cover - numpy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as table
        except ImportError:
            table = {}
    features = {name.upper() for name, present in table.items() if present}
    if not features and os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    features = {name.upper() for name in value.split()}
                    break
    return machine, features


def cpu_int8_target(machine: str | None = None, features: Iterable[str] | None = None) -> str:
    """The int8 target (``"vnni"``, ``"avx2"`` or ``"arm"``) of this CPU, or of ``machine`` / ``features``
    (``platform.machine()`` and CPU flag names such as ``avx512_vnni``, any case) when given.

    ARM64 -> ``"arm"``; x86-64 with AVX512-VNNI (or AVX-VNNI where the flag table names it) -> ``"vnni"``;
    every other CPU -> ``"avx2"``, whose format cannot overflow on any x86-64 CPU.
    """
    if machine is None or features is None:
        found_machine, found = _cpu_features()
        machine = found_machine if machine is None else machine
        features = found if features is None else features
    machine = machine.lower()
    names = {str(name).upper().replace("_", "") for name in features}
    if machine in ("arm64", "aarch64") or machine.startswith("armv8") or machine.startswith("armv9"):
        return "arm"
    if names & {"AVX512VNNI", "AVXVNNI"}:
        return "vnni"
    return "avx2"


def resolve_int8_target(target_cpu: str = "auto") -> str:
    """``target_cpu`` checked against :data:`INT8_TARGETS`; ``"auto"`` becomes this CPU's
    (:func:`cpu_int8_target`)."""
    if target_cpu not in INT8_TARGETS:
        raise ValueError(f"target_cpu must be one of {list(INT8_TARGETS)}, got {target_cpu!r}")
    return cpu_int8_target() if target_cpu == "auto" else target_cpu


def onnx_int8_format(target_cpu: str = "auto") -> dict[str, Any]:
    """The ONNX Runtime int8 format written for ``target_cpu``: ``{"target", "activation_type",
    "weight_type", "reduce_range", "description"}`` (types as ``onnxruntime.quantization.QuantType`` names).
    Dynamic int8 always quantizes activations to uint8 (``DynamicQuantizeLinear``); the weights follow the
    target."""
    target = resolve_int8_target(target_cpu)
    activation, weight, reduce_range, description = _ONNX_FORMATS[target]
    return {"target": target, "activation_type": activation, "weight_type": weight, "reduce_range": reduce_range,
            "description": description}


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
        decoded_file = isinstance(item, (str, os.PathLike))
        image = load_image(item) if decoded_file else item
        batch = processor(image, size={"height": height, "width": width}, return_tensors="np",
                          input_data_format="channels_last" if decoded_file else None)["pixel_values"]
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
        pixel_values = processor(image, return_tensors="np", input_data_format="channels_last")["pixel_values"]
        out.append(np.ascontiguousarray(pixel_values, dtype=np.float32))
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
    target_cpu: str = "auto",
    float_stem: bool = True,
) -> Path:
    """Write an int8 copy of the ONNX file ``src`` to ``dst`` (atomically) with ONNX Runtime.

    ``target_cpu`` (:data:`INT8_TARGETS`) is the CPU that will **run** the file, which is often not the one
    that writes it: ``"avx2"`` (7-bit weights; correct on every x86-64 CPU), ``"vnni"`` (full 8-bit
    weights; only x86-64 CPUs with AVX512-VNNI / AVX-VNNI compute it without int16 saturation), ``"arm"``
    (int8 activations and weights), ``"auto"`` this machine's (:func:`cpu_int8_target`). See
    :func:`onnx_int8_format`. The target is stored in the file's metadata (``segformer_int8_target``).

    ``mode="static"`` (needs ``calibration``: pixel values from :func:`calibration_pixel_values`): QDQ format,
    int8 weights (per output channel with ``per_channel``) and activations with ranges calibrated by
    min / max over the calibration set, for convolutions and matrix products; the rest stays float. With
    ``float_stem`` (default) the first convolution, the patch embedding that reads the pixels, stays float
    too: on a trained b0 at 512x512 that lifted the worst held-out image from 98.1 % to 99.65 % label agreement
    with float32 (``benchmarks/README.md``), for about 1 % of the model's multiply-adds. The
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
    form = onnx_int8_format(target_cpu)
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
        quantized = Path(scratch) / "int8.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)  # shape inference + graph folding
        weight_type = getattr(QuantType, form["weight_type"])
        if mode == "static":
            quantize_static(
                str(prepared), str(quantized), _Reader(input_name, calibration or []),
                quant_format=QuantFormat.QDQ, activation_type=getattr(QuantType, form["activation_type"]),
                weight_type=weight_type, per_channel=per_channel, reduce_range=form["reduce_range"],
                op_types_to_quantize=list(_STATIC_OP_TYPES),
                nodes_to_exclude=_stem(onnx.load(str(prepared), load_external_data=False)) if float_stem else [],
            )
        else:
            quantize_dynamic(str(prepared), str(quantized), weight_type=weight_type, per_channel=per_channel,
                             reduce_range=form["reduce_range"], op_types_to_quantize=["MatMul", "Gemm"])
        model = onnx.load(str(quantized))
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                            "segformer_int8_target": form["target"], "segformer_int8_mode": mode})
        onnx.save(model, str(tmp))
    return dst


def _stem(model: Any) -> list[str]:
    """The name of the graph's first ``Conv`` node (ONNX nodes are stored in execution order), as a list."""
    for node in model.graph.node:
        if node.op_type == "Conv":
            return [node.name]
    return []


def rank_layer_losses(
    names: Sequence[str], reference: Sequence[np.ndarray], quantized: Sequence[np.ndarray], top: int = 3
) -> list[tuple[str, float]]:
    """The ``top`` layers where quantization loses most, as ``(name, relative error)``, worst first.

    ``names`` are layer outputs in execution order, ``reference`` / ``quantized`` their float32 / int8 values
    on the same input. A layer's relative error is the root-mean-square of ``q - r`` over the largest
    ``|r|`` (int8 rounding alone gives about 0.001; a ratio to the tensor's own norm would blow up for
    outputs near zero, such as a LayerNorm's mean). It includes what earlier layers lost, so the layers are
    ranked by how much the error grows there: its error minus the largest error of any earlier layer.
    """
    if not (len(names) == len(reference) == len(quantized)):
        raise ValueError(f"names, reference and quantized differ in length: {len(names)}, {len(reference)}, {len(quantized)}")
    grown, worst_before = [], 0.0
    for name, r, q in zip(names, reference, quantized):
        r64, q64 = np.asarray(r, np.float64), np.asarray(q, np.float64)
        if r64.shape != q64.shape:
            raise ValueError(f"layer {name!r}: float shape {r64.shape} vs quantized {q64.shape}")
        error = float(np.sqrt(np.mean((q64 - r64) ** 2)) / max(float(np.abs(r64).max(initial=0.0)), 1e-12))
        grown.append((error - worst_before, name, error))
        worst_before = max(worst_before, error)
    grown.sort(key=lambda item: -item[0])
    return [(name, error) for _, name, error in grown[:top]]


def onnx_layer_losses(
    float_path: str | os.PathLike, int8_path: str | os.PathLike, pixel_values: np.ndarray, top: int = 3
) -> list[tuple[str, float]]:
    """:func:`rank_layer_losses` of the convolution / matrix-product outputs of an int8 ONNX file against its
    float32 source, on one input: tensors of the same name in both files (the int8 file's is the
    dequantized value), in the float file's node order. ``[]`` when no name matches."""
    import onnx
    import onnxruntime as ort

    float_model = onnx.load(str(float_path))
    int8_model = onnx.load(str(int8_path))
    produced = {output for node in int8_model.graph.node for output in node.output}
    names = [node.output[0] for node in float_model.graph.node
             if node.op_type in _STATIC_OP_TYPES and node.output and node.output[0] in produced]
    if not names:
        return []
    values = []
    for model in (float_model, int8_model):
        existing = {output.name for output in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in existing)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        wanted = [output.name for output in session.get_outputs()]
        result = dict(zip(wanted, session.run(None, {session.get_inputs()[0].name: pixel_values})))
        values.append([result[name] for name in names])
    return rank_layer_losses(names, values[0], values[1], top=top)
