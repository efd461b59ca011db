"""The model-wide ``use_fast_path`` switch of both frameworks: every layer that has an eval fast path holds a
``fast_path_enabled`` attribute of its own; the model's switch reads and sets all of them at once."""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["FAST_PATH_ATTR", "fast_path_enabled", "set_fast_path"]

FAST_PATH_ATTR = "fast_path_enabled"


def fast_path_enabled(layers: Iterable[Any]) -> bool:
    """``True`` when every layer with a fast path has it on (``False`` for a model without any)."""
    flags = [getattr(layer, FAST_PATH_ATTR) for layer in layers if FAST_PATH_ATTR in layer.__dict__]
    return all(flags) if flags else False


def set_fast_path(layers: Iterable[Any], value: bool) -> None:
    """Turn the fast path of every layer that has one on or off."""
    for layer in layers:
        if FAST_PATH_ATTR in layer.__dict__:
            setattr(layer, FAST_PATH_ATTR, bool(value))
