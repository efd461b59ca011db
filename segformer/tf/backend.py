"""The Keras / TensorFlow adapter of :class:`segformer.Segmenter`, ``segformer predict`` / ``eval`` and the
export checks: numpy in, numpy out.

TF twin of ``segformer/pt/backend.py`` (same names, same signatures): loading a checkpoint with its report,
the logits of a batch, one image's streaming pass (:func:`segformer.tf.inference.predict_streaming`),
per-image labels for ``evaluate``, the device, and the thread policy of parallel pipelines. Pixel values
and logits are channels-first numpy whatever the model's ``data_format``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import tensorflow as tf

from ..common.model.outputs import logits_of

__all__ = ["FRAMEWORK", "Backend", "available_devices", "check_device", "logits_of", "load_pretrained"]

FRAMEWORK = "tf"


def load_pretrained(source: str) -> tuple[Any, Any]:
    """``(model, report)``: ``TFSegformerForSemanticSegmentation.from_pretrained(source)`` and its
    :class:`~segformer.common.checkpoints.matching.LoadReport`."""
    from .modeling import TFSegformerForSemanticSegmentation

    return TFSegformerForSemanticSegmentation.from_pretrained(source, output_loading_info=True)


def available_devices() -> list[str]:
    """The device names TensorFlow sees on this machine (``"/device:CPU:0"``, ``"/device:GPU:0"``, ...)."""
    return [device.name for device in tf.config.list_logical_devices()]


def check_device(device: Any) -> Any:
    """``device`` (``None`` or a TensorFlow device string: ``"/GPU:0"``, ``"cpu"``, ...) if TensorFlow sees such a
    device here; otherwise one ``ValueError`` listing :func:`available_devices` (twin of the PyTorch adapter's)."""
    from ..common.inference.rules import device_error

    if device is None:
        return None
    if not isinstance(device, str):
        raise device_error(device, "TensorFlow", available_devices(), "a device is a string such as '/GPU:0'")
    try:
        spec = tf.DeviceSpec.from_string(device)
    except (ValueError, TypeError):
        raise device_error(device, "TensorFlow", available_devices(), "not a TensorFlow device string") from None
    for logical in tf.config.list_logical_devices():
        have = tf.DeviceSpec.from_string(logical.name)
        if spec.device_type is None or (spec.device_type.upper() == have.device_type.upper()
                                        and spec.device_index in (None, have.device_index)):
            return device
    raise device_error(device, "TensorFlow", available_devices())


def _device_scope(device: Any) -> Any:
    return tf.device(device) if device is not None else contextlib.nullcontext()


class Backend:
    """A Keras model (called with ``training=False``, under ``tf.device(device)`` when one is given) behind
    numpy calls (twin of :class:`segformer.pt.backend.Backend`). Keras has no model-wide mode: every call passes
    ``training=False``, so dropout is off whatever the caller does; :meth:`eval_mode` has nothing to switch."""

    framework = FRAMEWORK
    serialized = True  # model calls one at a time (TensorFlow's own thread pool runs each)

    def __init__(self, model: Any, device: Any = None) -> None:
        import keras

        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
        self.model = model
        self.device = check_device(device)

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[None]:
        """Nothing to switch: every model call passes ``training=False``."""
        yield

    @staticmethod
    def default_workers(device: Any = None) -> int:
        """Parallel pipelines by default: 2 (the model in TensorFlow's thread pool, decoding and upsampling
        of the other image beside it)."""
        return 2

    @contextlib.contextmanager
    def split_threads(self, workers: int) -> Iterator[None]:
        """Nothing to split: TensorFlow's thread pool is shared by the (serialized) model calls."""
        yield

    @property
    def _channels_last(self) -> bool:
        return getattr(self.model, "data_format", "channels_first") == "channels_last"

    def logits(self, pixel_values: np.ndarray, full_resolution: bool = False) -> np.ndarray:
        """float32 ``(B, K, h, w)`` model-resolution logits of float32 ``(B, C, H, W)`` pixel values (with
        ``full_resolution``: upsampled bilinearly, half-pixel centres, to ``(H, W)``)."""
        from .inference import upsample_logits

        pixel_values = np.asarray(pixel_values, dtype=np.float32)
        inputs = pixel_values.transpose(0, 2, 3, 1) if self._channels_last else pixel_values
        with _device_scope(self.device):
            logits = tf.cast(logits_of(self.model(inputs, training=False)), tf.float32)
            if self._channels_last:
                logits = tf.transpose(logits, (0, 3, 1, 2))
            if full_resolution:
                logits = upsample_logits(logits, pixel_values.shape[2:])
            return np.asarray(logits)

    def stream(self, pixel_values: np.ndarray, **kwargs: Any) -> Any:
        """:func:`segformer.tf.inference.predict_streaming` of one image ``(1, C, H, W)`` (same keywords):
        a :class:`~segformer.common.inference.streaming.StreamResult` of numpy arrays."""
        from .inference import predict_streaming

        pixel_values = np.asarray(pixel_values, dtype=np.float32)
        if self._channels_last:
            pixel_values = pixel_values.transpose(0, 2, 3, 1)
            kwargs["data_format"] = "channels_last"
        with _device_scope(self.device):
            return predict_streaming(self.model, pixel_values, **kwargs)

    def labels(self, pixel_values: Any, size: tuple[int, int], **kwargs: Any) -> tf.Tensor:
        """int64 ``(B, H, W)`` labels at ``size`` (:func:`segformer.tf.inference.predict_labels`, keywords as
        ``predict_logits``), as the trainers' ``evaluate`` takes them."""
        from .inference import predict_labels

        if self._channels_last:
            pixel_values = tf.transpose(pixel_values, (0, 2, 3, 1))
            kwargs["data_format"] = "channels_last"
        with _device_scope(self.device):
            return predict_labels(self.model, pixel_values, output_size=size, **kwargs)
