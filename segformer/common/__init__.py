"""Framework-agnostic core: numpy, the standard library, Pillow, safetensors and h5py only."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SegformerConfig": "config",
    "VARIANTS": "variants",
    "parameter_table": "weights",
    "SegformerImageProcessor": "image_processing",
    "SegformerFeatureExtractor": "image_processing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
