"""The model variants as data, and the one parser of variant names.

``VARIANTS`` holds the published MiT-B0..B5 architectures; ``TINY`` is the Hugging Face tester's
architecture (depths 1, hidden sizes 8/8/16/16) for smoke runs. :func:`parse_variant` is the only place
that reads a variant name: ``SegformerConfig.from_variant``, both ``build_model`` functions, ``segformer
info`` and ``segformer bench`` go through it.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["TINY", "VARIANTS", "parse_variant", "variant_kwargs", "variant_names"]

_WIDE = [64, 128, 320, 512]

# Every variant shares patch_sizes [7,3,3,3], strides [4,2,2,2], heads [1,2,5,8], sr_ratios [8,4,2,1],
# mlp_ratios [4,4,4,4] (the SegformerConfig defaults); only these fields change.
VARIANTS: dict[str, dict] = {
    "b0": {"depths": [2, 2, 2, 2], "hidden_sizes": [32, 64, 160, 256], "decoder_hidden_size": 256},
    "b1": {"depths": [2, 2, 2, 2], "hidden_sizes": _WIDE, "decoder_hidden_size": 256},
    "b2": {"depths": [3, 4, 6, 3], "hidden_sizes": _WIDE, "decoder_hidden_size": 768},
    "b3": {"depths": [3, 4, 18, 3], "hidden_sizes": _WIDE, "decoder_hidden_size": 768},
    "b4": {"depths": [3, 8, 27, 3], "hidden_sizes": _WIDE, "decoder_hidden_size": 768},
    "b5": {"depths": [3, 6, 40, 3], "hidden_sizes": _WIDE, "decoder_hidden_size": 768},
}

TINY: dict[str, Any] = {
    "depths": [1, 1, 1, 1],
    "hidden_sizes": [8, 8, 16, 16],
    "num_attention_heads": [1, 1, 2, 2],
    "decoder_hidden_size": 16,
}

_PREFIXES = ("mit-", "mit_", "segformer-", "segformer_")


def variant_names() -> list[str]:
    """Every name :func:`parse_variant` accepts without a prefix: ``b0`` .. ``b5`` and ``tiny``."""
    return [*VARIANTS, "tiny"]


def parse_variant(name: Any) -> str | None:
    """``"b0"`` / ``"B0"`` / ``"mit-b0"`` / ``"mit_b0"`` / ``"segformer-b0"`` / ``"tiny"`` -> ``"b0"`` / ``"tiny"``;
    ``None`` when ``name`` is no variant name (a path, a preset, a Hub id ...)."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    return key if key in variant_names() else None


def variant_kwargs(name: str) -> dict[str, Any]:
    """The ``SegformerConfig`` fields of variant ``name`` (a fresh copy); ``ValueError`` listing the valid names."""
    key = parse_variant(name)
    if key is None:
        raise ValueError(
            f"unknown variant {name!r}; valid variants: {variant_names()} (also with a mit- / segformer- prefix)"
        )
    return copy.deepcopy(TINY if key == "tiny" else VARIANTS[key])
