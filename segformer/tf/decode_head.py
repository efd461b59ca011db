"""The decode heads (Keras 3): the all-MLP head and mmseg's (``config.decode_head_type``). Mirror of ``segformer/pt/decode_head.py`` (same paths; both fast
paths' fold is :func:`segformer.common.model.head_fold.fold_decode_head`; the checklist for a head change is at
the top of ``segformer/pt/decode_head.py``).

Plain path (``fast_path_enabled=False``): per stage ``proj`` to D channels, bilinear upsample to the
stage-1 size, concatenate (stage 4, 3, 2, 1), ``linear_fuse`` (1x1, 4D -> D), BatchNorm, ReLU, dropout,
``classifier``.

Training fast path (``fast_path_enabled`` on, the default): ``linear_fuse`` alone folded into each stage's
``proj`` (BatchNorm stays live), the concatenation never built; same values and gradients within float
rounding.

Fast path (eval, same numbers within float rounding): ``linear_fuse`` and the eval BatchNorm folded into
each stage's ``proj``, run at each stage's own resolution; the 4D-channel concatenation at 1/4 resolution
is never built.

mmseg head (``decode_head_type="mmseg"``): per stage ``proj`` (no bias), BatchNorm, ReLU, upsample, concatenate
(stage 1, 2, 3, 4), ``linear_fuse``, BatchNorm, ReLU, channel dropout, ``classifier``; training runs this plain
path, the eval fast path the fold of :func:`segformer.common.model.head_fold.fold_mmseg_decode_head`.

A ``keras.layers.Layer`` (Hugging Face's TF head is a full model, which breaks SavedModel export).
Input: the encoder's NHWC stage maps; output NHWC logits (B, h_1, w_1, num_labels).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from ..common.model.config import SegformerConfig, as_config, patch_embed_size
from ..common.model.head_fold import fold_decode_head, fold_mmseg_decode_head
from .layers import normal_init, resize_bilinear

__all__ = ["TFSegformerMLP", "TFSegformerBatchNorm", "TFSegformerDecodeHead", "stage_maps", "resize_bilinear"]

_SERIALIZABLE = keras.saving.register_keras_serializable(package="segformer")


def stage_maps(config: SegformerConfig, encoder_hidden_states: tuple) -> list[tf.Tensor]:
    """Every stage as an NHWC map; a token-shaped last stage (``reshape_last_stage=False``) is reshaped with
    the size computed from the previous stage (never from a square root)."""
    maps = list(encoder_hidden_states)
    if len(maps[-1].shape) == 3:
        shape = tf.shape(maps[-2])
        k, s = config.patch_sizes[-1], config.strides[-1]
        height, width = patch_embed_size(shape[1], k, s), patch_embed_size(shape[2], k, s)
        maps[-1] = tf.reshape(maps[-1], (shape[0], height, width, config.hidden_sizes[-1]))
    return maps


@_SERIALIZABLE
class TFSegformerMLP(keras.layers.Layer):
    """Twin of ``SegformerMLP``: per-stage projection (a Dense on the channel axis of an NHWC map). With
    ``batch_norm`` (the mmseg head) ``proj`` has no bias and a ``batch_norm`` follows it (applied by the head)."""

    def __init__(self, decoder_hidden_size: int, initializer_range: float, batch_norm: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.decoder_hidden_size, self.initializer_range, self.use_batch_norm = decoder_hidden_size, initializer_range, batch_norm
        self.proj = keras.layers.Dense(
            decoder_hidden_size, name="proj", use_bias=not batch_norm, kernel_initializer=normal_init(initializer_range)
        )
        if batch_norm:
            self.batch_norm = TFSegformerBatchNorm(name="batch_norm")

    def build(self, input_shape: Any) -> None:
        self.proj.build((None, None, None, int(input_shape[-1])))
        if self.use_batch_norm:
            self.batch_norm.build((None, None, None, self.decoder_hidden_size))

    def call(self, hidden_states: tf.Tensor) -> tf.Tensor:
        return self.proj(hidden_states)

    def get_config(self) -> dict:
        return {**super().get_config(), "decoder_hidden_size": self.decoder_hidden_size, "initializer_range": self.initializer_range,
                "batch_norm": self.use_batch_norm}


@_SERIALIZABLE
class TFSegformerBatchNorm(keras.layers.BatchNormalization):
    """BatchNorm with PyTorch's semantics: eps 1e-5, momentum 0.1 (Keras 0.9), running variance updated with
    the *unbiased* batch variance (Keras 3 uses the biased one), and a ``num_batches_tracked`` counter so the
    TF variables and the canonical table are the same set. Computes in float32 (mixed precision safe)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("epsilon", 1e-5)
        kwargs.setdefault("momentum", 0.9)
        super().__init__(**kwargs)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.num_batches_tracked = self.add_weight(
            name="num_batches_tracked", shape=(), dtype="int64", initializer="zeros", trainable=False
        )

    def call(self, inputs: tf.Tensor, training: bool = False, mask: Any = None) -> tf.Tensor:
        x = tf.cast(inputs, tf.float32)
        if training and self.trainable:
            mean, variance = self._moments(x, mask)
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
            if self.synchronized:
                count = count * tf.cast(tf.distribute.get_replica_context().num_replicas_in_sync, tf.float32)
            unbiased = variance * count / tf.maximum(count - 1.0, 1.0)
            for stat, batch in ((self.moving_mean, mean), (self.moving_variance, unbiased)):
                stat.assign(tf.cast(tf.cast(stat, tf.float32) * self.momentum + batch * (1.0 - self.momentum), stat.dtype))
            self.num_batches_tracked.assign_add(1)
        else:
            mean, variance = self.moving_mean, self.moving_variance
        gamma, beta = tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32)
        mean, variance = tf.cast(mean, tf.float32), tf.cast(variance, tf.float32)
        out = (x - mean) * tf.math.rsqrt(variance + self.epsilon) * gamma + beta
        return tf.cast(out, self.compute_dtype)


