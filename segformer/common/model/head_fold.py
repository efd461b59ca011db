"""The decode head's eval fast path as one derivation, computed on either framework's weights.

The plain head computes, per position, ``BN(W_fuse @ concat(up(P_n x_n + b_n), ..., up(P_1 x_1 + b_1)))``
with ``W_fuse`` the (D, n*D) 1x1 ``linear_fuse`` (concatenation order stage n..1, so stage i's block is
columns ``[(n-1-i) D, (n-i) D)``), ``P_i`` / ``b_i`` the stage's ``proj`` and ``up`` the bilinear upsampling
to the stage-1 size. ``linear_fuse`` is linear, so its block for stage i folds into that stage's ``proj``
(``M_i = W_fuse[:, block_i] @ P_i``, a D x C_i matrix) and runs at the stage's own resolution; bilinear
upsampling is linear with weights summing to one, so it commutes with the map and the folded biases add
after it; eval BatchNorm is the affine map ``x * scale + (beta - mean * scale)`` with
``scale = gamma / sqrt(var + eps)``. So

    fused = sum_i up(M_i x_i) + shift,    shift = beta - mean * scale + sum_i W_fuse[:, block_i] b_i

:func:`fold_decode_head` returns ``[M_i]`` and ``shift`` for numpy arrays, torch tensors or TF tensors
(only ``*``, ``**``, ``@``, ``+`` and slicing are used), in the (out, in) layout of a PyTorch ``Linear``.

The mmseg head (``decode_head_type="mmseg"``) computes ``BN_f(W_fuse @ concat(up(relu(BN_1(P_1 x_1))), ...,
up(relu(BN_n(P_n x_n)))))`` (concatenation order stage 1..n, so stage i's block is columns ``[i D, (i+1) D)``;
``P_i`` without bias). The ReLU after each stage's BatchNorm stops the fold across stages; what folds:

* each stage's eval BatchNorm into its ``proj``: ``A_i = scale_i * P_i``, ``c_i = beta_i - mean_i * scale_i``;
* the fuse BatchNorm's scale into ``W_fuse``, and ``W_fuse``'s block for stage i moved before the upsampling
  (linear maps commute with it): ``F_i = scale_f * W_fuse[:, block_i]`` runs at the stage's own resolution.

So ``fused = sum_i up(F_i relu(A_i x_i + c_i)) + shift`` with ``shift = beta_f - mean_f * scale_f``
(:func:`fold_mmseg_decode_head`); the n*D-channel concatenation at the stage-1 size is never built.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["fold_decode_head", "fold_mmseg_decode_head"]


def fold_decode_head(
    fuse_weight: Any,
    proj_weights: Sequence[Any],
    proj_biases: Sequence[Any],
    bn_weight: Any,
    bn_bias: Any,
    bn_mean: Any,
    bn_var: Any,
    bn_eps: float,
) -> tuple[list[Any], Any]:
    """``fuse_weight`` (D, n*D), ``proj_weights[i]`` (D, C_i), ``proj_biases[i]`` (D,), BatchNorm (D,) each
    -> (``[M_i]`` each (D, C_i), ``shift`` (D,)): the eval head is ``sum_i up(M_i x_i) + shift``."""
    n = len(proj_weights)
    d = fuse_weight.shape[0]
    scale = bn_weight * (bn_var + bn_eps) ** -0.5  # (D,)
    fuse = fuse_weight * scale[:, None]  # BatchNorm scale folded into the fuse
    shift = bn_bias - bn_mean * scale
    weights = []
    for i, (weight, bias) in enumerate(zip(proj_weights, proj_biases)):
        block = fuse[:, (n - 1 - i) * d : (n - i) * d]  # (D, D): concatenation order is stage n..1
        weights.append(block @ weight)
        shift = shift + (block @ bias[:, None])[:, 0]
    return weights, shift


def fold_mmseg_decode_head(
    fuse_weight: Any,
    proj_weights: Sequence[Any],
    proj_batch_norms: Sequence[Sequence[Any]],
    fuse_batch_norm: Sequence[Any],
    bn_eps: float,
) -> tuple[list[Any], list[Any], list[Any], Any]:
    """``fuse_weight`` (D, n*D), ``proj_weights[i]`` (D, C_i), each BatchNorm ``(weight, bias, mean, var)``
    -> (``[A_i]`` (D, C_i), ``[c_i]`` (D,), ``[F_i]`` (D, D), ``shift`` (D,)): the eval mmseg head before its
    final ReLU is ``sum_i up(F_i relu(A_i x_i + c_i)) + shift``."""
    d = fuse_weight.shape[0]
    stage_weights, stage_biases, blocks = [], [], []
    for i, (weight, (gamma, beta, mean, var)) in enumerate(zip(proj_weights, proj_batch_norms)):
        scale = gamma * (var + bn_eps) ** -0.5
        stage_weights.append(weight * scale[:, None])
        stage_biases.append(beta - mean * scale)
    gamma, beta, mean, var = fuse_batch_norm
    scale = gamma * (var + bn_eps) ** -0.5
    fuse = fuse_weight * scale[:, None]
    for i in range(len(proj_weights)):
        blocks.append(fuse[:, i * d : (i + 1) * d])  # concatenation order is stage 1..n
    return stage_weights, stage_biases, blocks, beta - mean * scale
