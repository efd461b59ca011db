"""Checkpoint conversion between frameworks and from the original code, verified before it writes.

``segformer.convert(src, dst, to="pt" | "tf" | "keras-hub" | "mmseg", **options)`` (also ``segformer convert SRC DST
--to ...``) returns a :class:`ConversionReport`. See :mod:`segformer.conversion.core` for the steps,
:mod:`segformer.conversion.original` for the NVlabs rename rules, :mod:`segformer.conversion.mmseg` for
mmsegmentation's ``mit.py`` checkpoints (both ways) and :mod:`segformer.conversion.keras_hub` for keras-hub presets
(both ways).
"""

from __future__ import annotations

from .core import (
    DEFAULT_SIZES,
    DEFAULT_TOLERANCE,
    Check,
    ConversionError,
    ConversionReport,
    SourceCheckpoint,
    VerificationError,
    convert,
    detect_task,
    read_source,
)
from .original import infer_original_config, map_original_state, read_original_checkpoint, rename_original_key

__all__ = [
    "convert",
    "ConversionReport",
    "Check",
    "ConversionError",
    "VerificationError",
    "SourceCheckpoint",
    "DEFAULT_SIZES",
    "DEFAULT_TOLERANCE",
    "read_source",
    "detect_task",
    "read_original_checkpoint",
    "map_original_state",
    "infer_original_config",
    "rename_original_key",
]
