"""Framework-agnostic core: numpy, the standard library, Pillow, safetensors and h5py only.

Layered; each layer imports only the layers listed before it (a test checks this)::

    base/         errors, optional dependencies, sizes, atomic writes, untrusted JSON, allocator, random state
    model/        config, variants, presets, Hub names, the canonical weight table, outputs, head folding, losses, flops
    images/       decoding, SegformerImageProcessor, post-processing, resize, transforms, labels, palettes, viz
    checkpoints/  formats (safetensors, bin, h5, keras), reader, matching, folders, pretrained loading, model cards
    inference/    rules (whole / slide / TTA), streaming, memory estimates, results, quantization helpers, prefetch
    training/     recipe, loop, datasets, batches, metrics

The flat module paths of earlier releases (``segformer.common.config``, ``segformer.common.checkpoint``, ...)
still import, as the same module objects, with a ``DeprecationWarning``; they go in the next release.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

LAYERS = ("base", "model", "images", "checkpoints", "inference", "training")

_EXPORTS = {
    "SegformerConfig": "model.config",
    "VARIANTS": "model.variants",
    "parameter_table": "model.weights",
    "SegformerImageProcessor": "images.image_processing",
    "SegformerFeatureExtractor": "images.image_processing",
}

# flat module path of earlier releases -> its module now (both relative to segformer.common)
MOVED_MODULES = {
    **{name: f"base.{name}" for name in ("errors", "deps", "sizes", "atomic", "json_io", "allocator", "random_state")},
    **{name: f"model.{name}" for name in ("config", "variants", "presets", "weights", "outputs", "head_fold", "losses",
                                          "flops", "pixel_values", "switches", "hub")},
    **{name: f"images.{name}" for name in ("image_io", "image_arrays", "image_processing", "post_processing", "resize",
                                           "pil_resize", "transforms", "labels", "viz", "sample")},
    **{name: f"checkpoints.{name}" for name in ("model_card", "pretrained", "model_source")},
    **{name: f"inference.{name}" for name in ("streaming", "memory", "segmentation_result", "quantization", "prefetch")},
    **{name: f"training.{name}" for name in ("datasets", "batches", "metrics")},
    "train_loop": "training.loop",
    "checkpoint": "checkpoints",
    **{f"checkpoint.{name}": f"checkpoints.{name}"
       for name in ("files", "h5_io", "matching", "reader", "safetensors_io", "torch_io")},
}

__all__ = sorted(_EXPORTS) + ["LAYERS", "MOVED_MODULES"]


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old flat path (``segformer.common.config``) as the very module that now lives in a layer
    (``segformer.common.model.config``): one module object under two names, so patches and ``isinstance``
    checks made through either name hold for both."""

    prefix = __name__ + "."

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(self.prefix) and fullname[len(self.prefix):] in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self, is_package=False)
        return None

    def create_module(self, spec):
        old = spec.name[len(self.prefix):]
        new = self.prefix + MOVED_MODULES[old]
        warnings.warn(f"{spec.name} moved to {new}; the old path goes in the next release", DeprecationWarning,
                      stacklevel=4)
        module = importlib.import_module(new)
        self._spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec  # the import system stamped the alias' spec on the shared module


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
