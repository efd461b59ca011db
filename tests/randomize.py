"""Seeded random values for every tensor of the canonical table (shared by PT and TF tests).

Identity-initialized norms hide swapped tensors, so LayerNorm gamma/beta and BatchNorm running
statistics are randomized too: gamma ~ 1 + N(0, 0.1), beta ~ N(0, 0.1), running_var ~ U[0.5, 1.5].
"""

from __future__ import annotations

import numpy as np

from segformer.common.model.config import SegformerConfig
from segformer.common.model.weights import parameter_table

__all__ = ["random_state", "tiny_config"]


def random_state(config: SegformerConfig, task: str, seed: int = 0) -> dict[str, np.ndarray]:
    """``{canonical name: PyTorch-layout array}`` with every parameter and buffer randomized."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    for spec in parameter_table(config, task):
        if spec.kind == "counter":
            state[spec.name] = np.array(int(rng.integers(0, 1000)), dtype=np.int64)
            continue
        if spec.kind in ("linear", "conv", "dwconv"):
            fan_in = int(np.prod(spec.shape[1:]))
            std = float(np.clip(1.0 / np.sqrt(fan_in), 0.02, 0.2))
            value = rng.normal(0.0, std, spec.shape)
        elif spec.kind == "norm_weight":
            value = 1.0 + rng.normal(0.0, 0.1, spec.shape)
        elif spec.kind == "bn_var":
            value = rng.uniform(0.5, 1.5, spec.shape)
        else:  # bias, norm_bias, bn_mean
            value = rng.normal(0.0, 0.1, spec.shape)
        state[spec.name] = value.astype(np.float32)
    return state


def tiny_config(**overrides) -> SegformerConfig:
    """The Hugging Face tester's tiny architecture (depths 1, hidden 8/8/16/16), dropout off."""
    kwargs = dict(
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 8, 16, 16],
        num_attention_heads=[1, 1, 2, 2],
        decoder_hidden_size=16,
        num_labels=3,
        drop_path_rate=0.0,
        classifier_dropout_prob=0.0,
    )
    kwargs.update(overrides)
    return SegformerConfig(**kwargs)
