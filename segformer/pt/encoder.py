"""The hierarchical Mix Transformer encoder (PyTorch). Mirrored by ``segformer/tf/encoder.py``."""

from __future__ import annotations

import torch
from torch import nn

from ..common.model.config import SegformerConfig
from ..common.model.outputs import BaseModelOutput
from .layers import SegformerLayer, SegformerOverlapPatchEmbeddings, to_map

__all__ = ["SegformerEncoder"]


class SegformerEncoder(nn.Module):
    """Four stages of (overlapping patch embedding -> ``depths[i]`` blocks -> LayerNorm).

    Input (B, C_in, H, W); stage i output (B, C_i, h_i, w_i) with sizes from ``config.stage_sizes(H, W)``.
    With ``reshape_last_stage=False`` the last stage stays tokens (B, h_4*w_4, C_4).
    """

    def __init__(self, config: SegformerConfig) -> None:
        super().__init__()
        self.config = config
        in_channels = [config.num_channels] + config.hidden_sizes[:-1]
        self.patch_embeddings = nn.ModuleList(
            SegformerOverlapPatchEmbeddings(
                config.patch_sizes[i], config.strides[i], in_channels[i], config.hidden_sizes[i], config.patch_layer_norm_eps
            )
            for i in range(config.num_encoder_blocks)
        )
        self.block = nn.ModuleList(
            nn.ModuleList(
                SegformerLayer(**config.layer_kwargs(i, j)) for j in range(config.depths[i])
            )
            for i in range(config.num_encoder_blocks)
        )
        self.layer_norm = nn.ModuleList(
            nn.LayerNorm(config.hidden_sizes[i], eps=config.stage_layer_norm_eps) for i in range(config.num_encoder_blocks)
        )
        self.gradient_checkpointing = False
        self.gradient_checkpointing_kwargs: dict = {}  # extra keywords for torch.utils.checkpoint.checkpoint

    def _stage(
        self, index: int, hidden_states: torch.Tensor, output_attentions: bool, attentions: list
    ) -> tuple[torch.Tensor, int, int]:
        tokens, height, width = self.patch_embeddings[index](hidden_states)
        for layer in self.block[index]:
            tokens, probs = layer(tokens, height, width, output_attentions)
            if output_attentions:
                attentions.append(probs)
        return self.layer_norm[index](tokens), height, width

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> BaseModelOutput | tuple:
        # Channels-last memory throughout: token <-> map conversions are views, not copies.
        hidden_states = pixel_values.contiguous(memory_format=torch.channels_last)
        all_hidden_states: list[torch.Tensor] = []
        attentions: list[torch.Tensor] = []
        last = self.config.num_encoder_blocks - 1
        for index in range(self.config.num_encoder_blocks):
            if self.gradient_checkpointing and self.training and not output_attentions:
                from torch.utils.checkpoint import checkpoint

                options = {"use_reentrant": False, **self.gradient_checkpointing_kwargs}
                if options["use_reentrant"] and not hidden_states.requires_grad and torch.is_grad_enabled():
                    # Reentrant checkpointing gives the weights inside a segment gradients only when the segment's
                    # input requires grad: the first stage (patch embedding included) would get none. transformers'
                    # enable_input_require_grads does this for embeddings; here the pixels (a detached alias).
                    hidden_states = hidden_states.detach().requires_grad_(True)
                tokens, height, width = checkpoint(self._stage, index, hidden_states, False, attentions, **options)
            else:
                tokens, height, width = self._stage(index, hidden_states, output_attentions, attentions)
            if index != last or self.config.reshape_last_stage:
                hidden_states = to_map(tokens, height, width)  # (B, C, h, w), channels-last view
            else:
                hidden_states = tokens  # (B, N, C)
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
        hidden = tuple(all_hidden_states) if output_hidden_states else None
        attn = tuple(attentions) if output_attentions else None
        if not return_dict:
            return tuple(v for v in (hidden_states, hidden, attn) if v is not None)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=hidden, attentions=attn)
