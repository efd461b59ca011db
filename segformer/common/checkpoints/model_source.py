"""What ``--model`` names for training, resolved once for both ``build_model`` functions
(``segformer.pt.training`` and ``segformer.tf.training``).

``model`` is a variant name (:func:`~segformer.common.model.variants.parse_variant`: random weights), a
``config.json`` file (random weights for that architecture), or an existing checkpoint folder / file (its
weights; a decode-head classifier of another size is re-initialized when the number of labels differs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model.config import SegformerConfig
from ..model.variants import parse_variant, variant_names

__all__ = ["ModelSource", "resolve_model_source"]


@dataclass
class ModelSource:
    """Either ``config`` (build fresh weights from it) or ``checkpoint`` (``from_pretrained(checkpoint,
    ignore_mismatched_sizes=..., **overrides)``)."""

    config: SegformerConfig | None = None
    checkpoint: str | None = None
    ignore_mismatched_sizes: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


def _label_fields(num_labels: int | None, id2label: dict[int, str] | None) -> dict[str, Any]:
    if id2label is not None and (num_labels is None or num_labels == len(id2label)):
        names = {int(k): str(v) for k, v in id2label.items()}
        return {"id2label": names, "label2id": {v: k for k, v in names.items()}, "num_labels": len(names)}
    if num_labels is not None:
        return {"num_labels": int(num_labels)}
    return {}


def resolve_model_source(
    model: str | os.PathLike, num_labels: int | None = None, id2label: dict[int, str] | None = None,
    **config_overrides: Any,
) -> ModelSource:
    """Resolve ``model`` (see the module docstring); ``id2label`` names the classes, ``config_overrides``
    change config fields. ``ValueError`` when ``model`` is none of the three."""
    labels = _label_fields(num_labels, id2label)
    name = os.fspath(model)
    if parse_variant(name) is not None:
        return ModelSource(config=SegformerConfig.from_variant(name, **config_overrides, **labels))
    if name.endswith(".json") and Path(name).is_file():
        return ModelSource(config=SegformerConfig.from_json_file(name, **config_overrides, **labels))
    if Path(name).exists():
        current = SegformerConfig.from_pretrained(name if Path(name).is_dir() else Path(name).parent)
        mismatch = bool(labels) and labels["num_labels"] != current.num_labels
        return ModelSource(checkpoint=name, ignore_mismatched_sizes=mismatch, overrides={**config_overrides, **labels})
    raise ValueError(
        f"--model {name!r} is neither a variant ({', '.join(variant_names())}), a config.json file, nor an "
        "existing checkpoint folder"
    )
