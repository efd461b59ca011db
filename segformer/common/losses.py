"""The label rule of the classification losses, shared by ``segformer/pt/losses.py`` and ``segformer/tf/losses.py``.

Which loss a classifier computes (transformers' ``problem_type``):

* an explicit ``config.problem_type`` wins;
* otherwise ``num_labels == 1`` is ``"regression"`` (MSE);
* labels of shape ``(batch,)`` (or ``(batch, 1)``) are class ids whatever their dtype (float ids such as
  ``2.0`` included): ``"single_label_classification"`` (cross-entropy, ``-100`` ignored);
* labels of shape ``(batch, num_labels)`` are multi-hot targets: ``"multi_label_classification"`` (BCE).

Any other label shape is a ``ValueError`` naming the shapes accepted.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["resolve_problem_type", "IGNORE_CLASS_ID"]

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
