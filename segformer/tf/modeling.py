"""SegFormer models (Keras 3): the encoder alone, image classification, semantic segmentation.

Mirror of ``segformer/pt/modeling.py``: same ``call`` signatures, outputs and (canonical) weight names as
Hugging Face's TF classes; NCHW by default, NHWC with ``data_format="channels_last"``.
"""

from __future__ import annotations

import inspect
from typing import Any

import keras
import numpy as np
import optree
import tensorflow as tf

from ..common.model.config import SegformerConfig, as_config
from ..common.model.outputs import OUTPUT_CLASSES, BaseModelOutput, SegFormerImageClassifierOutput, SemanticSegmenterOutput
from ..common.model.pixel_values import check_pixel_shape, floating_point_message
from ..common.model.weights import TASK_CLASSES
from .decode_head import TFSegformerDecodeHead
from .encoder import TFSegformerEncoder
from .layers import inference_graph, normal_init
from .losses import classification_loss, classification_losses, semantic_segmentation_loss
from .pretrained import TFSegformerPreTrainedModel

__all__ = [
    "TFSegformerMainLayer",
    "TFSegformerModel",
    "TFSegformerForImageClassification",
    "TFSegformerForSemanticSegmentation",
    "check_pixel_values",
]

_SERIALIZABLE = keras.saving.register_keras_serializable(package="segformer")

# Keras' tree (optree, namespace "keras") walks into the output objects: a model called on keras.Input returns
# one of KerasTensors, from which keras.Model(inputs, outputs) builds a functional model.
for _output_class in OUTPUT_CLASSES:
    optree.register_pytree_node_class(_output_class, namespace="keras")


def _flag(value: bool | None, default: bool) -> bool:
    return default if value is None else bool(value)


def check_pixel_values(pixel_values: Any, config: SegformerConfig, data_format: str, check_finite: bool = False) -> tf.Tensor:
    """Validate model input and return it as a float tensor; raise TypeError / ValueError naming what was seen."""
    if isinstance(pixel_values, np.ndarray) or not tf.is_tensor(pixel_values):
        try:
            pixel_values = tf.convert_to_tensor(pixel_values)
        except (ValueError, TypeError):
            raise TypeError(f"pixel_values must be a tensor or array (B, C, H, W), got {type(pixel_values).__name__}") from None
    if pixel_values.shape.rank == 4 and not pixel_values.dtype.is_floating:
        raise TypeError(floating_point_message(pixel_values.dtype.name, "cast to float32"))
    check_pixel_shape(tuple(pixel_values.shape), config, data_format)
    if check_finite and tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(pixel_values))):
        raise ValueError("pixel_values contain NaN or Inf values")
    return pixel_values


@_SERIALIZABLE
class TFSegformerMainLayer(keras.layers.Layer):
    """The ``segformer`` level of Hugging Face's TF models: the encoder, on NHWC input."""

    def __init__(self, config: SegformerConfig | dict, **kwargs: Any) -> None:
        kwargs.setdefault("name", "segformer")
        super().__init__(**kwargs)
        config = as_config(config, type(self).__name__)
        self.config = config
        self.encoder = TFSegformerEncoder(config, name="encoder")

    def build(self, input_shape: Any = None) -> None:
        self.encoder.build()

    def call(self, pixel_values_nhwc, output_attentions=False, output_hidden_states=False, training=False):
        return self.encoder(
            pixel_values_nhwc, output_attentions=output_attentions, output_hidden_states=output_hidden_states, training=training
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "config": self.config.to_dict()}


