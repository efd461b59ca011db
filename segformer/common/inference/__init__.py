"""The inference layer: inference rules (whole / slide / TTA, ``rules.py``), streaming, memory estimates,
results, quantization helpers, prefetching. Imports ``base``, ``model``, ``images`` and ``checkpoints``.

``segformer.common.inference`` was one module before the core was layered; its names (the rules) are
re-exported here so old imports keep working."""

from .rules import *  # noqa: F401,F403
from .rules import __all__  # noqa: F401
