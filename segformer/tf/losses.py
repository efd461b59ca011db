"""Losses (Keras 3 / TF), equal to ``segformer/pt/losses.py`` (Hugging Face PT semantics), in float32.

Unlike Hugging Face's TF loss, ignored pixels (label 255) neither crash (CPU) nor give NaN (GPU): labels are
masked before the sparse cross-entropy. The ``num_labels == 1`` binary path exists. Label values are
checked eagerly (``ValueError`` / ``TypeError``); inside a traced function a ``tf.debugging`` assertion with
the same message fails the step (``InvalidArgumentError``). XLA (``jit_compile=True``) drops assertions: there
invalid labels are masked out like ignored pixels.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..common.config import SegformerConfig
from .layers import resize_bilinear

__all__ = ["semantic_segmentation_loss", "classification_loss", "check_segmentation_labels"]


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
    upper = max(config.num_labels, 2)
    message = f"labels contain values outside [0, {upper}) that are not the ignore index {config.semantic_loss_ignore_index}"
    if not tf.executing_eagerly():
        ids = tf.cast(labels, tf.int64)
        bad = (ids != config.semantic_loss_ignore_index) & ((ids < 0) | (ids >= upper))
        tf.debugging.assert_equal(tf.reduce_any(bad), False, message=message)
        return
    values = np.asarray(labels)
    bad = (values != config.semantic_loss_ignore_index) & ((values < 0) | (values >= upper))
    if bad.any():
        raise ValueError(
            f"labels contain values {np.unique(values[bad])[:10].tolist()} outside [0, {upper}) that are not the "
            f"ignore index {config.semantic_loss_ignore_index}"
        )


def semantic_segmentation_loss(logits: tf.Tensor, labels: tf.Tensor, config: SegformerConfig) -> tf.Tensor:
    """Scalar loss for NHWC logits (B, h, w, K) and labels (B, H, W): logits upsampled (half-pixel bilinear) to
    the labels' size; CE averaged over non-ignored pixels, or the binary path (BCE x valid, mean over all)."""
    check_segmentation_labels(labels, logits.shape[0], config)
    ignore = config.semantic_loss_ignore_index
    size = tf.shape(labels)[1:3]
    upsampled = resize_bilinear(logits, size)
    if config.num_labels > 1:
        labels = tf.cast(labels, tf.int32)
        valid = (labels != ignore) & (labels >= 0) & (labels < config.num_labels)
        safe = tf.where(valid, labels, tf.zeros_like(labels))
        per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=upsampled)
        valid = tf.cast(valid, tf.float32)
        return tf.math.divide_no_nan(tf.reduce_sum(per_pixel * valid), tf.reduce_sum(valid))
    targets = tf.cast(labels, tf.float32)
    valid = tf.cast((targets >= 0) & (targets != float(ignore)), tf.float32)
    per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets * valid, logits=upsampled[..., 0])
    return tf.reduce_mean(per_pixel * valid)


def classification_loss(logits: tf.Tensor, labels: tf.Tensor, config: SegformerConfig) -> tf.Tensor:
    """Scalar loss for logits (B, K) by ``config.problem_type`` (auto like Hugging Face when ``None``)."""
    logits = tf.cast(logits, tf.float32)
    if logits.shape[0] is not None and labels.shape[0] is not None and labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels batch size {labels.shape[0]} does not match pixel_values batch size {logits.shape[0]}")
    num_labels = config.num_labels
    problem = config.problem_type
    if problem is None:
        if num_labels == 1:
            problem = "regression"
        elif labels.dtype.is_integer:
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    if problem == "regression":
        targets = tf.cast(labels, tf.float32)
        if num_labels == 1:
            return tf.reduce_mean(tf.square(tf.reshape(logits, [-1]) - tf.reshape(targets, [-1])))
        return tf.reduce_mean(tf.square(logits - targets))
    if problem == "single_label_classification":
        if not labels.dtype.is_integer:
            raise TypeError(f"single-label classification needs integer labels, got dtype {labels.dtype.name}")
        flat = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        if not tf.executing_eagerly():
            bad = (flat != -100) & ((flat < 0) | (flat >= num_labels))
            tf.debugging.assert_equal(
                tf.reduce_any(bad), False, message=f"labels contain values outside [0, {num_labels}) (ignore: -100)"
            )
        else:
            values = flat.numpy()
            bad = (values != -100) & ((values < 0) | (values >= num_labels))
            if bad.any():
                raise ValueError(f"labels contain values {np.unique(values[bad])[:10].tolist()} outside [0, {num_labels}) (ignore: -100)")
        valid = flat != -100
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.where(valid, flat, tf.zeros_like(flat)), logits=tf.reshape(logits, (-1, num_labels))
        )
        valid = tf.cast(valid, tf.float32)
        return tf.math.divide_no_nan(tf.reduce_sum(per_example * valid), tf.reduce_sum(valid))
    targets = tf.cast(labels, tf.float32)
    if targets.shape != logits.shape:
        raise ValueError(f"multi-label labels must have shape {tuple(logits.shape)}, got {tuple(targets.shape)}")
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits))