class _TFSegformerBase(TFSegformerPreTrainedModel):
    """Shared input / output layout handling of the three models."""

    def _nhwc(self, pixel_values: Any) -> tf.Tensor:
        pixel_values = check_pixel_values(pixel_values, self.config, self.data_format, self.check_finite)
        compute = self.compute_dtype if self.compute_dtype in ("float16", "bfloat16", "float32") else "float32"
        pixel_values = tf.cast(pixel_values, compute)
        if self.data_format == "channels_first":
            return tf.transpose(pixel_values, (0, 2, 3, 1))
        return pixel_values

    def _out(self, maps: tf.Tensor) -> tf.Tensor:
        """NHWC map -> the model's data format (tokens (B, N, C) pass through)."""
        if self.data_format == "channels_first" and len(maps.shape) == 4:
            return tf.transpose(maps, (0, 3, 1, 2))
        return maps

    def _runs_as_graph(self, training: Any, labels: Any) -> bool:
        """Whether this call runs as a cached graph instead of op by op.

        Eager inference calls (``training`` false, no ``labels``, fast path on, ``run_eagerly`` off) from the
        second one on run the model's forward as a ``tf.function``. The first call stays eager, so one-off calls
        pay no tracing. ``model.run_eagerly = True`` or ``use_fast_path = False`` turn it off (debugging, the
        plain reference path). XLA only where the model's Keras ``jit_compile`` is true (see :meth:`_graph_call`).
        """
        if training or labels is not None or not tf.executing_eagerly() or self.run_eagerly or not self.use_fast_path:
            return False
        self._graphs.eager_calls += 1
        return self._graphs.eager_calls > 1

    def _graph_call(self, pixel_values: Any, output_attentions: bool, output_hidden_states: bool, return_dict: bool | None) -> Any:
        """Validate eagerly (clear errors), then run ``call`` as a cached ``tf.function`` (``reduce_retracing``:
        a second input size traces once more with free batch / height / width, then no more tracing).

        Its float32 LayerNorms run as fewer operators than Keras' own (:func:`~segformer.tf.layers.layer_norm`:
        b0 512x512 about 5 % faster; same numbers within float rounding).

        XLA for the whole graph (``jit_compile=True``) where the model's Keras ``jit_compile`` is true: set by
        the user (``model.jit_compile = True`` or ``model.compile(jit_compile=True)``), or Keras' ``"auto"``
        resolved to true (a machine with a GPU; Keras resolves it to false on CPU-only machines). XLA compiles
        once per input shape (b0 at 512x512: about 4.5 s on a 2-vCPU Xeon) and then runs faster at 2 threads
        (b0 512x512, medians: 82.4 against 99.5 ms for this plain graph) with more working memory (377 against
        134 MB); figures in ``benchmarks/README.md``. So it pays for many calls of one size, as the
        processor's fixed 512x512 gives."""
        pixel_values = check_pixel_values(pixel_values, self.config, self.data_format, self.check_finite)
        jit = getattr(self, "_jit_compile", None) is True  # the Keras attribute, read without resolving "auto"
        key = (output_attentions, output_hidden_states, self.compute_dtype, jit)
        function = self._graphs.functions.get(key)
        if function is None:

            def forward(pixels: tf.Tensor) -> Any:
                with inference_graph():
                    return self.call(pixels, output_attentions=output_attentions,
                                     output_hidden_states=output_hidden_states, return_dict=True, training=False)

            function = self._graphs.functions[key] = tf.function(forward, reduce_retracing=True, jit_compile=jit)
        output = function(pixel_values)  # the output object comes back through tf.nest
        return output if _flag(return_dict, self.config.return_dict) else output.to_tuple()

    _needs_all_hidden_states = False  # the decode head reads every stage

    def _forward(self, pixel_values, labels, output_attentions, output_hidden_states, return_dict, training) -> Any:
        """What every ``call`` does: unpack Keras' input dict, resolve the flags from the config, run the whole
        call as a cached graph where :meth:`_runs_as_graph` says so, else the encoder then the task's
        :meth:`_head`; the output object (or tuple) holds the head's fields, then hidden states and attentions."""
        pixel_values, labels, packed = self._unpack(pixel_values, labels)
        output_attentions = _flag(packed.get("output_attentions", output_attentions), self.config.output_attentions)
        output_hidden_states = _flag(packed.get("output_hidden_states", output_hidden_states), self.config.output_hidden_states)
        return_dict = packed.get("return_dict", return_dict)
        if self._runs_as_graph(training, labels):
            return self._graph_call(pixel_values, output_attentions, output_hidden_states, return_dict)
        last, hidden, attentions = self.segformer(
            self._nhwc(pixel_values),
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states or self._needs_all_hidden_states,
            training=training,
        )
        fields = self._head(last, hidden, labels, training)
        fields["hidden_states"] = tuple(self._out(h) for h in hidden) if output_hidden_states else None
        fields["attentions"] = attentions
        if not _flag(return_dict, self.config.return_dict):
            return tuple(v for v in fields.values() if v is not None)
        return self._output_class(**fields)

    def _head(self, last: tf.Tensor, hidden: tuple | None, labels: Any, training: Any) -> dict[str, Any]:
        """The task's outputs before ``hidden_states`` / ``attentions``, by output field name."""
        raise NotImplementedError

    def _unpack(self, pixel_values: Any, labels: Any) -> tuple[Any, Any, dict[str, Any]]:
        """transformers' TF input forms: the first argument may pack the inputs, by name in a dict (Keras' fit /
        predict feed the whole input dict: ``model({"pixel_values": x, "labels": y})``) or in ``call``'s parameter
        order in a tuple / list whose first item is a 4-D batch (``model((x,))``, ``model([x, y])``). Returns
        ``(pixel_values, labels, other packed keywords)``; an unknown name is a ``ValueError`` listing the allowed."""
        names = [n for n in inspect.signature(self.call).parameters if n != "training"]
        if isinstance(pixel_values, (tuple, list)) and pixel_values and len(getattr(pixel_values[0], "shape", ())) == 4:
            if len(pixel_values) > len(names):
                raise ValueError(f"{type(self).__name__} takes at most {len(names)} packed inputs {names}, got {len(pixel_values)}")
            pixel_values = dict(zip(names, pixel_values))
        if not isinstance(pixel_values, dict):
            return pixel_values, labels, {}
        unknown = sorted(set(pixel_values) - set(names))
        if unknown or "pixel_values" not in pixel_values:
            raise ValueError(f"{type(self).__name__}: the input dict needs 'pixel_values' and may hold {names[1:]}; got keys "
                             f"{sorted(pixel_values)}")
        packed = dict(pixel_values)
        return packed.pop("pixel_values"), packed.pop("labels", labels), packed


