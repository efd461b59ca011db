"""Building blocks of the Mix Transformer encoder (Keras 3). Mirror of ``segformer/pt/layers.py``.

Everything runs in NHWC; tokens are ``(B, N, C)`` with ``N = height * width`` row-major, so a token
tensor and an NHWC map are the same memory (``tf.reshape``, no transpose). Heights and widths are passed
explicitly as (possibly dynamic) scalars. Sublayers are named by their canonical segment.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any, Callable, Iterator

import keras
import tensorflow as tf

__all__ = [
    "ACT2FN",
    "in_xla_context",
    "inference_graph",
    "layer_norm",
    "resize_bilinear",
    "depthwise_conv3x3_shifted",
    "normal_init",
    "TFSegformerDropPath",
    "TFSegformerOverlapPatchEmbeddings",
    "TFSegformerEfficientSelfAttention",
    "TFSegformerSelfOutput",
    "TFSegformerAttention",
    "TFSegformerDepthwiseConv",
    "TFSegformerDWConv",
    "TFSegformerMixFFN",
    "TFSegformerLayer",
]

ACT2FN: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "gelu": lambda x: keras.activations.gelu(x, approximate=False),  # exact (erf), like torch
    "gelu_new": lambda x: keras.activations.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: keras.activations.gelu(x, approximate=True),
    "relu": keras.activations.relu,
    "selu": keras.activations.selu,
    "silu": keras.activations.silu,
    "swish": keras.activations.silu,
    "tanh": keras.activations.tanh,
}

_SERIALIZABLE = keras.saving.register_keras_serializable(package="segformer")

try:  # private TensorFlow modules behind in_xla_context (if they move, the default formulations are used)
    from tensorflow.python.framework import ops as _tf_ops
    from tensorflow.python.ops import control_flow_util as _control_flow_util
except ImportError:  # pragma: no cover
    _tf_ops = _control_flow_util = None


def in_xla_context() -> bool:
    """True while tracing for XLA (``tf.function(jit_compile=True)``, also nested): the check TensorFlow's own
    ``tf.function`` uses. Ops whose XLA CPU kernels are slow pick an XLA-friendly formulation there."""
    if _control_flow_util is None or tf.executing_eagerly():
        return False
    return bool(_control_flow_util.GraphOrParentsInXlaContext(_tf_ops.get_default_graph()))


# The cached inference graph (see _graph_call in segformer/tf/modeling.py) is traced inside inference_graph();
# its float32 LayerNorms are then _normalize's operators instead of Keras' own.
_INFERENCE_GRAPH = threading.local()


@contextlib.contextmanager
def inference_graph() -> Iterator[None]:
    """While tracing the cached inference graph: :func:`layer_norm` runs :func:`_normalize`."""
    previous = getattr(_INFERENCE_GRAPH, "active", False)
    _INFERENCE_GRAPH.active = True
    try:
        yield
    finally:
        _INFERENCE_GRAPH.active = previous


def _normalize(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float) -> tf.Tensor:
    """LayerNorm over the last axis, the variance from the centered values. As graph operators this is 7 passes
    over the activations against the 8 of Keras' formulation (which broadcasts ``rsqrt(variance) * gamma`` to
    the full size and subtracts ``mean * that``), and a one-LayerNorm ``tf.function`` runs about 20 % faster
    (b0 stage 1, 16384 x 32 tokens: 1.37 against 1.73 ms per call at 2 threads, 2-vCPU Xeon)."""
    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    centered = x - mean
    variance = tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True)
    return centered * tf.math.rsqrt(variance + epsilon) * gamma + beta


def layer_norm(layer: keras.layers.LayerNormalization, x: tf.Tensor) -> tf.Tensor:
    """``layer(x)``; while the cached inference graph is traced (:func:`inference_graph`), a float32 LayerNorm
    runs as :func:`_normalize`'s operators (same numbers within float rounding, fewer passes). Op-by-op calls,
    training, other graphs and other dtypes run Keras' own layer."""
    if (not getattr(_INFERENCE_GRAPH, "active", False) or tf.executing_eagerly() or x.dtype != tf.float32
            or layer.compute_dtype != "float32" or layer.gamma is None or layer.beta is None or layer.rms_scaling):
        return layer(x)  # (the model's LayerNorms all normalize the last axis, with scale and offset)
    return _normalize(x, tf.convert_to_tensor(layer.gamma.value), tf.convert_to_tensor(layer.beta.value), float(layer.epsilon))


