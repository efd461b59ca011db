"""Typed model outputs shared by both frameworks (tensors are opaque here).

Usable as attributes (``out.logits``), by key (``out["logits"]``), by position (``out[0]``, skipping
``None`` fields, as Hugging Face's ``ModelOutput``) and as a tuple (``out.to_tuple()``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields
from types import GeneratorType
from typing import Any

__all__ = [
    "OUTPUT_CLASSES",
    "ModelOutput",
    "BaseModelOutput",
    "SemanticSegmenterOutput",
    "SegFormerImageClassifierOutput",
    "ImageClassifierOutput",
]


class ModelOutput(OrderedDict):
    """Ordered mapping of the non-``None`` fields of a dataclass output."""

    def __post_init__(self) -> None:
        names = [f.name for f in fields(self)]
        first = getattr(self, names[0])
        if isinstance(first, (dict, GeneratorType)) and all(getattr(self, n) is None for n in names[1:]):
            # built from (key, value) pairs, as ``tf.nest`` / ``jax.tree_util`` rebuild a mapping:
            # ``type(out)((k, v) for k in out)`` (HF's ModelOutput accepts the same)
            object.__setattr__(self, names[0], None)
            for key, value in dict(first).items():
                if key not in names:
                    raise ValueError(f"{type(self).__name__} has no field {key!r}; fields: {names}")
                setattr(self, key, value)
        for name in names:
            value = getattr(self, name)
            if value is not None:
                super().__setitem__(name, value)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return dict(self.items())[key]
        return self.to_tuple()[key]

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.keys() and value is not None:
            super().__setitem__(name, value)
        super().__setattr__(name, value)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        super().__setattr__(key, value)

    def to_tuple(self) -> tuple:
        return tuple(self[k] for k in self.keys())

    def __iter__(self):  # iterate keys like a dict
        return iter(self.keys())

    def __reduce__(self):
        return (type(self), tuple(getattr(self, f.name) for f in fields(self)))

    def tree_flatten(self) -> tuple[tuple, tuple[str, ...]]:
        """``(values, keys)`` of the set fields: the node protocol of optree / JAX pytrees (Keras' tree), with
        which the framework packages register the output classes (``None`` fields are not children)."""
        keys = tuple(self.keys())
        return tuple(dict.__getitem__(self, k) for k in keys), keys

    @classmethod
    def tree_unflatten(cls, keys: tuple[str, ...], values: Any) -> "ModelOutput":
        """Inverse of :meth:`tree_flatten`."""
        return cls(**dict(zip(keys, values)))


@dataclass(eq=False)
class BaseModelOutput(ModelOutput):
    """Encoder output.

    last_hidden_state: (B, C_last, H/32, W/32) NCHW (``(B, N, C_last)`` when ``reshape_last_stage=False``).
    hidden_states: one (B, C_i, h_i, w_i) map per stage (after the stage LayerNorm) when requested.
    attentions: one (B, heads_i, h_i*w_i, N_kv_i) softmax map per layer when requested.
    """

    last_hidden_state: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclass(eq=False)
class SemanticSegmenterOutput(ModelOutput):
    """Segmentation output: ``logits`` (B, num_labels, H/4, W/4) (not upsampled), ``loss`` a scalar."""

    loss: Any = None
    logits: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclass(eq=False)
class SegFormerImageClassifierOutput(ModelOutput):
    """Classification output: ``logits`` (B, num_labels), ``loss`` a scalar."""

    loss: Any = None
    logits: Any = None
    hidden_states: Any = None
    attentions: Any = None


ImageClassifierOutput = SegFormerImageClassifierOutput

OUTPUT_CLASSES = (BaseModelOutput, SemanticSegmenterOutput, SegFormerImageClassifierOutput)
