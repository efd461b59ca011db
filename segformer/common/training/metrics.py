"""Dataset-level semantic segmentation metrics from one confusion matrix (numpy only).

The numbers are those of mmsegmentation's ``intersect_and_union`` / ``eval_metrics`` (the evaluation
behind every published SegFormer mIoU): per-class areas are summed over the **whole dataset** first and
divided once at the end, never averaged per image::

    IoU[c]  = intersect[c] / union[c]          (NaN when class c is in neither prediction nor label)
    Acc[c]  = intersect[c] / label_area[c]     (NaN when class c never occurs in the labels)
    Dice[c] = 2 intersect[c] / (pred_area[c] + label_area[c])
    mIoU    = nanmean(IoU),  mAcc = nanmean(Acc),  aAcc = sum(intersect) / sum(label_area)

A class that is predicted but absent from the labels has IoU 0 (it counts in mIoU) and Acc NaN, as in
mmseg. Everything is derived from an ``int64`` confusion matrix of exact pixel counts
(rows: ground truth, columns: prediction), which is also the state to all-reduce across processes.

Typical use::

    metric = SegmentationMetric(num_labels=150, reduce_labels=True)   # ADE20K annotations
    for pred, label in batches:                                        # (B, H, W) integer arrays
        metric.update(pred, label)
    print(format_iou_table(metric.compute(), id2label))
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["SegmentationMetric", "format_iou_table", "reduce_zero_label"]


def reduce_zero_label(labels: np.ndarray) -> np.ndarray:
    """The mmseg ``reduce_zero_label`` trick: ``0 -> 255``, ``k -> k - 1``, ``255`` stays ``255``.

    For datasets (ADE20K) whose label 0 means "other / unlabeled". Returns a new ``int64`` array of the
    same shape; the input is not modified.
    """
    out = np.asarray(labels).astype(np.int64, copy=True)
    out[out == 0] = 255
    out -= 1
    out[out == 254] = 255
    return out


def _nan_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` as float64, NaN where the denominator is 0 (no warnings)."""
    numerator = numerator.astype(np.float64)
    denominator = denominator.astype(np.float64)
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN (without a RuntimeWarning) when there are none."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return float("nan")
    return float(finite.mean())


def _check_integer(array: np.ndarray, what: str) -> None:
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise TypeError(f"{what} must be an integer array of class indices, got dtype {array.dtype}")