def _source_indices(out_size: Any, in_size: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Half-pixel bilinear source rows for one axis: lower / upper index and the weight of the upper one."""
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    source = tf.maximum((tf.cast(tf.range(out_size), tf.float32) + 0.5) * scale - 0.5, 0.0)
    lower = tf.minimum(tf.cast(tf.floor(source), tf.int32), in_size - 1)
    upper = tf.minimum(lower + 1, in_size - 1)
    return lower, upper, source - tf.cast(lower, tf.float32)


def resize_bilinear(maps: tf.Tensor, size: Any) -> tf.Tensor:
    """NHWC half-pixel bilinear resize without antialias (= torch ``interpolate(align_corners=False)``), float32.

    ``tf.image.resize`` normally; under XLA a gather formulation, because XLA's own lowering of the bilinear
    resize is wrong for some non-integer factors (4x5 -> 25x33: errors of 2.6 on unit-variance input,
    TensorFlow 2.21 CPU), which silently corrupts logits (and losses) of odd-sized inputs under jit_compile.
    """
    maps = tf.cast(maps, tf.float32)
    if not in_xla_context():
        return tf.image.resize(maps, size, method="bilinear", antialias=False)
    shape = tf.shape(maps)
    for axis, out_size in ((1, size[0]), (2, size[1])):
        lower, upper, weight = _source_indices(out_size, shape[axis])
        weight = tf.reshape(weight, (-1, 1) if axis == 2 else (-1, 1, 1))
        low = tf.gather(maps, lower, axis=axis)
        maps = low + (tf.gather(maps, upper, axis=axis) - low) * weight
    return maps


def depthwise_conv3x3_shifted(maps: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """3x3 depthwise conv (stride 1, zero padding 1) as nine shifted multiply-adds: (B, H, W, C) x (3, 3, C)
    -> (B, H, W, C). XLA fuses it into one loop, where its own CPU depthwise convolution is slow
    (figures in ``benchmarks/README.md``)."""
    height, width = tf.shape(maps)[1], tf.shape(maps)[2]
    padded = tf.pad(maps, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = None
    for dy in range(3):
        for dx in range(3):
            term = padded[:, dy : dy + height, dx : dx + width, :] * kernel[dy, dx]
            out = term if out is None else out + term
    return out


def normal_init(std: float) -> keras.initializers.Initializer:
    """``normal(0, initializer_range)`` like the PT ``_init_weights``."""
    return keras.initializers.RandomNormal(mean=0.0, stddev=std)


@_SERIALIZABLE
class TFSegformerDropPath(keras.layers.Layer):
    """Stochastic depth per sample (twin of ``SegformerDropPath``): ``x / keep * floor(keep + U)`` in training."""

    def __init__(self, drop_path: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.drop_path = float(drop_path)
        self.seed_generator = keras.random.SeedGenerator()  # a variable: saved and restored with training states

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        if not training or self.drop_path == 0.0:
            return x
        keep = 1.0 - self.drop_path
        shape = tf.concat([tf.shape(x)[:1], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0)
        mask = tf.floor(keep + keras.random.uniform(shape, dtype=x.dtype, seed=self.seed_generator))
        return x / keep * mask

    def get_config(self) -> dict:
        return {**super().get_config(), "drop_path": self.drop_path}


@_SERIALIZABLE
class TFSegformerOverlapPatchEmbeddings(keras.layers.Layer):
    """Twin of ``SegformerOverlapPatchEmbeddings``: symmetric zero padding k // 2, VALID conv, LayerNorm.

    (B, H, W, C_in) -> tokens (B, h*w, C), h, w with ``h = (H + 2*(k//2) - k) // s + 1``. TF ``"same"``
    padding is NOT used: it pads as much as the output size needs, more at the end than at the start, so its
    windows differ from PyTorch's symmetric ``padding=k // 2``.
    """

    def __init__(self, patch_size: int, stride: int, hidden_size: int, eps: float, initializer_range: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.patch_size, self.stride, self.hidden_size = patch_size, stride, hidden_size
        self.eps, self.initializer_range = eps, initializer_range
        self.padding = keras.layers.ZeroPadding2D(padding=patch_size // 2, name="padding")
        self.proj = keras.layers.Conv2D(
            hidden_size, patch_size, strides=stride, padding="valid", name="proj", kernel_initializer=normal_init(initializer_range)
        )
        self.layer_norm = keras.layers.LayerNormalization(epsilon=eps, name="layer_norm")

    def build(self, input_shape: Any) -> None:
        """Create the variables from the NHWC input shape (only its channel count is used)."""
        self.proj.build((None, None, None, int(input_shape[-1])))
        self.layer_norm.build((None, None, self.hidden_size))

    def call(self, pixel_values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        maps = self.proj(self.padding(pixel_values))  # (B, h, w, C)
        shape = tf.shape(maps)
        tokens = tf.reshape(maps, (shape[0], shape[1] * shape[2], self.hidden_size))
        return layer_norm(self.layer_norm, tokens), shape[1], shape[2]

    def get_config(self) -> dict:
        return {**super().get_config(), "patch_size": self.patch_size, "stride": self.stride, "hidden_size": self.hidden_size,
                "eps": self.eps, "initializer_range": self.initializer_range}


@_SERIALIZABLE
class TFSegformerEfficientSelfAttention(keras.layers.Layer):
    """Twin of ``SegformerEfficientSelfAttention``: keys / values from a sequence reduced by a stride-R conv.

    Returns the context (B, N, C) and, if asked, the softmax map (B, heads, N, N_kv) (softmax in float32).
    """

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        sequence_reduction_ratio: int,
        attention_probs_dropout_prob: float,
        eps: float,
        initializer_range: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_size, self.num_attention_heads = hidden_size, num_attention_heads
        self.sequence_reduction_ratio = sequence_reduction_ratio
        self.attention_probs_dropout_prob, self.eps, self.initializer_range = attention_probs_dropout_prob, eps, initializer_range
        self.head_dim = hidden_size // num_attention_heads
        init = normal_init(initializer_range)
        self.query = keras.layers.Dense(hidden_size, name="query", kernel_initializer=init)
        self.key = keras.layers.Dense(hidden_size, name="key", kernel_initializer=init)
        self.value = keras.layers.Dense(hidden_size, name="value", kernel_initializer=init)
        self.dropout = keras.layers.Dropout(attention_probs_dropout_prob)
        if sequence_reduction_ratio > 1:
            self.sr = keras.layers.Conv2D(
                hidden_size, sequence_reduction_ratio, strides=sequence_reduction_ratio, padding="valid", name="sr", kernel_initializer=init
            )
            self.layer_norm = keras.layers.LayerNormalization(epsilon=eps, name="layer_norm")

    def build(self, input_shape: Any = None) -> None:
        tokens = (None, None, self.hidden_size)
        for dense in (self.query, self.key, self.value):
            dense.build(tokens)
        if self.sequence_reduction_ratio > 1:
            self.sr.build((None, None, None, self.hidden_size))
            self.layer_norm.build(tokens)

    def _heads(self, x: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(x)
        x = tf.reshape(x, (shape[0], shape[1], self.num_attention_heads, self.head_dim))
        return tf.transpose(x, (0, 2, 1, 3))  # (B, heads, N, d)

    def call(
        self, hidden_states: tf.Tensor, height: tf.Tensor, width: tf.Tensor, output_attentions: bool = False, training: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        batch = tf.shape(hidden_states)[0]
        query = self._heads(self.query(hidden_states))
        if self.sequence_reduction_ratio > 1:
            maps = tf.reshape(hidden_states, (batch, height, width, self.hidden_size))
            reduced = self.sr(maps)
            reduced = tf.reshape(reduced, (batch, -1, self.hidden_size))
            reduced = layer_norm(self.layer_norm, reduced)
        else:
            reduced = hidden_states
        key = self._heads(self.key(reduced))
        value = self._heads(self.value(reduced))
        scores = tf.matmul(query, key, transpose_b=True) / tf.cast(math.sqrt(self.head_dim), query.dtype)
        probs = tf.cast(tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1), query.dtype)
        probs = self.dropout(probs, training=training)
        context = tf.transpose(tf.matmul(probs, value), (0, 2, 1, 3))  # (B, N, heads, d)
        context = tf.reshape(context, (batch, -1, self.hidden_size))
        return context, (probs if output_attentions else None)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_size": self.hidden_size, "num_attention_heads": self.num_attention_heads,
                "sequence_reduction_ratio": self.sequence_reduction_ratio,
                "attention_probs_dropout_prob": self.attention_probs_dropout_prob, "eps": self.eps,
                "initializer_range": self.initializer_range}


@_SERIALIZABLE
class TFSegformerSelfOutput(keras.layers.Layer):
    """Twin of ``SegformerSelfOutput``: dense + dropout."""

    def __init__(self, hidden_size: int, hidden_dropout_prob: float, initializer_range: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hidden_size, self.hidden_dropout_prob, self.initializer_range = hidden_size, hidden_dropout_prob, initializer_range
        self.dense = keras.layers.Dense(hidden_size, name="dense", kernel_initializer=normal_init(initializer_range))
        self.dropout = keras.layers.Dropout(hidden_dropout_prob)

    def build(self, input_shape: Any = None) -> None:
        self.dense.build((None, None, self.hidden_size))

    def call(self, hidden_states: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.dropout(self.dense(hidden_states), training=training)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_size": self.hidden_size, "hidden_dropout_prob": self.hidden_dropout_prob,
                "initializer_range": self.initializer_range}


@_SERIALIZABLE
class TFSegformerAttention(keras.layers.Layer):
    """Twin of ``SegformerAttention``: sublayers named ``self`` and ``output`` like Hugging Face's."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        sequence_reduction_ratio: int,
        attention_probs_dropout_prob: float,
        hidden_dropout_prob: float,
        eps: float,
        initializer_range: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_size, self.num_attention_heads = hidden_size, num_attention_heads
        self.sequence_reduction_ratio, self.eps, self.initializer_range = sequence_reduction_ratio, eps, initializer_range
        self.attention_probs_dropout_prob, self.hidden_dropout_prob = attention_probs_dropout_prob, hidden_dropout_prob
        self.self_attention = TFSegformerEfficientSelfAttention(
            hidden_size, num_attention_heads, sequence_reduction_ratio, attention_probs_dropout_prob, eps, initializer_range, name="self"
        )
        self.dense_output = TFSegformerSelfOutput(hidden_size, hidden_dropout_prob, initializer_range, name="output")

    def build(self, input_shape: Any = None) -> None:
        self.self_attention.build()
        self.dense_output.build()

    def call(self, hidden_states, height, width, output_attentions=False, training=False):
        context, probs = self.self_attention(hidden_states, height, width, output_attentions=output_attentions, training=training)
        return self.dense_output(context, training=training), probs

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_size": self.hidden_size, "num_attention_heads": self.num_attention_heads,
                "sequence_reduction_ratio": self.sequence_reduction_ratio,
                "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
                "hidden_dropout_prob": self.hidden_dropout_prob, "eps": self.eps, "initializer_range": self.initializer_range}


@_SERIALIZABLE
class TFSegformerDepthwiseConv(keras.layers.Layer):
    """3x3 depthwise conv whose kernel is stored as (3, 3, 1, C): Hugging Face's grouped-Conv2D layout
    (``tf_model.h5`` compatible). It runs as ``tf.nn.depthwise_conv2d`` after a free reshape to (3, 3, C, 1)."""

    def __init__(self, dim: int, initializer_range: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim, self.initializer_range = dim, initializer_range

    def build(self, input_shape: Any = None) -> None:
        self.kernel = self.add_weight(name="kernel", shape=(3, 3, 1, self.dim), initializer=normal_init(self.initializer_range))
        self.bias = self.add_weight(name="bias", shape=(self.dim,), initializer="zeros")
        self.built = True

    def call(self, maps: tf.Tensor) -> tf.Tensor:
        bias = tf.cast(self.bias, maps.dtype)
        if in_xla_context():
            return depthwise_conv3x3_shifted(maps, tf.reshape(tf.cast(self.kernel, maps.dtype), (3, 3, self.dim))) + bias
        kernel = tf.reshape(tf.cast(self.kernel, maps.dtype), (3, 3, self.dim, 1))
        return tf.nn.depthwise_conv2d(maps, kernel, strides=(1, 1, 1, 1), padding="SAME") + bias

    def get_config(self) -> dict:
        return {**super().get_config(), "dim": self.dim, "initializer_range": self.initializer_range}


@_SERIALIZABLE
class TFSegformerDWConv(keras.layers.Layer):
    """Twin of ``SegformerDWConv``: tokens (B, N, C) -> NHWC map (a reshape) -> depthwise conv -> tokens."""

    def __init__(self, dim: int, initializer_range: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim, self.initializer_range = dim, initializer_range
        self.dwconv = TFSegformerDepthwiseConv(dim, initializer_range, name="dwconv")

    def build(self, input_shape: Any = None) -> None:
        self.dwconv.build()

    def call(self, hidden_states: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
        batch = tf.shape(hidden_states)[0]
        maps = self.dwconv(tf.reshape(hidden_states, (batch, height, width, self.dim)))
        return tf.reshape(maps, (batch, -1, self.dim))

    def get_config(self) -> dict:
        return {**super().get_config(), "dim": self.dim, "initializer_range": self.initializer_range}


@_SERIALIZABLE
class TFSegformerMixFFN(keras.layers.Layer):
    """Twin of ``SegformerMixFFN``: dense1 -> depthwise conv -> activation -> dropout -> dense2 -> dropout."""

    def __init__(self, in_features: int, hidden_features: int, hidden_act: str, hidden_dropout_prob: float,
                 initializer_range: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.in_features, self.hidden_features, self.hidden_act = in_features, hidden_features, hidden_act
        self.hidden_dropout_prob, self.initializer_range = hidden_dropout_prob, initializer_range
        init = normal_init(initializer_range)
        self.dense1 = keras.layers.Dense(hidden_features, name="dense1", kernel_initializer=init)
        self.dwconv = TFSegformerDWConv(hidden_features, initializer_range, name="dwconv")
        self.intermediate_act_fn = ACT2FN[hidden_act]
        self.dense2 = keras.layers.Dense(in_features, name="dense2", kernel_initializer=init)
        self.dropout = keras.layers.Dropout(hidden_dropout_prob)

    def build(self, input_shape: Any = None) -> None:
        self.dense1.build((None, None, self.in_features))
        self.dwconv.build()
        self.dense2.build((None, None, self.hidden_features))

    def call(self, hidden_states, height, width, training=False):
        hidden_states = self.dwconv(self.dense1(hidden_states), height, width)
        hidden_states = self.dropout(self.intermediate_act_fn(hidden_states), training=training)
        return self.dropout(self.dense2(hidden_states), training=training)

    def get_config(self) -> dict:
        return {**super().get_config(), "in_features": self.in_features, "hidden_features": self.hidden_features,
                "hidden_act": self.hidden_act, "hidden_dropout_prob": self.hidden_dropout_prob,
                "initializer_range": self.initializer_range}


@_SERIALIZABLE
class TFSegformerLayer(keras.layers.Layer):
    """Twin of ``SegformerLayer``: pre-norm attention and Mix-FFN blocks with stochastic depth."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        drop_path: float,
        sequence_reduction_ratio: int,
        mlp_ratio: float,
        hidden_act: str,
        hidden_dropout_prob: float,
        attention_probs_dropout_prob: float,
        layer_norm_eps: float,
        patch_layer_norm_eps: float,
        initializer_range: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_size, self.num_attention_heads, self.drop_path_rate = hidden_size, num_attention_heads, drop_path
        self.sequence_reduction_ratio, self.mlp_ratio, self.hidden_act = sequence_reduction_ratio, mlp_ratio, hidden_act
        self.hidden_dropout_prob, self.attention_probs_dropout_prob = hidden_dropout_prob, attention_probs_dropout_prob
        self.layer_norm_eps, self.patch_layer_norm_eps = layer_norm_eps, patch_layer_norm_eps
        self.initializer_range = initializer_range
        self.layer_norm_1 = keras.layers.LayerNormalization(epsilon=layer_norm_eps, name="layer_norm_1")
        self.attention = TFSegformerAttention(
            hidden_size, num_attention_heads, sequence_reduction_ratio, attention_probs_dropout_prob,
            hidden_dropout_prob, patch_layer_norm_eps, initializer_range, name="attention",
        )
        self.drop_path = TFSegformerDropPath(drop_path, name="drop_path")
        self.layer_norm_2 = keras.layers.LayerNormalization(epsilon=layer_norm_eps, name="layer_norm_2")
        self.mlp = TFSegformerMixFFN(hidden_size, int(hidden_size * mlp_ratio), hidden_act, hidden_dropout_prob,
                                     initializer_range, name="mlp")

    def build(self, input_shape: Any = None) -> None:
        tokens = (None, None, self.hidden_size)
        self.layer_norm_1.build(tokens)
        self.attention.build()
        self.layer_norm_2.build(tokens)
        self.mlp.build()

    def call(self, hidden_states, height, width, output_attentions=False, training=False):
        attention_output, probs = self.attention(layer_norm(self.layer_norm_1, hidden_states), height, width, output_attentions=output_attentions, training=training)
        hidden_states = hidden_states + self.drop_path(attention_output, training=training)
        mlp_output = self.mlp(layer_norm(self.layer_norm_2, hidden_states), height, width, training=training)
        return hidden_states + self.drop_path(mlp_output, training=training), probs

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_size": self.hidden_size, "num_attention_heads": self.num_attention_heads,
                "drop_path": self.drop_path_rate, "sequence_reduction_ratio": self.sequence_reduction_ratio,
                "mlp_ratio": self.mlp_ratio, "hidden_act": self.hidden_act, "hidden_dropout_prob": self.hidden_dropout_prob,
                "attention_probs_dropout_prob": self.attention_probs_dropout_prob, "layer_norm_eps": self.layer_norm_eps,
                "patch_layer_norm_eps": self.patch_layer_norm_eps, "initializer_range": self.initializer_range}
