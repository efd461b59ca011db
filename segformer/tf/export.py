"""Export a Keras / TensorFlow SegFormer: SavedModel (dynamic batch / height / width), TFLite (fixed
size; float32, float16 weights, or full-integer int8 calibrated on the user's images), and a
``mixed_float16`` run. TF twin of ``segformer/pt/export.py`` and ``segformer/pt/quantize.py``.

Every export is written atomically: a SavedModel folder goes through
:func:`segformer.common.base.atomic.atomic_folder` (built as a temporary sibling, swapped in with one rename),
a ``.tflite`` file through :func:`segformer.common.base.atomic.atomic_write_bytes`.

The exported function is the eval-mode model (``training=False``) returning logits only:
``(B, num_labels, ceil(H/4), ceil(W/4))`` for ``channels_first`` input ``(B, C, H, W)`` (the models'
default), ``(B, h, w, K)`` for ``channels_last`` (``(B, H, W, C)``); with ``full_resolution=True`` the
logits are upsampled to the input size inside the graph (half-pixel bilinear, no antialias).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from ..common.base.atomic import atomic_folder, atomic_write_bytes, check_overwrite, os_errors_from
from ..common.base.deps import native_noise_silenced
from ..common.inference.rules import as_size_pair
from ..common.model.outputs import logits_of
from .layers import resize_bilinear

__all__ = [
    "serving_module",
    "export_saved_model",
    "load_saved_model",
    "export_tflite",
    "run_tflite",
    "TFLiteRunner",
    "tflite_layer_losses",
    "mixed_float16_logits",
    "TFLITE_FORMATS",
    "TFLITE_QUANTIZATIONS",
]

_DATA_FORMATS = ("channels_first", "channels_last")
TFLITE_QUANTIZATIONS = (None, "float16", "int8", "int8-full")
# the `segformer export --format` name of each kind (the benchmark rows use the same names, "tflite-fp32" for "tflite")
TFLITE_FORMATS = {"tflite": None, "tflite-fp16": "float16", "tflite-int8": "int8", "tflite-int8-full": "int8-full"}
# int8: the op types that stay int8 (convolutions and matrix products); every other op type computes in float
_TFLITE_INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")


def _data_format(model: Any, data_format: str | None) -> str:
    if data_format is None:
        data_format = getattr(model, "data_format", None) or "channels_first"
    if data_format not in _DATA_FORMATS:
        raise ValueError(f"data_format must be one of {list(_DATA_FORMATS)}, got {data_format!r}")
    return data_format


def _spec(model: Any, data_format: str, batch: int | None, size: tuple[int | None, int | None]) -> tf.TensorSpec:
    channels = int(getattr(getattr(model, "config", None), "num_channels", 3))
    height, width = size
    shape = [batch, channels, height, width] if data_format == "channels_first" else [batch, height, width, channels]
    return tf.TensorSpec(shape, tf.float32, name="pixel_values")


class _Serving(tf.Module):
    """``serve(pixel_values)`` -> ``{"logits": ...}``, the model's eval-mode logits."""

    def __init__(self, model: Any, data_format: str, full_resolution: bool) -> None:
        super().__init__(name="segformer_serving")
        self.model = model
        self.data_format = data_format
        self.full_resolution = bool(full_resolution)

    def logits(self, pixel_values: tf.Tensor) -> tf.Tensor:
        logits = tf.cast(logits_of(self.model(pixel_values, training=False)), tf.float32)
        if self.full_resolution:
            if self.data_format == "channels_first":
                size = tf.shape(pixel_values)[2:4]
                last = resize_bilinear(tf.transpose(logits, (0, 2, 3, 1)), size)
                logits = tf.transpose(last, (0, 3, 1, 2))
            else:
                logits = resize_bilinear(logits, tf.shape(pixel_values)[1:3])
        return logits


def serving_module(
    model: Any,
    input_size: int | Sequence[int] | None = None,
    batch: int | None = None,
    data_format: str | None = None,
    full_resolution: bool = False,
) -> tuple[tf.Module, Callable]:
    """A ``tf.Module`` holding ``model`` and its ``tf.function`` ``serve`` with a fixed input signature.

    ``input_size=None`` and ``batch=None`` leave height / width / batch dynamic. Returns
    ``(module, serve)`` where ``serve(pixel_values)`` returns ``{"logits": float32 tensor}``.
    """
    data_format = _data_format(model, data_format)
    size = (None, None) if input_size is None else as_size_pair("input_size", input_size)
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise ValueError(f"batch must be None (dynamic) or a positive int, got {batch!r}")
    module = _Serving(model, data_format, full_resolution)
    spec = _spec(model, data_format, batch, size)

    @tf.function(input_signature=[spec])
    def serve(pixel_values: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"logits": module.logits(pixel_values)}

    module.serve = serve
    return module, serve


