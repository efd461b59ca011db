"""Label sets shipped with the package: class names (``id2label``) and colour palettes.

Built in: ``"ade20k"`` (150 classes, SceneParsing) and ``"cityscapes"`` (19 train classes). Names are
those of Hugging Face's ``ade20k-id2label.json`` / ``cityscapes-id2label.json`` label files (ADE20K
class 7 is ``"bed "`` with a trailing space, as there and in mmsegmentation); palettes are
mmsegmentation's. The data lives in ``segformer/common/data/<name>.json``.
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = [
    "IGNORE_INDEX",
    "LABEL_SETS",
    "get_label_set",
    "get_palette",
    "id2label_to_label2id",
    "load_id2label",
    "default_palette",
    "make_palette",
    "resolve_palette",
    "checkpoint_palette",
]

IGNORE_INDEX = 255
LABEL_SETS: tuple[str, ...] = ("ade20k", "cityscapes")
_ALIASES = {"ade20k": "ade20k", "ade": "ade20k", "ade-20k": "ade20k", "cityscapes": "cityscapes", "city": "cityscapes"}


def _canonical_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"label set name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key not in _ALIASES:
        raise ValueError(f"unknown label set {name!r}; valid names: {', '.join(LABEL_SETS)}")
    return _ALIASES[key]


@functools.lru_cache(maxsize=None)
def _load_builtin(name: str) -> tuple[tuple[tuple[int, str], ...], bytes]:
    text = resources.files("segformer.common").joinpath("data", f"{name}.json").read_text(encoding="utf-8")
    data = json.loads(text)
    id2label = _parse_id2label(data["id2label"], f"built-in label set {name!r}")
    palette = np.asarray(data["palette"], dtype=np.uint8)
    if palette.shape != (len(id2label), 3):
        raise RuntimeError(f"built-in label set {name!r} is corrupt: palette shape {palette.shape}")
    return tuple(sorted(id2label.items())), palette.tobytes()


def _parse_id2label(mapping: Any, source: str) -> dict[int, str]:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{source}: id2label must be a JSON object {{'0': 'name', ...}}, got {type(mapping).__name__}")
    result: dict[int, str] = {}
    for key, value in mapping.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: id2label keys must be integers, got {key!r}") from None
        if index < 0:
            raise ValueError(f"{source}: id2label keys must be >= 0, got {index}")
        if not isinstance(value, str):
            raise ValueError(f"{source}: id2label values must be strings, got {value!r} for id {index}")
        result[index] = value
    return result


def get_label_set(name: str) -> tuple[dict[int, str], np.ndarray]:
    """Return ``(id2label, palette)`` of a built-in label set.

    Args:
        name: ``"ade20k"`` or ``"cityscapes"`` (case-insensitive; ``"ade"`` and ``"city"`` are aliases).

    Returns:
        ``id2label``: ``{class index: name}`` (a fresh dict), and ``palette``: uint8 array ``(num_classes, 3)``
        (a fresh, writable copy).
    """
    canonical = _canonical_name(name)
    items, palette_bytes = _load_builtin(canonical)
    palette = np.frombuffer(palette_bytes, dtype=np.uint8).reshape(len(items), 3).copy()
    return dict(items), palette


def get_palette(name: str) -> np.ndarray:
    """The uint8 ``(num_classes, 3)`` palette of a built-in label set (see ``get_label_set``)."""
    return get_label_set(name)[1]


def load_id2label(path_or_name: str | os.PathLike) -> dict[int, str]:
    """Load ``{class index: name}`` from a built-in label set name or a JSON file.

    The JSON file may be a plain ``{"0": "wall", ...}`` mapping (Hugging Face label files), or any object
    with an ``"id2label"`` key (a model's ``config.json``, or the package's own label-set files).
    """
    if isinstance(path_or_name, str) and path_or_name.strip().lower().replace("_", "-") in _ALIASES:
        return get_label_set(path_or_name)[0]
    path = Path(path_or_name)
    if not path.is_file():
        raise FileNotFoundError(
            f"load_id2label: {os.fspath(path_or_name)!r} is neither a JSON file nor a built-in label set "
            f"({', '.join(LABEL_SETS)})"
        )
    from ..base.json_io import read_json

    data = read_json(path, "load_id2label label file", error=ValueError)
    if isinstance(data, Mapping) and "id2label" in data:
        data = data["id2label"]
    return _parse_id2label(data, f"load_id2label({os.fspath(path)!r})")


def id2label_to_label2id(id2label: Mapping[int, str]) -> dict[str, int]:
    """Invert ``id2label`` (``{name: index}``); duplicate names raise ``ValueError``."""
    label2id: dict[str, int] = {}
    for index, name in id2label.items():
        if name in label2id:
            raise ValueError(f"id2label: name {name!r} is used by ids {label2id[name]} and {index}")
        label2id[name] = int(index)
    return label2id


def make_palette(num_classes: int, seed: int = 0) -> np.ndarray:
    """A deterministic uint8 ``(num_classes, 3)`` palette of distinct bright colours for any label set."""
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"make_palette: num_classes must be a positive int, got {num_classes!r}")
    rng = np.random.default_rng(seed)
    return rng.integers(32, 256, size=(int(num_classes), 3), dtype=np.uint8)


# label sets whose palette a model gets by its class count alone
_SETS_BY_COUNT = {150: "ade20k", 19: "cityscapes"}


def resolve_palette(
    num_labels: int, label_set: str | None = None, id2label: Mapping[int, str] | None = None, what: str = "palette",
    palette: Any = None,
) -> tuple[np.ndarray, str]:
    """The one palette rule of the library: ``(uint8 (>= num_labels, 3) colours, the label set's name)``.

    In order: the named ``label_set`` (``"auto"`` / ``None`` skip this; one with fewer colours than
    ``num_labels`` is a ``ValueError`` naming ``what``); the checkpoint's own ``palette`` (``config.json``'s
    ``palette``, e.g. carried over from an mmsegmentation checkpoint's meta) when it holds at least
    ``num_labels`` RGB triples in 0..255 (name ``"checkpoint"``); the built-in set whose names equal ``id2label``;
    ADE20K for 150 classes, Cityscapes for 19; else :func:`make_palette` (name ``"generated"``).
    """
    if not isinstance(num_labels, (int, np.integer)) or isinstance(num_labels, bool) or num_labels < 1:
        raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")
    if label_set is not None and str(label_set).strip().lower() != "auto":
        try:
            name = _canonical_name(label_set)
        except ValueError:
            raise ValueError(f"{what}: unknown label set {label_set!r}; valid names: {', '.join(LABEL_SETS)} (or 'auto')") from None
        palette = get_palette(name)
        if len(palette) < num_labels:
            raise ValueError(f"{what} {label_set!r} has {len(palette)} colours but the model has {num_labels} classes")
        return palette, name
    own = checkpoint_palette(palette, num_labels)
    if own is not None:
        return own, "checkpoint"
    if id2label:
        wanted = {int(k): str(v) for k, v in id2label.items()}
        for name in LABEL_SETS:
            names, palette = get_label_set(name)
            if names == wanted:
                return palette, name
    name = _SETS_BY_COUNT.get(int(num_labels))
    if name is not None:
        return get_palette(name), name
    return make_palette(int(num_labels)), "generated"


def default_palette(
    num_labels: int, label_set: str | None = None, id2label: Mapping[int, str] | None = None, palette: Any = None
) -> np.ndarray:
    """The colours of :func:`resolve_palette` (the one palette rule)."""
    return resolve_palette(num_labels, label_set, id2label, palette=palette)[0]


def checkpoint_palette(palette: Any, num_labels: int) -> np.ndarray | None:
    """``palette`` (e.g. ``[[0, 0, 0], [128, 64, 128], ...]``) as uint8 ``(N, 3)`` when it is ``N >= num_labels`` RGB
    triples of integers in 0..255, else ``None`` (absent or unusable: the next rule of :func:`resolve_palette` applies)."""
    if palette is None or isinstance(palette, (str, bytes)):
        return None
    try:
        array = np.asarray(palette)
    except (TypeError, ValueError):
        return None
    if array.ndim != 2 or array.shape[1] != 3 or len(array) < num_labels or array.dtype.kind not in "iu":
        return None
    if array.min() < 0 or array.max() > 255:
        return None
    return array.astype(np.uint8)
