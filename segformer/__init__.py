"""SegFormer in PyTorch (``segformer.pt``) and Keras 3 (``segformer.tf``) around one numpy core.

``import segformer`` imports neither torch nor tensorflow; the framework packages are imported only
when ``segformer.pt`` / ``segformer.tf`` (or a name that lives there) is used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "SegformerConfig": "segformer.common.model.config",
    "SegformerImageProcessor": "segformer.common.images.image_processing",
    "SegformerFeatureExtractor": "segformer.common.images.image_processing",
    "convert": "segformer.conversion",
    "Segmenter": "segformer.segmenter",
    "SegmentationResult": "segformer.common.inference.segmentation_result",
    "PRESETS": "segformer.common.model.presets",
    "get_preset": "segformer.common.model.presets",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        return getattr(module, name)
    if name in ("pt", "tf", "common"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (lazy names included, so ``dir(segformer)`` and tab completion show it) and the
    sub-packages, without importing any of them."""
    return sorted(set(globals()) | set(__all__) | {"pt", "tf", "common"})