def export_saved_model(
    model: Any,
    path: str | os.PathLike,
    input_size: int | Sequence[int] | None = None,
    data_format: str | None = None,
    full_resolution: bool = False,
    overwrite: bool = True,
) -> Path:
    """Write a TensorFlow SavedModel folder with signature ``serving_default``: ``pixel_values`` ->
    ``{"logits": ...}``; batch, height and width dynamic unless ``input_size`` fixes the latter two.

    Written with ``keras.export.ExportArchive`` (which tracks every Keras 3 variable of the model). Load it
    with :func:`load_saved_model` or ``tf.saved_model.load(path).signatures["serving_default"]``.
    """
    import keras

    path = Path(path)
    check_overwrite(path, overwrite, what="SavedModel folder")
    data_format = _data_format(model, data_format)
    size = (None, None) if input_size is None else as_size_pair("input_size", input_size)
    module = _Serving(model, data_format, full_resolution)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=lambda pixel_values: {"logits": module.logits(pixel_values)},
        input_signature=[_spec(model, data_format, None, size)],
    )
    # the whole folder is the export's: nothing of an old one is carried over
    with atomic_folder(path, what="SavedModel folder", discard=lambda name: True) as folder, \
            os_errors_from(path, tf.errors.OpError):  # a full disk: one OSError, not TensorFlow's OutOfRangeError
        archive.write_out(str(folder), verbose=False)
    return path


def load_saved_model(path: str | os.PathLike) -> Callable[[Any], tf.Tensor]:
    """Load a folder written by :func:`export_saved_model`; returns ``f(pixel_values) -> logits`` (a tensor)."""
    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]

    def run(pixel_values: Any) -> tf.Tensor:
        return signature(pixel_values=tf.convert_to_tensor(pixel_values, dtype=tf.float32))["logits"]

    run.loaded = loaded  # keep the trackable (and its variables) alive with the function
    return run


def export_tflite(
    model: Any,
    path: str | os.PathLike,
    input_size: int | Sequence[int] = (512, 512),
    batch: int = 1,
    data_format: str | None = None,
    full_resolution: bool = False,
    overwrite: bool = True,
    quantization: str | None = None,
    representative_data: Sequence[np.ndarray] | None = None,
) -> Path:
    """Write a TFLite flatbuffer for a **fixed** input ``(batch, C, *input_size)`` (or channels-last).

    TFLite needs static shapes for this graph (the per-stage sizes are computed from the input size), so
    export one file per input size you serve; run it with :func:`run_tflite`.

    Args:
        quantization: ``None`` (float32), ``"float16"`` (float16 weights, half the size; the interpreter
            computes in float32 on CPU), ``"int8"``: int8 convolutions and matrix products (per-channel int8
            weights, activation ranges calibrated on ``representative_data``) except the first convolution,
            which reads the pixels; LayerNorm, GELU, softmax, adds and resizes in float, float32 input and
            output; or ``"int8-full"``: full-integer (every op int8, int8 input and output with the scale /
            zero point stored in the file; :func:`run_tflite` converts), for integer-only accelerators.
            On a trained b0 at 512x512 the worst held-out image agreed with float32 on 99.16 % of pixels
            as ``"int8"`` and 95.77 % as ``"int8-full"`` (``benchmarks/README.md``).
        representative_data: for the int8 kinds: pixel values ``(batch, C, H, W)`` at ``input_size``, e.g.
            :func:`segformer.common.inference.quantization.calibration_pixel_values` of the user's images (transposed
            here for a channels-last model).
    """
    from ..common.inference.quantization import representative_batches

    if quantization not in TFLITE_QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {list(TFLITE_QUANTIZATIONS)}, got {quantization!r}")
    if quantization in ("int8", "int8-full") and not representative_data:
        raise ValueError(f"quantization={quantization!r} needs representative_data: pixel values of a few of "
                         "your images (segformer.common.inference.quantization.calibration_pixel_values)")
    check_overwrite(path, overwrite)
    data_format = _data_format(model, data_format)
    module, serve = serving_module(model, input_size=input_size, batch=batch, data_format=data_format,
                                   full_resolution=full_resolution)
    concrete = serve.get_concrete_function()
    if quantization in ("int8", "int8-full"):
        channels = int(getattr(getattr(model, "config", None), "num_channels", 3))
        expected = (batch, channels, *as_size_pair("input_size", input_size))
        for array in representative_data or []:
            if tuple(np.shape(array)) != expected:
                raise ValueError(f"representative_data: pixel values of shape {tuple(np.shape(array))} do not fit the "
                                 f"export's input (batch, C, H, W) = {expected}; resize the calibration images to input_size")
    # no trackable object: with one, TFLite 2.21 converts through a temporary SavedModel and reads Keras 3
    # variables back as garbage (reproduced with a plain 3-Dense keras.Model); without, it freezes the captures
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    if quantization is None:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    elif quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    else:
        data = list(representative_data or [])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: representative_batches(data, data_format)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        converter._experimental_calibrate_only = quantization == "int8"  # ranges only; quantized below
    with warnings.catch_warnings():
        # int8 interface: the converter asks for input statistics, which the representative dataset supplies
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        flatbuffer = converter.convert()
        if quantization == "int8":
            flatbuffer = _int8_gemms(flatbuffer)
    path = Path(path)
    atomic_write_bytes(path, flatbuffer, overwrite=overwrite)
    return path


