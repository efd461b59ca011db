"""SegFormer in PyTorch: drop-in for ``transformers``' Segformer* classes (same names, keys, outputs)."""

from __future__ import annotations

from ..common.base.deps import require

require("torch", "segformer.pt (the PyTorch models)", "or use segformer.tf (TensorFlow / Keras)")

from ..common.model.config import SegformerConfig  # noqa: E402
from ..common.model.outputs import BaseModelOutput, SegFormerImageClassifierOutput, SemanticSegmenterOutput
from .decode_head import SegformerDecodeHead
from .layers import SegformerLayer
from .modeling import SegformerForImageClassification, SegformerForSemanticSegmentation, SegformerModel
from .pretrained import SegformerPreTrainedModel

__all__ = [
    "SegformerConfig",
    "SegformerModel",
    "SegformerDecodeHead",
    "SegformerForImageClassification",
    "SegformerForSemanticSegmentation",
    "SegformerPreTrainedModel",
    "SegformerLayer",
    "BaseModelOutput",
    "SemanticSegmenterOutput",
    "SegFormerImageClassifierOutput",
]