class SegmentationMetric:
    """Accumulates a confusion matrix over a dataset and computes mIoU / accuracy like mmseg.

    Args:
        num_labels: number of classes ``C``; predictions must lie in ``[0, C)``.
        ignore_index: label value whose pixels are skipped (after ``reduce_labels``). Must lie outside
            ``[0, num_labels)``, otherwise a real class would silently disappear.
        reduce_labels: apply the mmseg ``reduce_zero_label`` trick to the ground truth before counting
            (``0 -> 255``, ``k -> k - 1``, ``254 -> 255``); requires ``ignore_index == 255``.

    Attributes:
        confusion_matrix: ``(C, C)`` ``int64`` exact pixel counts, ``[ground_truth, prediction]``.
    """

    def __init__(self, num_labels: int, ignore_index: int = 255, reduce_labels: bool = False) -> None:
        if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
            raise ValueError(f"num_labels must be an integer >= 1, got {num_labels!r}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise ValueError(f"ignore_index must be an integer, got {ignore_index!r}")
        if 0 <= ignore_index < num_labels:
            raise ValueError(
                f"ignore_index={ignore_index} lies inside the class range [0, {num_labels}) "
                f"(num_labels={num_labels}); choose a value outside it, e.g. 255 or -100"
            )
        if reduce_labels and ignore_index != 255:
            raise ValueError(
                f"reduce_labels=True maps label 0 to 255, so ignore_index must be 255, got {ignore_index}"
            )
        self.num_labels = int(num_labels)
        self.ignore_index = int(ignore_index)
        self.reduce_labels = bool(reduce_labels)
        self.confusion_matrix = np.zeros((self.num_labels, self.num_labels), dtype=np.int64)

    def __repr__(self) -> str:
        return (
            f"SegmentationMetric(num_labels={self.num_labels}, ignore_index={self.ignore_index}, "
            f"reduce_labels={self.reduce_labels}, pixels={int(self.confusion_matrix.sum())})"
        )

    # ------------------------------------------------------------------ accumulation

    def reset(self) -> None:
        """Forget every count (start a new evaluation)."""
        self.confusion_matrix = np.zeros((self.num_labels, self.num_labels), dtype=np.int64)

    def update(self, predictions: Any, references: Any) -> None:
        """Add a batch of predictions and ground-truth label maps.

        Args:
            predictions: integer class indices, ``(H, W)`` or ``(B, H, W)``; or a list/tuple of such
                arrays (images of different sizes).
            references: ground-truth labels with exactly the same shape(s) (raw labels when
                ``reduce_labels`` is set; ``ignore_index`` pixels are skipped).

        Raises:
            ValueError: shapes differ, wrong rank, predictions outside ``[0, num_labels)``, or labels
                that are neither a class nor ``ignore_index``.
            TypeError: non-integer arrays.
        """
        if isinstance(predictions, (list, tuple)) or isinstance(references, (list, tuple)):
            if not isinstance(predictions, (list, tuple)) or not isinstance(references, (list, tuple)):
                raise ValueError(
                    "predictions and references must both be arrays or both be lists of arrays, got "
                    f"{type(predictions).__name__} and {type(references).__name__}"
                )
            if len(predictions) != len(references):
                raise ValueError(
                    f"got {len(predictions)} predictions but {len(references)} references; they must pair up"
                )
            for prediction, reference in zip(predictions, references):
                self.update(prediction, reference)
            return

        pred = np.asarray(predictions)
        label = np.asarray(references)
        if pred.shape != label.shape:
            raise ValueError(
                f"predictions shape {pred.shape} and references shape {label.shape} must match "
                "(resize logits to the label size before argmax)"
            )
        if pred.ndim not in (2, 3):
            raise ValueError(f"predictions must have shape (H, W) or (B, H, W), got shape {pred.shape}")
        _check_integer(pred, "predictions")
        _check_integer(label, "references")

        pred = pred.astype(np.int64, copy=False).ravel()
        if self.reduce_labels:
            label = reduce_zero_label(label).ravel()
        else:
            label = label.astype(np.int64, copy=False).ravel()

        n = self.num_labels
        if pred.size and (pred.min() < 0 or pred.max() >= n):
            bad = np.unique(pred[(pred < 0) | (pred >= n)])[:10].tolist()
            raise ValueError(f"predictions must lie in [0, {n}) (num_labels={n}), found values {bad}")
        valid = label != self.ignore_index
        label = label[valid]
        pred = pred[valid]
        if label.size and (label.min() < 0 or label.max() >= n):
            bad = np.unique(label[(label < 0) | (label >= n)])[:10].tolist()
            raise ValueError(
                f"references must lie in [0, {n}) or equal ignore_index={self.ignore_index}"
                f"{' after reduce_labels' if self.reduce_labels else ''}, found values {bad}"
            )
        counts = np.bincount(label * n + pred, minlength=n * n)
        self.confusion_matrix += counts.reshape(n, n).astype(np.int64, copy=False)

    def merge(self, other: "SegmentationMetric") -> "SegmentationMetric":
        """Add the counts of ``other`` (e.g. another process's accumulator) into this one; returns self."""
        if not isinstance(other, SegmentationMetric):
            raise TypeError(f"can only merge another SegmentationMetric, got {type(other).__name__}")
        mine = (self.num_labels, self.ignore_index, self.reduce_labels)
        theirs = (other.num_labels, other.ignore_index, other.reduce_labels)
        if mine != theirs:
            raise ValueError(
                "cannot merge metrics with different (num_labels, ignore_index, reduce_labels): "
                f"{mine} vs {theirs}"
            )
        self.confusion_matrix += other.confusion_matrix
        return self

    def state(self) -> np.ndarray:
        """A copy of the ``(C, C)`` ``int64`` confusion matrix: sum it across processes, then ``from_state``."""
        return self.confusion_matrix.copy()

    @classmethod
    def from_state(
        cls, state: np.ndarray, ignore_index: int = 255, reduce_labels: bool = False
    ) -> "SegmentationMetric":
        """Rebuild an accumulator from a (possibly all-reduced) ``(C, C)`` confusion matrix."""
        matrix = np.asarray(state)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
            raise ValueError(f"state must be a square (C, C) confusion matrix, got shape {matrix.shape}")
        if not np.issubdtype(matrix.dtype, np.integer):
            if not np.array_equal(matrix, np.round(matrix)):
                raise ValueError("state must hold integer pixel counts")
        if matrix.size and matrix.min() < 0:
            raise ValueError("state must hold non-negative pixel counts")
        metric = cls(matrix.shape[0], ignore_index=ignore_index, reduce_labels=reduce_labels)
        metric.confusion_matrix = matrix.astype(np.int64, copy=True)
        return metric

    # ------------------------------------------------------------------ results

    def compute(self) -> dict[str, Any]:
        """Metrics over everything accumulated so far.

        Returns:
            dict with ``per_class_iou``, ``per_class_accuracy``, ``per_class_dice`` (``(C,)`` float64,
            NaN where undefined), ``mean_iou``, ``mean_accuracy``, ``mean_dice`` (NaN-mean, float),
            ``overall_accuracy`` (aAcc, float; NaN before any valid pixel), and ``confusion_matrix``
            (``(C, C)`` int64 copy, rows ground truth, columns prediction).
        """
        matrix = self.confusion_matrix
        intersect = np.diag(matrix)
        area_label = matrix.sum(axis=1)
        area_pred = matrix.sum(axis=0)
        area_union = area_label + area_pred - intersect
        per_class_iou = _nan_divide(intersect, area_union)
        per_class_accuracy = _nan_divide(intersect, area_label)
        per_class_dice = _nan_divide(2 * intersect, area_label + area_pred)
        total = int(area_label.sum())
        overall = float(intersect.sum() / total) if total else float("nan")
        return {
            "mean_iou": _nanmean(per_class_iou),
            "mean_accuracy": _nanmean(per_class_accuracy),
            "mean_dice": _nanmean(per_class_dice),
            "overall_accuracy": overall,
            "per_class_iou": per_class_iou,
            "per_class_accuracy": per_class_accuracy,
            "per_class_dice": per_class_dice,
            "confusion_matrix": matrix.copy(),
        }


def _class_name(index: int, id2label: Mapping[Any, str] | Sequence[str] | None) -> str:
    if id2label is None:
        return str(index)
    if isinstance(id2label, Mapping):
        if index in id2label:
            return str(id2label[index])
        if str(index) in id2label:
            return str(id2label[str(index)])
        return str(index)
    if index < len(id2label):
        return str(id2label[index])
    return str(index)


def format_iou_table(
    result: Mapping[str, Any], id2label: Mapping[Any, str] | Sequence[str] | None = None
) -> str:
    """A plain-text table of per-class IoU and accuracy from ``SegmentationMetric.compute()``.

    ``id2label`` maps class index (int or str keys, as in a ``config.json``) to a name; classes
    without a name show their index. Undefined values print as ``nan``. The last line is exactly
    ``mIoU: <mean_iou with 4 decimals>`` so scripts can grep it.
    """
    for key in ("per_class_iou", "per_class_accuracy", "mean_iou"):
        if key not in result:
            raise KeyError(f"result is missing {key!r}; pass the dict returned by SegmentationMetric.compute()")
    ious = np.asarray(result["per_class_iou"], dtype=np.float64)
    accs = np.asarray(result["per_class_accuracy"], dtype=np.float64)
    names = [_class_name(i, id2label) for i in range(len(ious))]
    width = max([len("Class")] + [len(name) for name in names])
    header = f"{'Class':<{width}} | {'IoU':>7} | {'Acc':>7}"
    lines = [header, "-" * len(header)]
    for name, iou, acc in zip(names, ious, accs):
        lines.append(f"{name:<{width}} | {iou:>7.4f} | {acc:>7.4f}")
    lines.append("-" * len(header))
    overall = float(result.get("overall_accuracy", float("nan")))
    mean_acc = float(result.get("mean_accuracy", float("nan")))
    lines.append(f"aAcc: {overall:.4f}")
    lines.append(f"mAcc: {mean_acc:.4f}")
    lines.append(f"mIoU: {float(result['mean_iou']):.4f}")
    return "\n".join(lines)
