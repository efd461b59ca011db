"""Building blocks of the Mix Transformer encoder (PyTorch). Mirrored by ``segformer/tf/layers.py``.

Tokens are ``(B, N, C)`` with ``N = height * width`` flattened row-major; every layer that needs the
spatial layout receives ``height`` and ``width`` explicitly.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACT2FN",
    "to_map",
    "to_tokens",
    "SegformerDropPath",
    "SegformerOverlapPatchEmbeddings",
    "SegformerEfficientSelfAttention",
    "SegformerSelfOutput",
    "SegformerAttention",
    "SegformerDWConv",
    "SegformerMixFFN",
    "fused_conv_gelu_applies",
    "SegformerLayer",
]

ACT2FN: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact (erf)
    "gelu_new": functools.partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": functools.partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "selu": F.selu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Tokens (B, h*w, C) -> map (B, C, h, w) as a channels-last *view* (no copy; convs accept it)."""
    batch, _, channels = tokens.shape
    return tokens.view(batch, height, width, channels).permute(0, 3, 1, 2)


def to_tokens(maps: torch.Tensor) -> torch.Tensor:
    """Map (B, C, h, w) -> tokens (B, h*w, C); a view when the map is channels-last (what convs return for
    channels-last input), a copy otherwise."""
    batch, channels, height, width = maps.shape
    return maps.permute(0, 2, 3, 1).reshape(batch, height * width, channels)


