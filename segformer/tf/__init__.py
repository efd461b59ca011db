"""SegFormer on Keras 3 (TensorFlow backend): drop-in for ``transformers``' TFSegformer* classes.

NCHW ``pixel_values`` by default like Hugging Face; ``data_format="channels_last"`` for NHWC pipelines.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from ..common.base.deps import require  # noqa: E402

require("tensorflow", "segformer.tf (the Keras models)", "or use segformer.pt (PyTorch)")
require("keras", "segformer.tf (the Keras models)", "or use segformer.pt (PyTorch)")

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"segformer.tf needs Keras on the TensorFlow backend, but KERAS_BACKEND={keras.backend.backend()!r} is active; "
        "set KERAS_BACKEND=tensorflow before importing keras"
    )

from ..common.model.config import SegformerConfig  # noqa: E402
from ..common.model.outputs import BaseModelOutput, SegFormerImageClassifierOutput, SemanticSegmenterOutput  # noqa: E402
from .decode_head import TFSegformerDecodeHead  # noqa: E402
from .modeling import (  # noqa: E402
    TFSegformerForImageClassification,
    TFSegformerForSemanticSegmentation,
    TFSegformerMainLayer,
    TFSegformerModel,
)
from .image_segmenter import TFSegformerImageSegmenter  # noqa: E402
from .pretrained import TFSegformerPreTrainedModel  # noqa: E402

# Hugging Face's TF output class names
TFBaseModelOutput = BaseModelOutput
TFSemanticSegmenterOutput = SemanticSegmenterOutput
TFSequenceClassifierOutput = SegFormerImageClassifierOutput

__all__ = [
    "SegformerConfig",
    "TFSegformerModel",
    "TFSegformerDecodeHead",
    "TFSegformerForImageClassification",
    "TFSegformerForSemanticSegmentation",
    "TFSegformerImageSegmenter",
    "TFSegformerPreTrainedModel",
    "TFSegformerMainLayer",
    "TFBaseModelOutput",
    "TFSemanticSegmenterOutput",
    "TFSequenceClassifierOutput",
]
