"""Adapter: mmsegmentation ``mit.py`` checkpoints -> the canonical (Hugging Face) names.

mmsegmentation's ``MixVisionTransformer`` (``mmseg/models/backbones/mit.py``; every SegFormer of mmseg 1.x's
model zoo, and of mmseg 0.x since ``mit.py`` replaced the original backbone) + ``SegformerHead`` store:

* ``backbone.layers.{i}.0.projection`` / ``.0.norm``: stage i's overlapping patch embedding (conv, LayerNorm);
* ``backbone.layers.{i}.1.{j}``: block j: ``norm1``, ``attn.attn.in_proj_weight`` / ``in_proj_bias``
  (``nn.MultiheadAttention``: query, key, value rows stacked in that order), ``attn.attn.out_proj``,
  ``attn.sr`` / ``attn.norm`` (sequence reduction), ``norm2``, ``ffn.layers.{0, 1, 4}`` (1x1 conv, depthwise
  3x3 conv, 1x1 conv);
* ``backbone.layers.{i}.2``: the stage norm;
* ``decode_head.convs.{i}.conv`` / ``.bn`` (1x1 conv without bias + BatchNorm, then ReLU),
  ``decode_head.fusion_conv.conv`` / ``.bn``, ``decode_head.conv_seg`` (the classifier): the ``"mmseg"``
  decode head type (:data:`segformer.common.model.config.DECODE_HEAD_TYPES`).

The wrappers: mmengine's ``{"meta", "state_dict"}`` (1.x: ``meta["dataset_meta"]["classes"]``, the config text
in ``meta["cfg"]``), mmcv's (0.x: ``meta["CLASSES"]``, ``meta["config"]``), a bare state dict, ``module.``
prefixes (DataParallel / DDP), and backbone-only files (``layers.*`` without ``backbone.``).

:data:`MMSEG_RENAMES` is the ordered rename list; :func:`map_mmseg_state` pops every key, splits ``in_proj``
into query / key / value, turns the 1x1 convs into linear weights and fails naming what is left over.
Every LayerNorm of ``mit.py`` uses eps 1e-6 (:data:`MMSEG_LAYER_NORM_EPS`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..common.checkpoints import CheckpointError
from ..common.model.weights import base_prefix
from .original import MMSEG_LAYOUT, OriginalCheckpoint, is_mmseg_state, unknown_keys_message

__all__ = ["MMSEG_RENAMES", "MMSEG_LAYER_NORM_EPS", "rename_mmseg_key", "map_mmseg_state"]

MMSEG_LAYER_NORM_EPS = 1e-6  # mit.py: norm_cfg=dict(type="LN", eps=1e-6) in every LayerNorm
_BLOCK = r"encoder\.layers\.(\d+)\.1\.(\d+)\."
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

# Ordered (pattern, replacement) list over "encoder." + the backbone key, or the head key; first full match wins.
MMSEG_RENAMES: tuple[tuple[str, str], ...] = (
    (r"encoder\.layers\.(\d+)\.0\.projection\.(weight|bias)", "encoder.patch_embeddings.{0}.proj.{1}"),
    (r"encoder\.layers\.(\d+)\.0\.norm\.(weight|bias)", "encoder.patch_embeddings.{0}.layer_norm.{1}"),
    (_BLOCK + r"norm1\.(weight|bias)", "encoder.block.{0}.{1}.layer_norm_1.{2}"),
    (_BLOCK + r"attn\.attn\.in_proj_(weight|bias)", "encoder.block.{0}.{1}.attention.self.qkv.{2}"),  # split below
    (_BLOCK + r"attn\.attn\.out_proj\.(weight|bias)", "encoder.block.{0}.{1}.attention.output.dense.{2}"),
    (_BLOCK + r"attn\.sr\.(weight|bias)", "encoder.block.{0}.{1}.attention.self.sr.{2}"),
    (_BLOCK + r"attn\.norm\.(weight|bias)", "encoder.block.{0}.{1}.attention.self.layer_norm.{2}"),
    (_BLOCK + r"norm2\.(weight|bias)", "encoder.block.{0}.{1}.layer_norm_2.{2}"),
    (_BLOCK + r"ffn\.layers\.0\.(weight|bias)", "encoder.block.{0}.{1}.mlp.dense1.{2}"),  # 1x1 conv
    (_BLOCK + r"ffn\.layers\.1\.(weight|bias)", "encoder.block.{0}.{1}.mlp.dwconv.dwconv.{2}"),
    (_BLOCK + r"ffn\.layers\.4\.(weight|bias)", "encoder.block.{0}.{1}.mlp.dense2.{2}"),  # 1x1 conv
    (r"encoder\.layers\.(\d+)\.2\.(weight|bias)", "encoder.layer_norm.{0}.{1}"),
    (r"decode_head\.convs\.(\d+)\.conv\.weight", "decode_head.linear_c.{0}.proj.weight"),  # 1x1 conv
    (r"decode_head\.convs\.(\d+)\.bn\." + _BN, "decode_head.linear_c.{0}.batch_norm.{1}"),
    (r"decode_head\.fusion_conv\.conv\.weight", "decode_head.linear_fuse.weight"),
    (r"decode_head\.fusion_conv\.bn\." + _BN, "decode_head.batch_norm.{0}"),
    (r"decode_head\.conv_seg\.(weight|bias)", "decode_head.classifier.{0}"),
)
_COMPILED = tuple((re.compile(pattern), replacement) for pattern, replacement in MMSEG_RENAMES)
# canonical weights that mmseg stores as 1x1 convs (O, I, 1, 1) and the canonical table as linear (O, I)
_CONV_TO_LINEAR = re.compile(r".*(mlp\.dense[12]|decode_head\.linear_c\.\d+\.proj)\.weight")


def rename_mmseg_key(key: str) -> str:
    """One prefix-free key (``"encoder." + backbone key`` or a ``decode_head.*`` key) -> canonical key without
    ``segformer.``; ``KeyError`` when no rule matches."""
    for pattern, replacement in _COMPILED:
        match = pattern.fullmatch(key)
        if match is not None:
            return replacement.format(*match.groups())
    raise KeyError(key)


def _split_prefix(key: str) -> str:
    if key.startswith("backbone."):
        return "encoder." + key.removeprefix("backbone.")
    if key.startswith("layers."):
        return "encoder." + key
    return key


def map_mmseg_state(checkpoint: OriginalCheckpoint, progress: Any = None) -> tuple[str, dict[str, np.ndarray], list[str]]:
    """Rename every ``mit.py`` tensor onto the canonical names; ``(task, state, dropped_keys)`` (nothing is dropped).

    ``in_proj_weight`` / ``in_proj_bias`` (3C rows) become ``query`` / ``key`` / ``value`` (C rows each, in that
    order); 1x1 conv weights of linear maps lose their two unit axes. Keys no rule matches raise
    :class:`CheckpointError` (one line: the format, the count, the first few keys).
    """
    source = dict(checkpoint.state)
    task = "semantic_segmentation" if any(k.startswith("decode_head.") for k in source) else "base"
    prefix = base_prefix(task)
    out: dict[str, np.ndarray] = {}
    leftover: list[str] = []
    for original_key in list(source):
        array = source.pop(original_key)
        if progress is not None:
            progress.update(1)
        try:
            name = rename_mmseg_key(_split_prefix(original_key))
        except KeyError:
            leftover.append(original_key)
            continue
        if name.startswith("encoder."):
            name = prefix + name
        if ".qkv." in name:
            rows = array.shape[0] if array.ndim else 0
            if rows == 0 or rows % 3:
                raise CheckpointError(
                    f"{checkpoint.path}: {original_key} has shape {array.shape}; nn.MultiheadAttention's in_proj stacks "
                    "query, key and value rows, so its row count must be a positive multiple of 3"
                )
            third = rows // 3
            for index, part in enumerate(("query", "key", "value")):
                out[name.replace(".qkv.", f".{part}.")] = np.ascontiguousarray(array[index * third : (index + 1) * third])
            continue
        if _CONV_TO_LINEAR.fullmatch(name):
            if array.ndim != 4 or array.shape[2:] != (1, 1):
                raise CheckpointError(f"{checkpoint.path}: {original_key} has shape {array.shape}; expected a 1x1 conv (O, I, 1, 1)")
            array = np.ascontiguousarray(array[:, :, 0, 0])
        if name in out:
            raise CheckpointError(f"{checkpoint.path}: two source tensors map to {name} (the second is {original_key})")
        out[name] = array
    if leftover:
        raise CheckpointError(unknown_keys_message(checkpoint.path, leftover, checkpoint.state))
    return task, out, []