class SegformerDropPath(nn.Module):
    """Stochastic depth per sample: ``x / keep * floor(keep + U[0, 1))`` in training, identity in eval."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        mask = torch.rand(shape, dtype=hidden_states.dtype, device=hidden_states.device).add_(keep_prob).floor_()
        return hidden_states.div(keep_prob) * mask

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


class SegformerOverlapPatchEmbeddings(nn.Module):
    """Overlapping patch embedding: conv (kernel k, stride s, symmetric padding k // 2) + LayerNorm.

    (B, C_in, H, W) -> tokens (B, h*w, C) with ``h = (H + 2*(k//2) - k) // s + 1`` (same for w).
    """

    def __init__(self, patch_size: int, stride: int, num_channels: int, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(num_channels, hidden_size, kernel_size=patch_size, stride=stride, padding=patch_size // 2)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        embeddings = self.proj(pixel_values)  # (B, C, h, w), channels-last memory
        batch, channels, height, width = embeddings.shape
        embeddings = to_tokens(embeddings)  # (B, h*w, C)
        return self.layer_norm(embeddings), height, width


class SegformerEfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys/values come from a sequence reduced by a stride-R conv (R = sr ratio).

    queries: (B, N, C) -> heads (B, nh, N, d); keys/values from (B, N/R^2, C). Returns the context
    (B, N, C) and, if asked, the softmax map (B, nh, N, N_kv).
    """

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        sequence_reduction_ratio: int,
        attention_probs_dropout_prob: float,
        eps: float,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.head_dim = hidden_size // num_attention_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(attention_probs_dropout_prob)
        self.sr_ratio = sequence_reduction_ratio
        if sequence_reduction_ratio > 1:
            self.sr = nn.Conv2d(
                hidden_size, hidden_size, kernel_size=sequence_reduction_ratio, stride=sequence_reduction_ratio
            )
            self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        # Fused scaled_dot_product_attention when attention maps are not requested (same numbers within
        # float rounding); the model-level ``use_fast_path`` switch turns it off.
        self.fast_path_enabled = True

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.num_attention_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, hidden_states: torch.Tensor, height: int, width: int, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, tokens, channels = hidden_states.shape
        query = self._heads(self.query(hidden_states))
        if self.sr_ratio > 1:
            reduced = to_tokens(self.sr(to_map(hidden_states, height, width)))  # (B, N_kv, C)
            reduced = self.layer_norm(reduced)
        else:
            reduced = hidden_states
        key = self._heads(self.key(reduced))
        value = self._heads(self.value(reduced))
        if self.fast_path_enabled and not output_attentions:
            dropout = self.dropout.p if self.training else 0.0
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout)
            probs = None
        else:
            scores = torch.matmul(query, key.transpose(-1, -2)) / (self.head_dim**0.5)
            probs = self.dropout(scores.softmax(dim=-1))
            context = torch.matmul(probs, value)
        context = context.transpose(1, 2).reshape(batch, tokens, channels)
        return context, (probs if output_attentions else None)


class SegformerSelfOutput(nn.Module):
    """Output projection of the attention block: dense + dropout, (B, N, C) -> (B, N, C)."""

    def __init__(self, hidden_size: int, hidden_dropout_prob: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(hidden_states))


class SegformerAttention(nn.Module):
    """Efficient self-attention + output projection (HF names: ``self``, ``output``)."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        sequence_reduction_ratio: int,
        attention_probs_dropout_prob: float,
        hidden_dropout_prob: float,
        eps: float,
    ) -> None:
        super().__init__()
        self.self = SegformerEfficientSelfAttention(
            hidden_size, num_attention_heads, sequence_reduction_ratio, attention_probs_dropout_prob, eps
        )
        self.output = SegformerSelfOutput(hidden_size, hidden_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, height: int, width: int, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        context, probs = self.self(hidden_states, height, width, output_attentions)
        return self.output(context), probs


class SegformerDWConv(nn.Module):
    """3x3 depthwise conv on tokens: (B, N, C) -> map (B, C, h, w) -> conv -> (B, N, C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, bias=True, groups=dim)

    def forward(self, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return to_tokens(self.dwconv(to_map(hidden_states, height, width)))


class SegformerMixFFN(nn.Module):
    """Mix-FFN: dense1 -> 3x3 depthwise conv -> activation -> dropout -> dense2 -> dropout.

    Fast path (``fast_path_enabled``, the default; the model-level ``use_fast_path`` switch turns it off): with
    the exact GELU, in eval mode, without autograd, on float32 CPU tensors and outside tracing / compiling /
    export, the depthwise conv and the GELU run as one oneDNN convolution with a GELU (erf) post-op
    (:func:`fused_conv_gelu_applies`), which saves a pass over the largest activation of each block; the
    same numbers within float rounding. It reads the module's weights at every call (nothing is cached)."""

    def __init__(self, in_features: int, hidden_features: int, hidden_act: str, hidden_dropout_prob: float) -> None:
        super().__init__()
        self.dense1 = nn.Linear(in_features, hidden_features)
        self.dwconv = SegformerDWConv(hidden_features)
        self.intermediate_act_fn = ACT2FN[hidden_act]
        self.exact_gelu = hidden_act == "gelu"
        self.dense2 = nn.Linear(hidden_features, in_features)
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self.fast_path_enabled = True

    def forward(self, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
        hidden_states = self.dense1(hidden_states)
        if self.fast_path_enabled and self.exact_gelu and not self.training and fused_conv_gelu_applies(hidden_states):
            conv = self.dwconv.dwconv
            hidden_states = to_tokens(torch.ops.mkldnn._convolution_pointwise(
                to_map(hidden_states, height, width), conv.weight, conv.bias, list(conv.padding), list(conv.stride),
                list(conv.dilation), conv.groups, "gelu", [], "none"))
        else:
            hidden_states = self.dwconv(hidden_states, height, width)
            hidden_states = self.dropout(self.intermediate_act_fn(hidden_states))
        return self.dropout(self.dense2(hidden_states))


@functools.cache
def _has_fused_conv_gelu() -> bool:
    """Whether this torch build has oneDNN (mkldnn) and its pointwise-fused convolution operator."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._convolution_pointwise.default
    except (AttributeError, RuntimeError):
        return False
    return True


def fused_conv_gelu_applies(hidden_states: torch.Tensor) -> bool:
    """Whether :class:`SegformerMixFFN`'s fast path may run its conv + GELU as one oneDNN operator on
    ``hidden_states``: float32 on the CPU, autograd off (the fused operator has no gradient), oneDNN available
    and enabled (``torch.backends.mkldnn.flags(enabled=False)`` turns it off), and not while tracing,
    scripting, compiling or exporting (exported graphs hold only standard operators)."""
    return (  # tracing / compiling first: torch.compile never traces into the cached operator check
        not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
             or ("torch.onnx" in sys.modules and torch.onnx.is_in_onnx_export()))  # no 40 ms import of it
        and hidden_states.device.type == "cpu"
        and hidden_states.dtype == torch.float32
        and not torch.is_grad_enabled()
        and torch.backends.mkldnn.enabled
        and _has_fused_conv_gelu()
    )


class SegformerLayer(nn.Module):
    """Pre-norm transformer block: ``x + drop_path(attn(norm1(x)))`` then ``x + drop_path(ffn(norm2(x)))``."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        drop_path: float,
        sequence_reduction_ratio: int,
        mlp_ratio: float,
        hidden_act: str,
        hidden_dropout_prob: float,
        attention_probs_dropout_prob: float,
        layer_norm_eps: float,
        patch_layer_norm_eps: float,
    ) -> None:
        super().__init__()
        self.layer_norm_1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.attention = SegformerAttention(
            hidden_size,
            num_attention_heads,
            sequence_reduction_ratio,
            attention_probs_dropout_prob,
            hidden_dropout_prob,
            patch_layer_norm_eps,
        )
        self.drop_path = SegformerDropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.layer_norm_2 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.mlp = SegformerMixFFN(hidden_size, int(hidden_size * mlp_ratio), hidden_act, hidden_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, height: int, width: int, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, probs = self.attention(self.layer_norm_1(hidden_states), height, width, output_attentions)
        hidden_states = hidden_states + self.drop_path(attention_output)
        hidden_states = hidden_states + self.drop_path(self.mlp(self.layer_norm_2(hidden_states), height, width))
        return hidden_states, probs
