"""A Keras model from raw images to label maps: uint8 NHWC in, class ids at the input's size out.

``TFSegformerImageSegmenter`` wraps a :class:`~segformer.tf.TFSegformerForSemanticSegmentation` with the
processor's steps in the graph, so ``model.predict(uint8_batch)`` works, and the whole thing saves as one
``.keras`` file, exports as a SavedModel taking uint8 images of any size, and converts to TFLite (fixed size):

1. resize to the processor's ``size`` exactly as Pillow's bilinear resize of uint8 images does
   (integer arithmetic, see :mod:`segformer.common.images.pil_resize`): the same pixels as the processor;
2. rescale (``x * rescale_factor`` in float64, then float32) and normalize (``(x - mean) / std`` in float32),
   as the processor does (a 256-entry lookup per channel);
3. the segmentation model; logits upsampled bilinearly (``align_corners=False``) to the input's size;
4. argmax over classes: int32 ``(B, H, W)``.

No PyTorch twin: a PyTorch user gets the same in one call from :class:`segformer.Segmenter`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..common.images.pil_resize import PRECISION_BITS, bilinear_coefficients, height_first
from .layers import resize_bilinear

__all__ = ["TFSegformerImageSegmenter", "resize_uint8"]

_HALF = 1 << (PRECISION_BITS - 1)


def _coefficients(in_size: tf.Tensor, out_size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Graph twin of :func:`segformer.common.images.pil_resize.bilinear_coefficients` for a size known only at run
    time: the same float64 operations in the same order (the weight sum runs tap by tap, as Pillow's)."""
    scale = tf.cast(in_size, tf.float64) / float(out_size)
    filterscale = tf.maximum(scale, 1.0)
    support = 1.0 * filterscale
    taps = tf.cast(tf.math.ceil(support), tf.int32) * 2 + 1
    inverse = 1.0 / filterscale
    centers = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
    first = tf.maximum(tf.cast(centers - support + 0.5, tf.int32), 0)
    count = tf.minimum(tf.cast(centers + support + 0.5, tf.int32), in_size) - first
    tap = tf.range(taps)
    index = first[:, None] + tap[None, :]
    value = tf.abs(((tf.cast(index, tf.float64) - centers[:, None]) + 0.5) * inverse)
    weight = tf.where((tap[None, :] < count[:, None]) & (value < 1.0), 1.0 - value, tf.zeros_like(value))
    total = tf.foldl(lambda acc, column: acc + column, tf.transpose(weight), initializer=tf.zeros([out_size], tf.float64))
    safe_total = tf.where(total == 0.0, tf.ones_like(total), total)
    weight = tf.where(total[:, None] != 0.0, weight / safe_total[:, None], weight)
    fixed = tf.cast(tf.floor(0.5 + weight * float(1 << PRECISION_BITS)), tf.int32)
    return first, fixed


def _pass(images: tf.Tensor, axis: int, out_size: int) -> tf.Tensor:
    """One resize pass of int32 ``(B, H, W, C)`` images along ``axis`` (1: height, 2: width) -> int32 in [0, 255]."""
    static_in = images.shape[axis]
    if static_in is not None:
        if static_in == out_size:
            return images
        start_np, fixed_np = bilinear_coefficients(static_in, out_size)
        start, fixed = tf.constant(start_np), tf.constant(fixed_np)
        taps = fixed_np.shape[1]
        in_size = tf.constant(static_in, tf.int32)
    else:
        in_size = tf.shape(images)[axis]
        start, fixed = _coefficients(in_size, out_size)
        taps = None
    shape = [1, 1, 1, 1]
    shape[axis] = out_size
    out_shape = tf.tensor_scatter_nd_update(tf.shape(images), [[axis]], [out_size])
    total = tf.fill(out_shape, tf.constant(_HALF, tf.int32))

    def add_tap(tap: Any, total: tf.Tensor) -> tf.Tensor:
        index = tf.minimum(start + tap, in_size - 1)
        return total + tf.gather(images, index, axis=axis) * tf.reshape(fixed[:, tap], shape)

    if taps is not None:
        for tap in range(taps):
            total = add_tap(tap, total)
    else:
        _, total = tf.while_loop(
            lambda tap, _: tap < tf.shape(fixed)[1],
            lambda tap, acc: (tap + 1, add_tap(tap, acc)),
            (tf.constant(0), total),
        )
    return tf.clip_by_value(tf.bitwise.right_shift(total, PRECISION_BITS), 0, 255)


