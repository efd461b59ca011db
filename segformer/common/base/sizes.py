"""The one (height, width) syntax of every API argument and CLI flag.

A size is ``HxW`` or ``H,W`` (height first), or ``S`` for a square ``S x S``; an ``(h, w)`` sequence is
taken as is. A list of sizes (``segformer bench --sizes``) separates its sizes by commas, so each of its
items is written ``HxW``.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

__all__ = ["as_bool", "as_size_pair", "is_int", "parse_size", "parse_sizes", "positive_int", "rescale_size"]

_SIZE = re.compile(r"\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?")


def is_int(value: object) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def as_bool(name: str, value: object) -> bool:
    """``value`` if it is ``True`` / ``False`` (Python or numpy); ``ValueError`` naming ``name`` otherwise (a string
    such as ``"yes"`` or ``"false"`` is refused, not read as truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def positive_int(name: str, value: object) -> int:
    """``value`` as a positive int; ``ValueError`` naming ``name`` and the value seen otherwise."""
    if not is_int(value) or int(value) < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def as_size_pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """``value`` as ``(height, width)`` of positive ints; an int ``n`` means ``(n, n)``.

    Raises ``ValueError`` naming ``name`` and the value seen.
    """
    if is_int(value):
        pair = (int(value), int(value))
    else:
        try:
            items = tuple(value)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(f"{name} must be an int or a (height, width) pair of ints, got {value!r}") from None
        if len(items) != 2 or not all(is_int(v) for v in items):
            raise ValueError(f"{name} must be an int or a (height, width) pair of ints, got {value!r}")
        pair = (int(items[0]), int(items[1]))
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair


def _positive_pair(values: list[int], name: str, text: object) -> tuple[int, int]:
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"{name} must be HxW, H,W or S (positive integers), got {text!r}")
    return values[0], values[1]


def parse_size(text: str | Sequence[int], name: str = "--crop-size") -> tuple[int, int]:
    """``"512"`` / ``"512,1024"`` / ``"512x1024"`` / ``(h, w)`` -> ``(h, w)`` of positive integers; ``name``
    (the argument or flag) is what a ``ValueError`` names."""
    if isinstance(text, str):
        match = _SIZE.fullmatch(text.lower())
        if match is None:
            raise ValueError(f"{name} must be HxW, H,W or S (positive integers), got {text!r}")
        values = [int(v) for v in match.groups() if v is not None]
    else:
        values = [int(v) for v in text]
    return _positive_pair(values, name, text)


def parse_sizes(text: str | Sequence[str], name: str = "sizes") -> list[tuple[int, int]]:
    """``"512x512,1024x2048"`` (or a sequence of ``"HxW"``) -> ``[(512, 512), (1024, 2048)]``."""
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else [str(t).strip() for t in text]
    items = [t for t in items if t]
    if not items:
        raise ValueError(f"{name} must name at least one size, got {text!r}")
    sizes = []
    for item in items:
        if "x" not in item.lower():
            raise ValueError(f"{name}: {item!r} is not HEIGHTxWIDTH with positive ints (e.g. 512x512)")
        sizes.append(parse_size(item, f"{name}: {item!r}"))
    return sizes


def rescale_size(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
    """mmcv ``rescale_size``: the largest ``(h, w)`` with the same aspect that fits ``scale``.

    The long edge is bounded by ``max(scale)`` and the short edge by ``min(scale)``; the factor is
    ``min(max(scale) / max(h, w), min(scale) / min(h, w))`` and sizes round half up.
    """
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return max(int(height * factor + 0.5), 1), max(int(width * factor + 0.5), 1)