@_SERIALIZABLE
class TFSegformerModel(_TFSegformerBase):
    """Twin of ``SegformerModel``: the bare encoder -> ``BaseModelOutput`` (last_hidden_state NCHW by default)."""

    _task = "base"
    _hf_name = TASK_CLASSES["base"].tf_model_name
    _output_class = BaseModelOutput

    def __init__(self, config: SegformerConfig | dict, data_format: str = "channels_first", **kwargs: Any) -> None:
        super().__init__(config, data_format=data_format, **kwargs)
        self.segformer = TFSegformerMainLayer(self.config, name="segformer")

    def _build_layers(self) -> None:
        self.segformer.build()

    def call(self, pixel_values, output_attentions=None, output_hidden_states=None, return_dict=None, training=False):
        return self._forward(pixel_values, None, output_attentions, output_hidden_states, return_dict, training)

    def _head(self, last, hidden, labels, training):
        return {"last_hidden_state": self._out(last)}


@_SERIALIZABLE
class TFSegformerForImageClassification(_TFSegformerBase):
    """Twin of ``SegformerForImageClassification``: mean of the last stage's tokens -> Dense ``classifier``."""

    _task = "image_classification"
    _hf_name = TASK_CLASSES["image_classification"].tf_model_name
    _output_class = SegFormerImageClassifierOutput

    def __init__(self, config: SegformerConfig | dict, data_format: str = "channels_first", **kwargs: Any) -> None:
        super().__init__(config, data_format=data_format, **kwargs)
        self.segformer = TFSegformerMainLayer(self.config, name="segformer")
        self.classifier = keras.layers.Dense(
            self.config.num_labels, name="classifier", kernel_initializer=normal_init(self.config.initializer_range), dtype="float32"
        )

    def _build_layers(self) -> None:
        self.segformer.build()
        self.classifier.build((None, self.config.hidden_sizes[-1]))

    def _fit_loss(self, logits: tf.Tensor, labels: Any, sample_weight: Any) -> tf.Tensor:
        return classification_loss(logits, labels, self.config, sample_weight)

    def call(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None, return_dict=None, training=False):
        return self._forward(pixel_values, labels, output_attentions, output_hidden_states, return_dict, training)

    def _head(self, last, hidden, labels, training):
        tokens = tf.reshape(last, (tf.shape(last)[0], -1, self.config.hidden_sizes[-1]))
        logits = self.classifier(tf.reduce_mean(tf.cast(tokens, tf.float32), axis=1))
        loss = classification_losses(logits, labels, self.config)[0] if labels is not None else None  # (B,) as HF's TF
        return {"loss": loss, "logits": logits}


@_SERIALIZABLE
class TFSegformerForSemanticSegmentation(_TFSegformerBase):
    """Twin of ``SegformerForSemanticSegmentation``: logits (B, num_labels, H/4, W/4) NCHW by default (NHWC
    with ``data_format="channels_last"``), float32 even under mixed precision; labels (B, H', W') any size."""

    _task = "semantic_segmentation"
    _hf_name = TASK_CLASSES["semantic_segmentation"].tf_model_name
    _output_class = SemanticSegmenterOutput
    _needs_all_hidden_states = True

    def __init__(self, config: SegformerConfig | dict, data_format: str = "channels_first", **kwargs: Any) -> None:
        super().__init__(config, data_format=data_format, **kwargs)
        self.segformer = TFSegformerMainLayer(self.config, name="segformer")
        self.decode_head = TFSegformerDecodeHead(self.config, name="decode_head")

    def _build_layers(self) -> None:
        self.segformer.build()
        self.decode_head.build()

    def _fit_loss(self, logits: tf.Tensor, labels: Any, sample_weight: Any) -> tf.Tensor:
        logits_nhwc = tf.transpose(logits, (0, 2, 3, 1)) if self.data_format == "channels_first" else logits
        return semantic_segmentation_loss(logits_nhwc, tf.convert_to_tensor(labels), self.config, sample_weight)

    def call(self, pixel_values, labels=None, output_attentions=None, output_hidden_states=None, return_dict=None, training=False):
        return self._forward(pixel_values, labels, output_attentions, output_hidden_states, return_dict, training)

    def _head(self, last, hidden, labels, training):
        logits_nhwc = self.decode_head(hidden, training=training)
        loss = None
        if labels is not None:  # shape (1,), as transformers' TF model returns it
            loss = tf.reshape(semantic_segmentation_loss(logits_nhwc, tf.convert_to_tensor(labels), self.config), (1,))
        return {"loss": loss, "logits": self._out(logits_nhwc)}
