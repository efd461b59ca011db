"""The label rule of the classification losses, shared by ``segformer/pt/losses.py`` and ``segformer/tf/losses.py``.

Which loss a classifier computes (transformers' ``problem_type``):

* an explicit ``config.problem_type`` wins;
* otherwise ``num_labels == 1`` is ``"regression"`` (MSE);
* labels of shape ``(batch,)`` (or ``(batch, 1)``) are class ids whatever their dtype (float ids such as
  ``2.0`` included): ``"single_label_classification"`` (cross-entropy, ``-100`` ignored);
* labels of shape ``(batch, num_labels)`` are multi-hot targets: ``"multi_label_classification"`` (BCE).

Any other label shape is a ``ValueError`` naming the shapes accepted.

The label-range rule of both frameworks: a class id must lie in ``[0, upper)`` or be the ignore index, where
``upper`` is ``num_labels`` (segmentation: at least 2, the binary path takes 0 / 1);
:func:`invalid_labels` works on numpy arrays, torch tensors and TF tensors alike, and
:func:`label_range_message` is the one wording of the error.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = [
    "IGNORE_CLASS_ID",
    "invalid_labels",
    "label_range_message",
    "resolve_problem_type",
    "segmentation_label_bound",
]

IGNORE_CLASS_ID = -100  # transformers' ignore index of the classification cross-entropy


def resolve_problem_type(problem_type: str | None, num_labels: int, label_shape: Sequence[int | None]) -> str:
    """The loss kind for classification labels of ``label_shape`` (see the module docstring)."""
    if problem_type is not None:
        return problem_type
    if num_labels == 1:
        return "regression"
    shape = tuple(label_shape)
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return "single_label_classification"
    if len(shape) == 2 and shape[1] == num_labels:
        return "multi_label_classification"
    raise ValueError(
        f"classification labels must have shape (batch,) (class ids) or (batch, num_labels={num_labels}) "
        f"(multi-label targets), got shape {shape}; or set config.problem_type"
    )


def segmentation_label_bound(num_labels: int) -> int:
    """Segmentation class ids lie in ``[0, bound)``: ``num_labels``, or 2 for the binary path (``num_labels == 1``)."""
    return max(int(num_labels), 2)


def invalid_labels(labels: Any, upper: int, ignore: int) -> Any:
    """The boolean mask of labels outside ``[0, upper)`` that are not ``ignore`` (numpy, torch or TF)."""
    return (labels != ignore) & ((labels < 0) | (labels >= upper))


def label_range_message(upper: int, ignore: int, values: Sequence[int] | None = None) -> str:
    """The error text for labels outside ``[0, upper)``; ``values`` (up to 10 shown) when known (eager code)."""
    shown = "" if values is None else f" {[int(v) for v in list(values)[:10]]}"
    return f"labels contain values{shown} outside [0, {upper}) that are not the ignore index {ignore}"