@_SERIALIZABLE
class TFSegformerDecodeHead(keras.layers.Layer):
    """Twin of ``SegformerDecodeHead``: stage maps (NHWC) -> logits (B, h_1, w_1, num_labels) (NHWC).

    Plain path (``fast_path_enabled=False``): proj, upsample, concat (stage 4..1), linear_fuse, BatchNorm,
    ReLU, dropout, classifier. Training fast path (``fast_path_enabled``, training): ``linear_fuse`` alone
    folded into each stage's proj (:meth:`_fused_folded`), BatchNorm live after it. Fast path (eval):
    ``linear_fuse`` and eval BatchNorm folded into each stage's proj at the stage's own resolution
    (:meth:`_fused_fast`). Neither fast path builds the 4D-channel concatenation.
    """

    def __init__(self, config: SegformerConfig | dict, **kwargs: Any) -> None:
        kwargs.setdefault("name", "decode_head")
        # no autocast: the eval fast path folds raw float32 kernels (sublayers still autocast their own calls)
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        config = as_config(config, type(self).__name__)
        self.config = config
        d = config.decoder_hidden_size
        init = normal_init(config.initializer_range)
        self.mmseg = config.decode_head_type == "mmseg"
        self.mlps = [TFSegformerMLP(d, config.initializer_range, batch_norm=self.mmseg, name=f"linear_c.{i}")
                     for i in range(config.num_encoder_blocks)]
        self.linear_fuse = keras.layers.Conv2D(d, 1, use_bias=False, name="linear_fuse", kernel_initializer=init)
        self.batch_norm = TFSegformerBatchNorm(name="batch_norm")
        self.activation = keras.layers.Activation("relu")
        # mmseg drops whole channels (PyTorch Dropout2d); the all-MLP head single values
        self.dropout = (keras.layers.SpatialDropout2D if self.mmseg else keras.layers.Dropout)(config.classifier_dropout_prob)
        self.classifier = keras.layers.Conv2D(config.num_labels, 1, name="classifier", kernel_initializer=init, dtype="float32")
        self.fast_path_enabled = True

    def build(self, input_shape: Any = None) -> None:
        """Create every variable from the config alone (no forward pass)."""
        d = self.config.decoder_hidden_size
        for mlp, channels in zip(self.mlps, self.config.hidden_sizes):
            mlp.build((None, None, None, channels))
        self.linear_fuse.build((None, None, None, d * self.config.num_encoder_blocks))
        self.batch_norm.build((None, None, None, d))
        self.classifier.build((None, None, None, d))

    def call(self, encoder_hidden_states: tuple, training: bool = False) -> tf.Tensor:
        maps = stage_maps(self.config, encoder_hidden_states)
        if self.mmseg:
            if self.fast_path_enabled and not training:
                fused = self._fused_fast_mmseg(maps)
            else:
                fused = self.batch_norm(self._fused_plain(maps, training), training=training)
        elif self.fast_path_enabled and not training:
            fused = self._fused_fast(maps)
        else:
            fused = self._fused_folded(maps) if self.fast_path_enabled else self._fused_plain(maps)
            fused = self.batch_norm(fused, training=training)
        hidden = self.dropout(self.activation(fused), training=training)
        return self.classifier(tf.cast(hidden, tf.float32))

    def _fused_plain(self, maps: list[tf.Tensor], training: bool = False) -> tf.Tensor:
        """``linear_fuse`` of the per-stage projections resized to the stage-1 size: concatenated in stage order
        n..1 (all-MLP head), or, for mmseg's ``SegformerHead``, each ``relu(BN(proj(x)))`` in stage order 1..n."""
        size = tf.shape(maps[0])[1:3]
        projected = []
        for index, (mlp, hidden) in enumerate(zip(self.mlps, maps)):
            x = mlp(hidden)
            if self.mmseg:
                x = self.activation(mlp.batch_norm(x, training=training))
            projected.append(x if index == 0 else tf.cast(resize_bilinear(x, size), x.dtype))
        return self.linear_fuse(tf.concat(projected if self.mmseg else projected[::-1], axis=-1))

    def _fused_fast_mmseg(self, maps: list[tf.Tensor]) -> tf.Tensor:
        """The mmseg head's eval fold (:func:`fold_mmseg_decode_head`) before its final ReLU, float32:
        ``sum_i up(F_i relu(A_i x_i + c_i)) + shift``, each stage's D x D block at the stage's own resolution."""
        d, n = self.config.decoder_hidden_size, self.config.num_encoder_blocks
        size = tf.shape(maps[0])[1:3]

        def stats(bn: TFSegformerBatchNorm) -> tuple:
            return tuple(tf.convert_to_tensor(v) for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))

        # Keras kernels are (in, out): transposed into the (out, in) layout of the fold and back
        weights, biases, blocks, shift = fold_mmseg_decode_head(
            tf.transpose(tf.reshape(self.linear_fuse.kernel, (n * d, d))),
            [tf.transpose(mlp.proj.kernel) for mlp in self.mlps],
            [stats(mlp.batch_norm) for mlp in self.mlps], stats(self.batch_norm), self.batch_norm.epsilon,
        )
        out = None
        for i, hidden in enumerate(maps):
            y = tf.linalg.matmul(tf.cast(hidden, tf.float32), tf.cast(weights[i], tf.float32), transpose_b=True)
            y = tf.nn.relu(y + tf.cast(biases[i], tf.float32))  # (B, h_i, w_i, D)
            y = tf.linalg.matmul(y, tf.cast(blocks[i], tf.float32), transpose_b=True)
            if i > 0:
                y = resize_bilinear(y, size)
            out = y if out is None else out + y
        return out + tf.cast(shift, tf.float32)

    def _fused_folded(self, maps: list[tf.Tensor]) -> tf.Tensor:
        """Training fast path: ``linear_fuse(concat(up(proj_i(x_i))))`` with ``linear_fuse`` folded into each
        stage's ``proj`` (:func:`fold_decode_head` with an identity BatchNorm, scale 1 and shift 0: BatchNorm
        stays live and is applied after), run at each stage's own resolution: the (B, h_1, w_1, 4D)
        concatenation and its 1x1 conv are never built. The same values and gradients (to every ``proj``
        kernel and bias and the ``linear_fuse`` kernel) as :meth:`_fused_plain` within float rounding.

        The dtypes of :meth:`_fused_plain`: the fold in the variables' dtype (float32 under mixed precision),
        the GEMMs and the sum in the layers' compute dtype (``proj`` and ``linear_fuse`` compute there), the
        resized maps cast back to it; returns (B, h_1, w_1, D) in that dtype (BatchNorm computes in float32)."""
        d, n = self.config.decoder_hidden_size, self.config.num_encoder_blocks
        size = tf.shape(maps[0])[1:3]
        compute = self.linear_fuse.compute_dtype
        fuse_kernel = tf.convert_to_tensor(self.linear_fuse.kernel)
        one, zero = tf.ones((d,), fuse_kernel.dtype), tf.zeros((d,), fuse_kernel.dtype)
        # Keras kernels are (in, out): transposed into the (out, in) layout of the fold (used with transpose_b);
        # identity "BatchNorm" (scale 1, shift 0): only linear_fuse folds
        weights, shift = fold_decode_head(
            tf.transpose(tf.reshape(fuse_kernel, (n * d, d))),
            [tf.transpose(mlp.proj.kernel) for mlp in self.mlps],
            [tf.convert_to_tensor(mlp.proj.bias) for mlp in self.mlps],
            one, zero, zero, one, 0.0,
        )
        shift = tf.cast(shift, compute)
        fused = None
        for i, (weight, hidden) in enumerate(zip(weights, maps)):
            y = tf.linalg.matmul(tf.cast(hidden, compute), tf.cast(weight, compute), transpose_b=True)  # (B, h_i, w_i, D)
            if i == 0:
                fused = y + shift  # every folded bias rides on stage 1's term
            else:
                fused = fused + tf.cast(resize_bilinear(y, size), compute)
        return fused

    def _fused_fast(self, maps: list[tf.Tensor]) -> tf.Tensor:
        """BatchNorm(linear_fuse(concat)) stage by stage at each stage's resolution (eval only), float32."""
        d, n = self.config.decoder_hidden_size, self.config.num_encoder_blocks
        size = tf.shape(maps[0])[1:3]
        bn = self.batch_norm
        # Keras kernels are (in, out): transposed into the (out, in) layout of the fold and back
        weights, shift = fold_decode_head(
            tf.transpose(tf.reshape(self.linear_fuse.kernel, (n * d, d))),
            [tf.transpose(mlp.proj.kernel) for mlp in self.mlps],
            [tf.convert_to_tensor(mlp.proj.bias) for mlp in self.mlps],
            tf.convert_to_tensor(bn.gamma), tf.convert_to_tensor(bn.beta), tf.convert_to_tensor(bn.moving_mean),
            tf.convert_to_tensor(bn.moving_variance), bn.epsilon,
        )
        out = None
        for i, (weight, hidden) in enumerate(zip(weights, maps)):
            y = tf.linalg.matmul(tf.cast(hidden, tf.float32), tf.cast(weight, tf.float32), transpose_b=True)  # (B, h_i, w_i, D)
            if i > 0:
                y = resize_bilinear(y, size)
            out = y if out is None else out + y
        return out + tf.cast(shift, tf.float32)

    def get_config(self) -> dict:
        return {**super().get_config(), "config": self.config.to_dict()}
