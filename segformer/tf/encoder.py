"""The hierarchical Mix Transformer encoder (Keras 3). Mirror of ``segformer/pt/encoder.py``."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from ..common.model.config import SegformerConfig, as_config
from .layers import TFSegformerLayer, TFSegformerOverlapPatchEmbeddings, layer_norm

__all__ = ["TFSegformerEncoder"]


@keras.saving.register_keras_serializable(package="segformer")
class TFSegformerEncoder(keras.layers.Layer):
    """Twin of ``SegformerEncoder``. Input NHWC (B, H, W, C_in); stage i output NHWC (B, h_i, w_i, C_i).

    Returns ``(last_hidden_state, hidden_states or None, attentions or None)``; with
    ``reshape_last_stage=False`` the last stage stays tokens (B, h_4*w_4, C_4).
    """

    def __init__(self, config: SegformerConfig | dict, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        config = as_config(config, type(self).__name__)
        self.config = config
        self.embeddings = [
            TFSegformerOverlapPatchEmbeddings(
                config.patch_sizes[i], config.strides[i], config.hidden_sizes[i], config.patch_layer_norm_eps,
                config.initializer_range, name=f"patch_embeddings.{i}",
            )
            for i in range(config.num_encoder_blocks)
        ]
        blocks = [
            TFSegformerLayer(**config.layer_kwargs(i, j), initializer_range=config.initializer_range, name=f"block.{i}.{j}")
            for i in range(config.num_encoder_blocks)
            for j in range(config.depths[i])
        ]
        # Each block is a direct attribute (``block_{i}_{j}``; its Keras name, hence its variable paths, stays
        # ``block.{i}.{j}``): a nested list is invisible to TF's SavedModel tracking (untracked-resource error in
        # tf.saved_model.save); ``block[i][j]`` is a property.
        self._block_attributes = tuple(layer.name.replace(".", "_") for layer in blocks)
        for attribute, layer in zip(self._block_attributes, blocks):
            setattr(self, attribute, layer)
        self.layer_norms = [
            keras.layers.LayerNormalization(epsilon=config.stage_layer_norm_eps, name=f"layer_norm.{i}")
            for i in range(config.num_encoder_blocks)
        ]

    @property
    def block(self) -> list[list[TFSegformerLayer]]:
        """``block[i][j]`` = the layer named ``block.{i}.{j}`` (like Hugging Face's attribute)."""
        return [self.stage_layers(i) for i in range(self.config.num_encoder_blocks)]

    def stage_layers(self, stage: int) -> list[TFSegformerLayer]:
        """The transformer blocks of one stage (``block.{stage}.*``)."""
        start = sum(self.config.depths[:stage])
        return [getattr(self, a) for a in self._block_attributes[start : start + self.config.depths[stage]]]

    def build(self, input_shape: Any = None) -> None:
        """Create every variable from the config alone (no forward pass)."""
        config = self.config
        channels = [config.num_channels, *config.hidden_sizes[:-1]]
        for i in range(config.num_encoder_blocks):
            self.embeddings[i].build((None, None, None, channels[i]))
            for layer in self.stage_layers(i):
                layer.build()
            self.layer_norms[i].build((None, None, config.hidden_sizes[i]))

    def call(
        self,
        pixel_values: tf.Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        training: bool = False,
    ) -> tuple[tf.Tensor, tuple | None, tuple | None]:
        batch = tf.shape(pixel_values)[0]
        hidden_states = pixel_values
        all_hidden_states, attentions = [], []
        last = self.config.num_encoder_blocks - 1
        for index in range(self.config.num_encoder_blocks):
            tokens, height, width = self.embeddings[index](hidden_states)
            for layer in self.stage_layers(index):
                tokens, probs = layer(tokens, height, width, output_attentions=output_attentions, training=training)
                if output_attentions:
                    attentions.append(probs)
            tokens = layer_norm(self.layer_norms[index], tokens)
            if index != last or self.config.reshape_last_stage:
                hidden_states = tf.reshape(tokens, (batch, height, width, self.config.hidden_sizes[index]))
            else:
                hidden_states = tokens
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
        return (
            hidden_states,
            tuple(all_hidden_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "config": self.config.to_dict()}