def _int8_gemms(calibrated: bytes) -> bytes:
    """Quantize a calibrated TFLite model (the converter's ``_experimental_calibrate_only`` output): int8 for
    the :data:`_TFLITE_INT8_OPS` except the first convolution, float32 for every other op and for the input
    and output. Uses TensorFlow's own selective quantizer (``mlir_quantize`` with deny lists, as
    ``tf.lite.experimental.QuantizationDebugger`` does)."""
    from tensorflow.lite.python import convert

    with warnings.catch_warnings(), native_noise_silenced():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        interpreter = tf.lite.Interpreter(model_content=calibrated)
    ops = interpreter._get_ops_details()
    names = {tensor["index"]: tensor["name"] for tensor in interpreter.get_tensor_details()}
    float_ops = sorted({op["op_name"] for op in ops} - set(_TFLITE_INT8_OPS))
    stem = [names[op["outputs"][0]] for op in ops if op["op_name"] == "CONV_2D"][:1]
    return convert.mlir_quantize(calibrated, input_data_type=tf.float32, output_data_type=tf.float32,
                                 denylisted_ops=float_ops, denylisted_nodes=stem)


class TFLiteRunner:
    """A loaded TFLite file: ``runner(pixel_values) -> numpy`` first output (float32 logits, or the int32
    labels of a ``TFSegformerImageSegmenter`` file).

    Float inputs are cast to the file's input dtype; for a quantized input (int8 with a scale, as
    :func:`export_tflite` ``quantization="int8"`` writes) they are quantized with the file's scale / zero
    point and the output is dequantized. A raw uint8 input (``TFSegformerImageSegmenter.export_tflite``, no
    scale) is only cast.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None) -> None:
        with warnings.catch_warnings(), native_noise_silenced():  # the XNNPACK "INFO: Created ..." line
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")  # LiteRT notice
            self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        (self.input,) = self.interpreter.get_input_details()
        (self.output,) = self.interpreter.get_output_details()

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        inp, out = self.input, self.output
        pixel_values = np.asarray(pixel_values)
        if tuple(pixel_values.shape) != tuple(inp["shape"]):
            raise ValueError(
                f"pixel_values of shape {pixel_values.shape} does not fit the TFLite file's fixed input {tuple(inp['shape'])}; "
                "export one file per input size"
            )
        scale, zero = inp["quantization"]
        if scale and np.issubdtype(inp["dtype"], np.integer):
            info = np.iinfo(inp["dtype"])
            pixel_values = np.clip(np.round(pixel_values / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(inp["index"], pixel_values.astype(inp["dtype"]))
        self.interpreter.invoke()
        result = np.array(self.interpreter.get_tensor(out["index"]))
        scale, zero = out["quantization"]
        if scale and np.issubdtype(out["dtype"], np.integer):
            result = (result.astype(np.float32) - zero) * np.float32(scale)
        return result


# the layers compared by tflite_layer_losses: matrix products and convolutions (as onnx_layer_losses); the
# inner tensors of a LayerNorm (its mean, near zero) would rank high on rounding that does not matter after it
_TFLITE_LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV")


def _tflite_tensors(path: str | os.PathLike, pixel_values: np.ndarray) -> tuple[list[str], dict[str, np.ndarray]]:
    """Run a TFLite file keeping every intermediate tensor: (the output names of its matrix products and
    convolutions in execution order, {name: float value}), quantized tensors dequantized with their scale /
    zero point."""
    with warnings.catch_warnings(), native_noise_silenced():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")  # wanted here
        interpreter = tf.lite.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
    runner = TFLiteRunner.__new__(TFLiteRunner)  # its input / output conversion on this interpreter
    runner.interpreter = interpreter
    (runner.input,) = interpreter.get_input_details()
    (runner.output,) = interpreter.get_output_details()
    runner(pixel_values)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    order = [index for op in interpreter._get_ops_details() if op["op_name"] in _TFLITE_LAYER_OPS
             for index in op["outputs"] if index in details]
    values: dict[str, np.ndarray] = {}
    for index in order:
        detail = details[index]
        try:
            value = np.array(interpreter.get_tensor(index))
        except ValueError:  # a tensor without data
            continue
        scale, zero = detail["quantization"]
        if np.issubdtype(value.dtype, np.integer):
            if not scale:
                continue
            value = (value.astype(np.float32) - zero) * np.float32(scale)
        values[detail["name"]] = value
    return [details[index]["name"] for index in order if details[index]["name"] in values], values


def tflite_layer_losses(
    model: Any,
    int8_path: str | os.PathLike,
    pixel_values: np.ndarray,
    input_size: int | Sequence[int] = (512, 512),
    full_resolution: bool = False,
    top: int = 3,
) -> list[tuple[str, float]]:
    """The layers of a full-integer TFLite file (:func:`export_tflite` ``quantization="int8"``) that lose
    most against a float32 TFLite export of ``model`` on one input: tensors of the same name and shape in
    both files (matrix products and convolutions; a fused op is named by its first op), ranked by
    :func:`segformer.common.inference.quantization.rank_layer_losses`. Twin of
    :func:`segformer.common.inference.quantization.onnx_layer_losses`."""
    from ..common.inference.quantization import rank_layer_losses

    with tempfile.TemporaryDirectory(prefix="segformer-tflite-") as scratch:
        float_path = export_tflite(model, Path(scratch) / "float32.tflite", input_size=input_size,
                                   full_resolution=full_resolution)
        names, reference = _tflite_tensors(float_path, pixel_values)
    _, quantized = _tflite_tensors(int8_path, pixel_values)
    names = [name for name in names if name in quantized and quantized[name].shape == reference[name].shape]
    ranked = rank_layer_losses(names, [reference[n] for n in names], [quantized[n] for n in names], top=top)
    return [(name.split(";")[0], error) for name, error in ranked]  # a fused op's name lists each op it holds


def run_tflite(path: str | os.PathLike, pixel_values: np.ndarray) -> np.ndarray:
    """Run a TFLite file on one input of its fixed shape (see :class:`TFLiteRunner`: cast to the file's input
    dtype, quantized / dequantized for a full-integer file); returns its first output."""
    return TFLiteRunner(path)(pixel_values)


def mixed_float16_logits(model: Any, pixel_values: Any) -> np.ndarray:
    """Logits of a copy of ``model`` built under the Keras ``mixed_float16`` policy (float16 compute,
    float32 variables), returned as float32 numpy. The global dtype policy is restored afterwards."""
    import keras

    pixel_values = tf.convert_to_tensor(pixel_values, dtype=tf.float32)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        clone = type(model)(model.config, data_format=getattr(model, "data_format", "channels_first"))
        if hasattr(model, "use_fast_path"):
            clone.use_fast_path = model.use_fast_path
        clone(pixel_values[:1], training=False)  # build the variables
    finally:
        keras.config.set_dtype_policy(previous)
    if hasattr(model, "state_dict_numpy") and hasattr(clone, "load_state_dict_numpy"):
        clone.load_state_dict_numpy(model.state_dict_numpy())
    else:
        clone.set_weights(model.get_weights())

    return np.asarray(tf.cast(logits_of(clone(pixel_values, training=False)), tf.float32))
