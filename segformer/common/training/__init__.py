"""The training layer: the original recipe (``recipe.py``), the training loop, datasets, batches, metrics.
Imports every layer below it.

``segformer.common.training`` was one module before the core was layered; its names (the recipe) are
re-exported here so old imports keep working."""

from .recipe import *  # noqa: F401,F403
from .recipe import __all__  # noqa: F401
