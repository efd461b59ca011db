"""SegFormer models (PyTorch): the encoder alone, image classification, semantic segmentation.

Same ``forward`` signatures, outputs and ``state_dict`` keys as Hugging Face's classes. Mirrored by
``segformer/tf/modeling.py``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils import _pytree as pytree

from ..common.model.config import SegformerConfig
from ..common.model.pixel_values import check_pixel_shape, floating_point_message
from ..common.model.outputs import OUTPUT_CLASSES, BaseModelOutput, SegFormerImageClassifierOutput, SemanticSegmenterOutput
from .decode_head import SegformerDecodeHead
from .encoder import SegformerEncoder
from .losses import classification_loss, semantic_segmentation_loss
from .pretrained import SegformerPreTrainedModel

__all__ = [
    "SegformerModel",
    "SegformerForImageClassification",
    "SegformerForSemanticSegmentation",
    "check_pixel_values",
]


def _register_output_pytrees() -> None:
    """Make the output classes torch pytree nodes (as transformers registers its ``ModelOutput`` subclasses), so
    ``torch.export`` / ``torch.compile`` handle models that return them (the default ``return_dict=True``)."""
    for output_class in OUTPUT_CLASSES:
        pytree.register_pytree_node(
            output_class,
            lambda output: (list(output.tree_flatten()[0]), list(output.tree_flatten()[1])),
            lambda values, keys, cls=output_class: cls.tree_unflatten(tuple(keys), values),
            serialized_type_name=f"{output_class.__module__}.{output_class.__name__}",
            flatten_with_keys_fn=lambda output: (
                [(pytree.MappingKey(k), v) for k, v in zip(output.tree_flatten()[1], output.tree_flatten()[0])],
                list(output.tree_flatten()[1]),
            ),
        )


_register_output_pytrees()


def check_pixel_values(pixel_values: torch.Tensor, config: SegformerConfig, check_finite: bool = False) -> None:
    """Validate model input (B, C, H, W) floating point; raise TypeError / ValueError naming what was seen."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor (B, C, H, W), got {type(pixel_values).__name__}")
    if pixel_values.ndim == 4 and not pixel_values.is_floating_point():
        raise TypeError(floating_point_message(str(pixel_values.dtype), "convert with .float()"))
    check_pixel_shape(tuple(pixel_values.shape), config)
    if check_finite and not bool(torch.isfinite(pixel_values).all()):
        raise ValueError("pixel_values contain NaN or Inf values")


def _flag(value: bool | None, default: bool) -> bool:
    return default if value is None else bool(value)


class SegformerModel(SegformerPreTrainedModel):
    """The bare Mix Transformer encoder. ``forward(pixel_values (B, C, H, W))`` -> :class:`BaseModelOutput`
    with ``last_hidden_state`` (B, C_4, ceil(H/32), ceil(W/32)) and, if asked, hidden states / attentions."""

    _task = "base"

    def __init__(self, config: SegformerConfig) -> None:
        super().__init__(config)
        self.encoder = SegformerEncoder(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutput | tuple:
        check_pixel_values(pixel_values, self.config, check_finite=self.check_finite)
        weight = self.encoder.patch_embeddings[0].proj.weight
        if pixel_values.dtype != weight.dtype or pixel_values.device != weight.device:
            pixel_values = pixel_values.to(device=weight.device, dtype=weight.dtype)  # e.g. float64 / float16 input
        return self.encoder(
            pixel_values,
            output_attentions=_flag(output_attentions, self.config.output_attentions),
            output_hidden_states=_flag(output_hidden_states, self.config.output_hidden_states),
            return_dict=_flag(return_dict, self.config.return_dict),
        )


class SegformerForImageClassification(SegformerPreTrainedModel):
    """Encoder + mean pooling over the last stage's tokens + linear classifier: logits (B, num_labels)."""

    _task = "image_classification"

    def __init__(self, config: SegformerConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.segformer = SegformerModel(config)
        self.classifier = nn.Linear(config.hidden_sizes[-1], config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SegFormerImageClassifierOutput | tuple:
        return_dict = _flag(return_dict, self.config.return_dict)
        outputs = self.segformer(
            pixel_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True
        )
        last = outputs.last_hidden_state
        if last.ndim == 4:  # (B, C, h, w) -> (B, h*w, C)
            last = last.flatten(2).transpose(1, 2)
        logits = self.classifier(last.mean(dim=1))
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        if not return_dict:
            return tuple(v for v in (loss, logits, outputs.hidden_states, outputs.attentions) if v is not None)
        return SegFormerImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class SegformerForSemanticSegmentation(SegformerPreTrainedModel):
    """Encoder + all-MLP decode head. ``logits`` are (B, num_labels, h_1, w_1) = H/4 x W/4 (rounded up),
    not upsampled; ``labels`` (B, H', W') of any size (logits are upsampled to them for the loss)."""

    _task = "semantic_segmentation"

    def __init__(self, config: SegformerConfig) -> None:
        super().__init__(config)
        self.segformer = SegformerModel(config)
        self.decode_head = SegformerDecodeHead(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SemanticSegmenterOutput | tuple:
        return_dict = _flag(return_dict, self.config.return_dict)
        output_hidden_states = _flag(output_hidden_states, self.config.output_hidden_states)
        if labels is not None and self.config.num_labels < 1:
            raise ValueError(f"num_labels must be >= 1 to compute a loss, got {self.config.num_labels}")
        outputs = self.segformer(
            pixel_values, output_attentions=output_attentions, output_hidden_states=True, return_dict=True
        )
        logits = self.decode_head(outputs.hidden_states)
        loss = semantic_segmentation_loss(logits, labels, self.config) if labels is not None else None
        hidden_states = outputs.hidden_states if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (loss, logits, hidden_states, outputs.attentions) if v is not None)
        return SemanticSegmenterOutput(
            loss=loss, logits=logits, hidden_states=hidden_states, attentions=outputs.attentions
        )