def resize_uint8(images: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Pillow's bilinear ``resize`` of uint8 ``(B, H, W, C)`` images to ``size = (height, width)``, bit-exact;
    returns uint8 ``(B, height, width, C)``. Works for sizes known at trace time and at run time."""
    height, width = int(size[0]), int(size[1])
    pixels = tf.cast(images, tf.int32)
    in_height, in_width = images.shape[1], images.shape[2]
    if in_height is not None and in_width is not None:
        if height_first((in_height, in_width), (height, width)):
            return tf.cast(_pass(_pass(pixels, 1, height), 2, width), tf.uint8)
        return tf.cast(_pass(_pass(pixels, 2, width), 1, height), tf.uint8)
    dynamic = tf.shape(images)
    shrink = dynamic[1] - height
    first_height = (shrink > 0) & (shrink > (dynamic[2] - width) * 2)
    return tf.cast(
        tf.cond(
            first_height,
            lambda: _pass(_pass(pixels, 1, height), 2, width),
            lambda: _pass(_pass(pixels, 2, width), 1, height),
        ),
        tf.uint8,
    )


@keras.saving.register_keras_serializable(package="segformer")
class TFSegformerImageSegmenter(keras.Model):
    """Raw uint8 images ``(B, H, W, 3)`` (any ``H, W``) -> int32 label maps ``(B, H, W)``.

    Args:
        model: a ``TFSegformerForSemanticSegmentation`` (either data format).
        image_size: ``(height, width)`` the images are resized to before the model (the processor's ``size``),
            or ``None`` to feed them at their own size.
        image_mean, image_std: per-channel normalization on the 0..1 scale (the processor's).
        rescale_factor: multiplies the 0..255 pixels (the processor's, ``1 / 255``).

    ``from_processor(model, processor)`` takes the last four from a :class:`~segformer.SegformerImageProcessor`.
    """

    def __init__(
        self,
        model: keras.Model,
        image_size: tuple[int, int] | None = (512, 512),
        image_mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        image_std: tuple[float, ...] = (0.229, 0.224, 0.225),
        rescale_factor: float = 1 / 255,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not hasattr(model, "decode_head") or not hasattr(model, "config"):
            raise TypeError(f"model must be a TFSegformerForSemanticSegmentation, got {type(model).__name__}")
        channels = int(model.config.num_channels)
        self.model = model
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.image_mean = tuple(float(v) for v in np.broadcast_to(np.asarray(image_mean, np.float64), (channels,)))
        self.image_std = tuple(float(v) for v in np.broadcast_to(np.asarray(image_std, np.float64), (channels,)))
        self.rescale_factor = float(rescale_factor)
        self.channels = channels

    @classmethod
    def from_processor(cls, model: keras.Model, processor: Any) -> "TFSegformerImageSegmenter":
        """Take resize / rescale / normalize settings from a ``SegformerImageProcessor``."""
        size = (processor.size["height"], processor.size["width"]) if processor.do_resize else None
        return cls(
            model,
            image_size=size,
            image_mean=processor.image_mean if processor.do_normalize else 0.0,
            image_std=processor.image_std if processor.do_normalize else 1.0,
            rescale_factor=processor.rescale_factor if processor.do_rescale else 1.0,
        )

    def build(self, input_shape: Any = None) -> None:
        if not self.model.built:
            self.model.build()
        self.built = True

    def _value_table(self) -> np.ndarray:
        """float32 ``(256 * C,)``: the processor's normalized value of pixel value ``v`` in channel ``c`` at
        ``v * C + c``: ``(float32(v * rescale_factor) - mean[c]) / std[c]``, rescaled in float64 and normalized
        in float32, the processor's arithmetic (a lookup keeps the graph free of float64 ops, for TFLite)."""
        values = np.arange(256, dtype=np.float64)[:, None]
        scaled = (values * self.rescale_factor).astype(np.float32)
        mean = np.asarray(self.image_mean, np.float32)
        std = np.asarray(self.image_std, np.float32)
        return np.ascontiguousarray(((scaled - mean) / std).astype(np.float32).reshape(-1))

    def pixel_values(self, images: tf.Tensor) -> tf.Tensor:
        """float32 normalized NHWC pixel values of uint8 ``(B, H, W, C)`` images, as the processor makes them."""
        if self.image_size is not None:
            images = resize_uint8(images, self.image_size)
        index = tf.cast(images, tf.int32) * self.channels + tf.range(self.channels, dtype=tf.int32)
        return tf.gather(tf.constant(self._value_table()), index)

    def call(self, images: Any) -> tf.Tensor:
        images = tf.convert_to_tensor(images)
        if images.dtype != tf.uint8:
            raise TypeError(f"images must be uint8 (B, H, W, {self.channels}) raw pixels, got dtype {images.dtype.name}")
        if images.shape.rank != 4 or (images.shape[-1] is not None and images.shape[-1] != self.channels):
            raise ValueError(f"images must have shape (B, H, W, {self.channels}), got {tuple(images.shape)}")
        pixels = self.pixel_values(images)
        if self.model.data_format == "channels_first":
            pixels = tf.transpose(pixels, (0, 3, 1, 2))
        logits = self.model(pixels, training=False, return_dict=True).logits
        if self.model.data_format == "channels_first":
            logits = tf.transpose(logits, (0, 2, 3, 1))
        size = tf.shape(images)[1:3]
        upsampled = resize_bilinear(logits, size)
        return tf.argmax(upsampled, axis=-1, output_type=tf.int32)

    def get_config(self) -> dict:
        return {
            "model": keras.saving.serialize_keras_object(self.model),
            "image_size": self.image_size,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "rescale_factor": self.rescale_factor,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict) -> "TFSegformerImageSegmenter":
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"))
        return cls(model, **config)

    def serving_function(self) -> tf.types.experimental.ConcreteFunction:
        """``images`` uint8 ``(batch, height, width, C)`` of any size -> ``{"labels": int32 (batch, height, width)}``."""
        spec = tf.TensorSpec((None, None, None, self.channels), tf.uint8, name="images")

        @tf.function(input_signature=[spec])
        def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"labels": self.call(images)}

        return serve.get_concrete_function()

    def export_saved_model(self, path: str) -> None:
        """A SavedModel for TF Serving: ``serving_default(images)`` takes uint8 images of any size (written
        atomically as one folder, :func:`segformer.common.base.atomic.atomic_folder`)."""
        from ..common.base.atomic import atomic_folder, os_errors_from

        self.build()
        with atomic_folder(path, what="SavedModel folder", discard=lambda name: True) as folder, \
                os_errors_from(path, tf.errors.OpError):
            tf.saved_model.save(self, str(folder), signatures={"serving_default": self.serving_function()})

    def export_tflite(self, path: str, image_size: tuple[int, int], batch: int = 1) -> None:
        """A TFLite model for uint8 images of one fixed ``image_size = (height, width)`` (written atomically)."""
        from ..common.base.atomic import atomic_write_bytes

        self.build()
        spec = tf.TensorSpec((batch, int(image_size[0]), int(image_size[1]), self.channels), tf.uint8, name="images")
        function = tf.function(lambda images: {"labels": self.call(images)}, input_signature=[spec])
        # no trackable object: with one, TFLite converts through a temporary SavedModel and reads Keras 3
        # variables back wrong; without, it freezes the captured variables
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        flatbuffer = converter.convert()
        atomic_write_bytes(path, flatbuffer)
