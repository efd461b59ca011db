"""Losses (Keras 3 / TF), equal to ``segformer/pt/losses.py`` (Hugging Face PT semantics), in float32.

Unlike Hugging Face's TF loss, ignored pixels (label 255) neither crash (CPU) nor give NaN (GPU): labels are
masked before the sparse cross-entropy. The ``num_labels == 1`` binary path exists. Label values are
checked eagerly (``ValueError`` / ``TypeError``); inside a traced function a ``tf.debugging`` assertion with
the same message fails the step (``InvalidArgumentError``). XLA (``jit_compile=True``) drops assertions: there
invalid labels are masked out like ignored pixels.

The models return the loss in the shape of transformers' TF classes: ``(1,)`` for segmentation, ``(batch,)``
per-example terms for classification (:func:`classification_losses`); ``fit`` trains on and reports the scalar
of :func:`semantic_segmentation_loss` / :func:`classification_loss`, which take Keras' ``sample_weight``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from ..common.model.config import SegformerConfig
from ..common.model.losses import (
    IGNORE_CLASS_ID, invalid_labels, label_range_message, resolve_problem_type, segmentation_label_bound,
)
from .layers import resize_bilinear

__all__ = ["semantic_segmentation_loss", "classification_loss", "classification_losses", "check_segmentation_labels"]


def check_segmentation_labels(labels: tf.Tensor, batch: int | None, config: SegformerConfig) -> None:
    """Validate labels (B, H, W): integer dtype (any for the binary path), batch size, values (eager only)."""
    if len(labels.shape) != 3:
        raise ValueError(f"labels must have shape (batch, height, width), got shape {tuple(labels.shape)}")
    if batch is not None and labels.shape[0] is not None and labels.shape[0] != batch:
        raise ValueError(f"labels batch size {labels.shape[0]} does not match pixel_values batch size {batch}")
    if labels.dtype.is_floating or labels.dtype == tf.bool:
        if config.num_labels > 1:
            raise TypeError(f"labels must be an integer tensor (class ids), got dtype {labels.dtype.name}")
        return
    upper = segmentation_label_bound(config.num_labels)
    _check_label_range(labels, upper, config.semantic_loss_ignore_index)


def _check_label_range(labels: tf.Tensor, upper: int, ignore: int) -> None:
    """``ValueError`` (eager) or a failing ``tf.debugging`` assertion (traced) for labels outside ``[0, upper)``."""
    if not tf.executing_eagerly():
        bad = invalid_labels(tf.cast(labels, tf.int64), upper, ignore)
        tf.debugging.assert_equal(tf.reduce_any(bad), False, message=label_range_message(upper, ignore))
        return
    values = np.asarray(labels)
    bad = invalid_labels(values, upper, ignore)
    if bad.any():
        raise ValueError(label_range_message(upper, ignore, np.unique(values[bad])))


def _example_weights(sample_weight: Any, rank: int) -> tf.Tensor:
    """Keras ``sample_weight`` as float32, broadcastable to a tensor of rank ``rank`` whose leading dims are the
    batch: ``(batch,)`` per-example weights (or ``(batch, H, W)`` per-pixel ones for segmentation)."""
    weights = tf.cast(tf.convert_to_tensor(sample_weight), tf.float32)
    if weights.shape.rank is not None and weights.shape.rank > rank:
        raise ValueError(f"sample_weight must have shape (batch,) or the labels' shape, got shape {tuple(weights.shape)}")
    while weights.shape.rank is not None and weights.shape.rank < rank:
        weights = weights[..., None]
    return weights


def semantic_segmentation_loss(
    logits: tf.Tensor, labels: tf.Tensor, config: SegformerConfig, sample_weight: Any = None
) -> tf.Tensor:
    """Scalar loss for NHWC logits (B, h, w, K) and labels (B, H, W): logits upsampled (half-pixel bilinear) to
    the labels' size; CE averaged over non-ignored pixels, or the binary path (BCE x valid, mean over all).

    ``sample_weight`` ((B,) per example or (B, H, W) per pixel) multiplies each pixel's term; the denominator
    stays the unweighted one, so all-ones weights give the plain loss and all-zero weights a zero loss.
    """
    check_segmentation_labels(labels, logits.shape[0], config)
    ignore = config.semantic_loss_ignore_index
    size = tf.shape(labels)[1:3]
    upsampled = resize_bilinear(logits, size)
    weights = 1.0 if sample_weight is None else _example_weights(sample_weight, 3)
    if config.num_labels > 1:
        labels = tf.cast(labels, tf.int32)
        valid = (labels != ignore) & (labels >= 0) & (labels < config.num_labels)
        safe = tf.where(valid, labels, tf.zeros_like(labels))
        per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=upsampled)
        valid = tf.cast(valid, tf.float32)
        return tf.math.divide_no_nan(tf.reduce_sum(per_pixel * valid * weights), tf.reduce_sum(valid))
    targets = tf.cast(labels, tf.float32)
    valid = tf.cast((targets >= 0) & (targets != float(ignore)), tf.float32)
    per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets * valid, logits=upsampled[..., 0])
    return tf.reduce_mean(per_pixel * valid * weights)


def classification_losses(logits: tf.Tensor, labels: Any, config: SegformerConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """``(per_example (B,), valid (B,))`` for logits (B, K): the loss kind from ``config.problem_type`` or the
    label rule of :mod:`segformer.common.model.losses` (class ids (B,) of any dtype, (B, K) multi-label targets).
    ``valid`` is 0 for class id -100 (ignored; its term is 0) and 1 otherwise."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 0:
        raise ValueError("classification labels must have a batch dimension, got a scalar")
    if logits.shape[0] is not None and labels.shape[0] is not None and labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels batch size {labels.shape[0]} does not match pixel_values batch size {logits.shape[0]}")
    num_labels = config.num_labels
    problem = resolve_problem_type(config.problem_type, num_labels, tuple(labels.shape))
    ones = tf.ones_like(logits[:, 0])
    if problem == "regression":
        targets = tf.reshape(tf.cast(labels, tf.float32), tf.shape(logits))
        return tf.reduce_mean(tf.square(logits - targets), axis=-1), ones
    if problem == "single_label_classification":
        if labels.dtype == tf.bool or labels.dtype.is_complex or labels.dtype == tf.string:
            raise TypeError(f"single-label classification needs class ids, got dtype {labels.dtype.name}")
        if labels.dtype.is_floating:
            whole = tf.reduce_all(tf.equal(labels, tf.round(labels)))
            message = "single-label classification needs whole-number class ids, got fractional labels"
            if tf.executing_eagerly():
                if not bool(whole):
                    raise ValueError(message)
            else:
                tf.debugging.assert_equal(whole, True, message=message)
        flat = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        _check_label_range(flat, num_labels, IGNORE_CLASS_ID)
        valid = flat != IGNORE_CLASS_ID
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.where(valid, flat, tf.zeros_like(flat)), logits=tf.reshape(logits, (-1, num_labels))
        )
        valid = tf.cast(valid, tf.float32)
        return per_example * valid, valid
    targets = tf.cast(labels, tf.float32)
    if targets.shape != logits.shape:
        raise ValueError(f"multi-label labels must have shape {tuple(logits.shape)}, got {tuple(targets.shape)}")
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits), axis=-1), ones


def classification_loss(logits: tf.Tensor, labels: Any, config: SegformerConfig, sample_weight: Any = None) -> tf.Tensor:
    """Scalar loss: the weighted sum of :func:`classification_losses` over the valid examples' count (the mean
    over all elements of the PT loss when unweighted; ``sample_weight`` (B,) multiplies each example's term)."""
    per_example, valid = classification_losses(logits, labels, config)
    weights = 1.0 if sample_weight is None else tf.reshape(_example_weights(sample_weight, 1), [-1])
    return tf.math.divide_no_nan(tf.reduce_sum(per_example * weights), tf.reduce_sum(valid))
