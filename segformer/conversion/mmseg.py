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
from typing import Any, Mapping

import numpy as np

from ..common.checkpoints import CheckpointError
from ..common.model.config import SegformerConfig
from ..common.model.weights import base_prefix, parameter_table
from .original import MMSEG_LAYOUT, OriginalCheckpoint, is_mmseg_state, map_state, split_fused_rows

__all__ = ["MMSEG_RENAMES", "MMSEG_LAYER_NORM_EPS", "rename_mmseg_key", "map_mmseg_state", "mmseg_refusals",
           "mmseg_config_text", "to_mmseg_state"]

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
    task = "semantic_segmentation" if any(k.startswith("decode_head.") for k in checkpoint.state) else "base"

    def convert(key: str, name: str, array: np.ndarray) -> dict[str, np.ndarray]:
        if ".qkv." in name:
            return split_fused_rows(checkpoint.path, key, array, name, ".qkv.", ("query", "key", "value"),
                                    "nn.MultiheadAttention's in_proj stacks query, key and value rows")
        if _CONV_TO_LINEAR.fullmatch(name):
            if array.ndim != 4 or array.shape[2:] != (1, 1):
                raise CheckpointError(f"{checkpoint.path}: {key} has shape {array.shape}; expected a 1x1 conv (O, I, 1, 1)")
            return {name: np.ascontiguousarray(array[:, :, 0, 0])}
        return {name: array}

    out, _ = map_state(checkpoint, task, lambda key: rename_mmseg_key(_split_prefix(key)), convert, progress)
    return task, out, []



# ------------------------------------------------------------------------------------ writing back
def mmseg_refusals(config: SegformerConfig, task: str) -> list[str]:
    """What mmseg's ``MixVisionTransformer`` + ``SegformerHead`` cannot represent of ``config`` (empty: writable)."""
    problems = []
    if task == "image_classification":
        problems.append("an image classifier (mmseg has no SegFormer classification model)")
    if task == "semantic_segmentation" and config.decode_head_type != "mmseg":
        problems.append(f"decode_head_type {config.decode_head_type!r} (mmseg's SegformerHead is decode_head_type 'mmseg')")
    for name in ("layer_norm_eps", "patch_layer_norm_eps", "stage_layer_norm_eps"):
        if getattr(config, name) != MMSEG_LAYER_NORM_EPS:
            problems.append(f"{name} {getattr(config, name):g} (mit.py uses {MMSEG_LAYER_NORM_EPS:g} in every LayerNorm)")
    if config.hidden_act != "gelu":
        problems.append(f"hidden_act {config.hidden_act!r} (mit.py uses the exact GELU)")
    if len(set(config.mlp_ratios)) != 1 or not float(config.mlp_ratios[0]).is_integer():
        problems.append(f"mlp_ratios {config.mlp_ratios} (mit.py has one integer mlp_ratio)")
    base = config.hidden_sizes[0] // config.num_attention_heads[0]
    if [base * h for h in config.num_attention_heads] != list(config.hidden_sizes):
        problems.append(f"hidden sizes {config.hidden_sizes} that are not embed_dims x num_attention_heads "
                        f"{config.num_attention_heads} (mit.py's rule)")
    return problems


def mmseg_config_text(config: SegformerConfig, task: str) -> str:
    """The model part of an mmseg config, as checkpoints' ``meta["cfg"]`` stores it (heads are read back from it)."""
    backbone = (
        f"dict(type='MixVisionTransformer', in_channels={config.num_channels}, "
        f"embed_dims={config.hidden_sizes[0] // config.num_attention_heads[0]}, num_stages={config.num_encoder_blocks}, "
        f"num_layers={list(config.depths)}, num_heads={list(config.num_attention_heads)}, "
        f"patch_sizes={list(config.patch_sizes)}, sr_ratios={list(config.sr_ratios)}, "
        f"out_indices={tuple(range(config.num_encoder_blocks))}, mlp_ratio={int(config.mlp_ratios[0])})"
    )
    head = ""
    if task == "semantic_segmentation":
        head = (
            f", decode_head=dict(type='SegformerHead', in_channels={list(config.hidden_sizes)}, "
            f"in_index={list(range(config.num_encoder_blocks))}, channels={config.decoder_hidden_size}, "
            f"dropout_ratio={config.classifier_dropout_prob}, num_classes={config.num_labels}, "
            "norm_cfg=dict(type='SyncBN', requires_grad=True), align_corners=False)"
        )
    return f"model = dict(type='EncoderDecoder', backbone={backbone}{head})\n"


def to_mmseg_state(config: SegformerConfig, task: str, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical tensors -> an mmseg 1.x ``EncoderDecoder`` state dict (:data:`MMSEG_RENAMES` backwards: query, key
    and value stacked into ``in_proj``, linear weights given their 1x1 conv axes)."""
    problems = mmseg_refusals(config, task)
    if problems:
        raise ValueError("mmsegmentation cannot represent this model: " + "; ".join(problems))
    prefix = base_prefix(task)
    out: dict[str, np.ndarray] = {}
    for spec in parameter_table(config, task):
        name = spec.name.removeprefix(prefix) if spec.name.startswith(prefix + "encoder.") else spec.name
        if re.search(r"\.attention\.self\.(key|value)\.", name):
            continue  # stacked with the query below
        key = next((k for k in _INVERSE if k[0].fullmatch(name.replace(".query.", ".qkv."))), None)
        if key is None:
            raise ValueError(f"no mmseg name for {spec.name}")  # cannot happen for a checked config
        match = key[0].fullmatch(name.replace(".query.", ".qkv."))
        target = key[1].format(*match.groups())
        array = np.asarray(state[spec.name])
        if ".query." in name:
            array = np.concatenate([np.asarray(state[spec.name.replace(".query.", f".{part}.")]) for part in ("query", "key", "value")])
        elif _CONV_TO_LINEAR.fullmatch(name):
            array = array[:, :, None, None]
        out[target] = np.array(array, order="C")  # (np.ascontiguousarray turns a 0-d counter into shape (1,))
    return out


def _inverse_rules() -> tuple:
    """:data:`MMSEG_RENAMES` backwards: (canonical pattern, mmseg key format), groups in the same order."""
    rules = []
    for pattern, replacement in MMSEG_RENAMES:
        groups = iter(re.findall(r"\((?:[^()]|\([^()]*\))*\)", pattern))
        canonical = re.escape(replacement)
        for index in range(replacement.count("{")):
            canonical = canonical.replace(re.escape("{%d}" % index), next(groups), 1)
        mmseg = re.sub(r"\((?:[^()]|\([^()]*\))*\)", "{}", pattern).replace("\\.", ".")
        mmseg = mmseg.replace("encoder.", "backbone.", 1) if mmseg.startswith("encoder.") else mmseg
        rules.append((re.compile(canonical), mmseg))
    return tuple(rules)


_INVERSE = _inverse_rules()
