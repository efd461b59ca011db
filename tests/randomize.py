"""Seeded random values for every tensor of the canonical table (shared by PT and TF tests).

Identity-initialized norms hide swapped tensors, so LayerNorm gamma/beta and BatchNorm running
statistics are randomized too: gamma ~ 1 + N(0, 0.1), beta ~ N(0, 0.1), running_var ~ U[0.5, 1.5].
"""

from __future__ import annotations

import numpy as np

from segformer.common.model.config import SegformerConfig
from segformer.benchmark.randomize import random_value
from segformer.common.model.weights import parameter_table

__all__ = ["random_state", "tiny_config"]

# canonical table kind -> random_value role (every other kind is a shift)
_ROLES = {"linear": "kernel", "conv": "kernel", "dwconv": "kernel", "norm_weight": "scale", "bn_var": "variance"}


def random_state(config: SegformerConfig, task: str, seed: int = 0) -> dict[str, np.ndarray]:
    """``{canonical name: PyTorch-layout array}`` with every parameter and buffer randomized (the values by
    :func:`segformer.benchmark.randomize.random_value`'s rules, the roles from the canonical table)."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    for spec in parameter_table(config, task):
        if spec.kind == "counter":
            state[spec.name] = np.array(int(rng.integers(0, 1000)), dtype=np.int64)
            continue
        role = _ROLES.get(spec.kind, "shift")  # bias, norm_bias, bn_mean
        state[spec.name] = random_value(rng, tuple(spec.shape), role, int(np.prod(spec.shape[1:])))
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
