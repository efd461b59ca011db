"""MiT-B0..B5 as data (ANCHORS.md section 1). Nothing else lives here."""

from __future__ import annotations

__all__ = ["VARIANTS", "variant_names"]

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


def variant_names() -> list[str]:
    return list(VARIANTS)
