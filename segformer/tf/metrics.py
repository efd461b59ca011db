"""Keras metric for semantic segmentation: the exact confusion matrix of ``segformer.common.training.metrics``.

Mirrors :class:`segformer.common.training.metrics.SegmentationMetric` (the PyTorch side uses that numpy class
directly). The state is one ``(K, K)`` ``int64`` variable of exact pixel counts, updated with TF ops
(``bincount(label * K + pred)``), summed across replicas (``aggregation="sum"``); ``result()`` is the
dataset-level mIoU of mmsegmentation (classes absent from both labels and predictions are left out of the
mean) and :meth:`SegmentationMeanIoU.compute` returns every number of ``SegmentationMetric.compute``.

Works in ``model.compile(metrics=[SegmentationMeanIoU(num_labels)])``: ``y_pred`` may be logits
``(B, K, h, w)`` (NCHW, the models' layout; resized bilinearly to the labels' size, then argmax) or
class ids ``(B, H, W)``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..common.training.metrics import SegmentationMetric
from .layers import resize_bilinear

__all__ = ["SegmentationMeanIoU"]


@keras.saving.register_keras_serializable(package="segformer")
class SegmentationMeanIoU(keras.metrics.Metric):
    """Dataset-level mean IoU from an exact ``int64`` confusion matrix (rows ground truth, columns prediction).

    Args:
        num_labels: number of classes ``K``.
        ignore_index: label value to skip (after ``reduce_labels``); must lie outside ``[0, K)``.
        reduce_labels: ADE20K's ``reduce_zero_label`` on the ground truth (``0 -> 255``, ``k -> k - 1``).
        data_format: layout of logits given as ``y_pred``: ``"channels_first"`` (B, K, h, w) or
            ``"channels_last"`` (B, h, w, K).
    """

    def __init__(
        self,
        num_labels: int,
        ignore_index: int = 255,
        reduce_labels: bool = False,
        data_format: str = "channels_first",
        name: str = "mean_iou",
        dtype: Any = None,
    ) -> None:
        SegmentationMetric(num_labels, ignore_index=ignore_index, reduce_labels=reduce_labels)  # validates
        if data_format not in ("channels_first", "channels_last"):
            raise ValueError(f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}")
        super().__init__(name=name, dtype=dtype)
        self.num_labels = int(num_labels)
        self.ignore_index = int(ignore_index)
        self.reduce_labels = bool(reduce_labels)
        self.data_format = data_format
        self.confusion_matrix = self.add_variable(
            shape=(self.num_labels, self.num_labels), initializer="zeros", dtype="int64",
            aggregation="sum", name="confusion_matrix",
        )

    def _predictions(self, y_pred: tf.Tensor, label_shape: tf.Tensor) -> tf.Tensor:
        y_pred = tf.convert_to_tensor(y_pred)
        if y_pred.shape.rank == 4:
            logits = tf.cast(y_pred, tf.float32)
            if self.data_format == "channels_first":
                logits = tf.transpose(logits, (0, 2, 3, 1))
            logits = resize_bilinear(logits, label_shape[1:3])
            return tf.argmax(logits, axis=-1, output_type=tf.int64)
        if y_pred.shape.rank == 3:
            if y_pred.dtype.is_floating:
                raise TypeError(f"class-id predictions (B, H, W) must be integers, got dtype {y_pred.dtype.name}")
            return tf.cast(y_pred, tf.int64)
        raise ValueError(f"y_pred must be logits (B, K, h, w) or class ids (B, H, W), got rank {y_pred.shape.rank}")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        if sample_weight is not None:
            raise ValueError("SegmentationMeanIoU counts pixels exactly; sample_weight is not supported (use ignore_index)")
        labels = tf.cast(tf.convert_to_tensor(y_true), tf.int64)
        if labels.shape.rank == 4 and labels.shape[-1] == 1:
            labels = labels[..., 0]
        if labels.shape.rank == 2:
            labels = labels[None]
        pred = self._predictions(y_pred, tf.shape(labels))
        if pred.shape.rank == 2:
            pred = pred[None]
        tf.debugging.assert_equal(tf.shape(pred), tf.shape(labels),
                                  message="predictions and labels must have the same (B, H, W) shape")
        if self.reduce_labels:
            labels = tf.where(labels == 0, tf.constant(255, tf.int64), labels - 1)
            labels = tf.where(labels == 254, tf.constant(255, tf.int64), labels)
        k = self.num_labels
        pred = tf.reshape(pred, [-1])
        labels = tf.reshape(labels, [-1])
        tf.debugging.assert_less(pred, tf.constant(k, tf.int64), message=f"predictions must lie in [0, {k})")
        tf.debugging.assert_non_negative(pred, message=f"predictions must lie in [0, {k})")
        valid = labels != self.ignore_index
        labels = tf.boolean_mask(labels, valid)
        pred = tf.boolean_mask(pred, valid)
        tf.debugging.assert_less(labels, tf.constant(k, tf.int64),
                                 message=f"labels must lie in [0, {k}) or equal ignore_index={self.ignore_index}")
        tf.debugging.assert_non_negative(labels, message=f"labels must lie in [0, {k}) or equal ignore_index")
        counts = tf.math.bincount(labels * k + pred, minlength=k * k, maxlength=k * k, dtype=tf.int64)
        self.confusion_matrix.assign_add(tf.reshape(counts, (k, k)))

    def result(self) -> tf.Tensor:
        matrix = tf.cast(tf.convert_to_tensor(self.confusion_matrix), tf.float64)
        intersect = tf.linalg.diag_part(matrix)
        union = tf.reduce_sum(matrix, axis=0) + tf.reduce_sum(matrix, axis=1) - intersect
        present = union > 0
        iou = tf.math.divide_no_nan(intersect, union)
        count = tf.reduce_sum(tf.cast(present, tf.float64))
        mean = tf.math.divide_no_nan(tf.reduce_sum(tf.where(present, iou, 0.0)), count)
        return tf.where(count > 0, mean, tf.constant(float("nan"), tf.float64))

    def reset_state(self) -> None:
        self.confusion_matrix.assign(tf.zeros((self.num_labels, self.num_labels), tf.int64))

    def to_numpy_metric(self) -> SegmentationMetric:
        """The state as a numpy :class:`SegmentationMetric` (e.g. to merge or print a table)."""
        return SegmentationMetric.from_state(
            np.asarray(self.confusion_matrix.numpy(), dtype=np.int64), ignore_index=self.ignore_index,
            reduce_labels=self.reduce_labels,
        )

    def compute(self) -> dict[str, Any]:
        """Every number of ``SegmentationMetric.compute()`` (per-class IoU / accuracy / Dice, aAcc, ...)."""
        return self.to_numpy_metric().compute()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_labels=self.num_labels, ignore_index=self.ignore_index, reduce_labels=self.reduce_labels,
                      data_format=self.data_format)
        return config
