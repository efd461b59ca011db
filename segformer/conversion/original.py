"""Adapter: original NVlabs / mmsegmentation SegFormer checkpoints -> the canonical (Hugging Face) names.

Two kinds of original files are understood (the layouts NVlabs' ``mmseg`` training and its ImageNet
release save):

* mmcv segmentation checkpoints ``{"state_dict": {...}, "meta": {...}}`` as ``EncoderDecoder`` saves them:
  ``backbone.patch_embed{1..4}``, ``backbone.block{1..4}.{j}.{norm1, attn.{q, kv, sr, norm, proj}, norm2,
  mlp.{fc1, dwconv.dwconv, fc2}}``, ``backbone.norm{1..4}``, ``decode_head.linear_c{1..4}.proj``,
  ``decode_head.linear_fuse.{conv, bn}``, ``decode_head.linear_pred`` and the unused ``decode_head.conv_seg``.
* encoder-only ImageNet files (``mit_b0.pth``): the backbone state dict without the ``backbone.`` prefix,
  plus ``head.weight`` / ``head.bias`` (an image classifier on the mean of stage 4).

mmsegmentation's own ``mit.py`` keys (``backbone.layers.*``) are detected here (layout :data:`MMSEG_LAYOUT`) and
mapped by :mod:`segformer.conversion.mmseg`. Keys no rule understands are refused in one line
(:func:`unknown_keys_message`: how many, the format they look like, the first few).

:func:`rename_original_key` is the ordered rename list (a small pure function, timm
``_checkpoint_filter_fn`` style); :func:`map_original_state` pops every key, splits the fused ``kv``
(key rows first, then value rows), drops ``conv_seg`` and fails listing anything left over.
:func:`infer_original_config` reads the architecture off the tensors. What the tensors cannot tell:

* strides: the MiT values (4 for stage 1, 2 after). The overlapping patch embedding's stride is not stored
  in any tensor; every released SegFormer / MiT model uses these.
* attention heads: ``--num-heads`` if given; else the ``num_heads`` of the mmseg config text stored in
  ``meta["config"]`` (or the MiT values when that config names ``mit_b0`` .. ``mit_b5``); else, when the
  hidden sizes are those of a known variant (b0, b1..b5), its heads [1, 2, 5, 8], said on the report's
  first line (an assumption: a wrong head count changes the outputs); else ``--num-heads`` is required.

The converted config uses the original's LayerNorm epsilons (``layer_norm_eps=1e-6`` for block and stage
norms, ``patch_layer_norm_eps=1e-5`` for patch-embedding and sequence-reduction norms), so the converted
model reproduces the original code's numbers.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..common.checkpoints import CheckpointError, read_torch_bin
from ..common.model.config import SegformerConfig
from ..common.model.weights import base_prefix

__all__ = [
    "ORIGINAL_RENAMES",
    "MIT_NUM_HEADS",
    "MIT_STRIDES",
    "ORIGINAL_LAYER_NORM_EPS",
    "ORIGINAL_PATCH_LAYER_NORM_EPS",
    "MMSEG_LAYOUT",
    "is_mmseg_state",
    "OriginalCheckpoint",
    "is_original_state",
    "read_original_checkpoint",
    "read_torch_object",
    "original_from_object",
    "rename_original_key",
    "map_original_state",
    "infer_original_config",
    "ASSUMED_PREFIX",
    "known_variant_heads",
    "heads_from_meta",
    "labels_from_meta",
    "palette_from_meta",
    "unknown_keys_message",
    "summarize_names",
    "looks_like",
]

MIT_NUM_HEADS = (1, 2, 5, 8)
ASSUMED_PREFIX = "ASSUMED "  # a note starting with it is a guess; the conversion report prints it first
MIT_FIRST_STRIDE = 4
MIT_LATER_STRIDE = 2
MIT_STRIDES = (MIT_FIRST_STRIDE, MIT_LATER_STRIDE, MIT_LATER_STRIDE, MIT_LATER_STRIDE)
ORIGINAL_LAYER_NORM_EPS = 1e-6
ORIGINAL_PATCH_LAYER_NORM_EPS = 1e-5

_DROP = None  # replacement meaning "consumed, not used by the model"


# Ordered (pattern, replacement) list over the key *after* the source prefix has been handled:
# encoder keys arrive as "encoder.<original backbone key>", head keys unchanged. The first full match wins.
# A replacement is a format string over the match groups (``{1}``, ``{2}`` ...) with the 1-based stage
# number of group 0 given 0-based as ``{s}``, or None (drop).
ORIGINAL_RENAMES: tuple[tuple[str, str | None], ...] = (
    (r"encoder\.patch_embed(\d+)\.proj\.(weight|bias)", "encoder.patch_embeddings.{s}.proj.{1}"),
    (r"encoder\.patch_embed(\d+)\.norm\.(weight|bias)", "encoder.patch_embeddings.{s}.layer_norm.{1}"),
    (r"encoder\.block(\d+)\.(\d+)\.norm1\.(weight|bias)", "encoder.block.{s}.{1}.layer_norm_1.{2}"),
    (r"encoder\.block(\d+)\.(\d+)\.norm2\.(weight|bias)", "encoder.block.{s}.{1}.layer_norm_2.{2}"),
    (r"encoder\.block(\d+)\.(\d+)\.attn\.q\.(weight|bias)", "encoder.block.{s}.{1}.attention.self.query.{2}"),
    (r"encoder\.block(\d+)\.(\d+)\.attn\.kv\.(weight|bias)", "encoder.block.{s}.{1}.attention.self.kv.{2}"),
    (r"encoder\.block(\d+)\.(\d+)\.attn\.sr\.(weight|bias)", "encoder.block.{s}.{1}.attention.self.sr.{2}"),
    (r"encoder\.block(\d+)\.(\d+)\.attn\.norm\.(weight|bias)", "encoder.block.{s}.{1}.attention.self.layer_norm.{2}"),
    (r"encoder\.block(\d+)\.(\d+)\.attn\.proj\.(weight|bias)", "encoder.block.{s}.{1}.attention.output.dense.{2}"),
    (r"encoder\.block(\d+)\.(\d+)\.mlp\.fc1\.(weight|bias)", "encoder.block.{s}.{1}.mlp.dense1.{2}"),
    (r"encoder\.block(\d+)\.(\d+)\.mlp\.dwconv\.dwconv\.(weight|bias)", "encoder.block.{s}.{1}.mlp.dwconv.dwconv.{2}"),
    (r"encoder\.block(\d+)\.(\d+)\.mlp\.fc2\.(weight|bias)", "encoder.block.{s}.{1}.mlp.dense2.{2}"),
    (r"encoder\.norm(\d+)\.(weight|bias)", "encoder.layer_norm.{s}.{1}"),
    (r"decode_head\.linear_c(\d+)\.proj\.(weight|bias)", "decode_head.linear_c.{s}.proj.{1}"),
    (r"decode_head\.linear_fuse\.conv\.(weight)", "decode_head.linear_fuse.{0}"),
    (
        r"decode_head\.linear_fuse\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)",
        "decode_head.batch_norm.{0}",
    ),
    (r"decode_head\.linear_pred\.(weight|bias)", "decode_head.classifier.{0}"),
    (r"decode_head\.conv_seg\.(weight|bias)", _DROP),  # mmseg BaseDecodeHead.conv_seg, unused by SegFormerHead
    (r"head\.(weight|bias)", "classifier.{0}"),  # encoder-only ImageNet head
)
_COMPILED = tuple((re.compile(pattern), replacement) for pattern, replacement in ORIGINAL_RENAMES)
_UNMATCHED = "<unmatched>"


def rename_original_key(key: str) -> str | None:
    """One prefix-free original key -> canonical key (without ``segformer.``), ``None`` if dropped.

    ``key`` is ``"encoder." + backbone key`` or a head key (``decode_head.*``, ``head.*``). Raises
    ``KeyError`` for a key that no rule matches.
    """
    for pattern, replacement in _COMPILED:
        match = pattern.fullmatch(key)
        if match is None:
            continue
        if replacement is None:
            return None
        groups = match.groups()
        if pattern.pattern.startswith(("encoder", r"decode_head\.linear_c")):
            stage = int(groups[0])
            if stage < 1:
                raise KeyError(f"{key}: stage numbers start at 1 in original checkpoints, got {stage}")
            return replacement.format(*groups, s=stage - 1)
        return replacement.format(*groups)
    raise KeyError(key)


MMSEG_LAYOUT = "mmseg-mit"  # mmsegmentation's mit.py keys, mapped by :mod:`segformer.conversion.mmseg`
_MMSEG_KEY = r"(module\.)?(backbone\.)?layers\.\d+\.0\.projection\."


def is_mmseg_state(state: Mapping[str, Any]) -> bool:
    """True when the keys are mmsegmentation ``mit.py``'s (``[module.][backbone.]layers.{i}.0.projection.*``)."""
    return any(re.match(_MMSEG_KEY, str(k)) for k in state)


def map_state(
    checkpoint: "OriginalCheckpoint",
    task: str,
    rename: Callable[[str], str | None],
    convert: Callable[[str, str, np.ndarray], dict[str, np.ndarray]],
    progress: Any = None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The one mapping loop of the ``.pth`` adapters (original NVlabs, mmseg ``mit.py``): every key is popped;
    ``rename(key)`` gives its canonical name without the task prefix (``None``: dropped; ``KeyError``: no rule
    knows it), ``convert(key, name, array)`` the canonical tensors it becomes (a fused tensor split, a 1x1 conv
    made linear). A name reached twice, and keys no rule knows (one line, :func:`unknown_keys_message`), are
    :class:`CheckpointError`. Returns ``(state, dropped_keys)``."""
    source = dict(checkpoint.state)
    prefix = base_prefix(task)
    out: dict[str, np.ndarray] = {}
    dropped: list[str] = []
    leftover: list[str] = []
    for original_key in list(source):
        array = source.pop(original_key)
        if progress is not None:
            progress.update(1)
        try:
            name = rename(original_key)
        except KeyError:
            leftover.append(original_key)
            continue
        if name is None:
            dropped.append(original_key)
            continue
        if name.startswith("encoder."):
            name = prefix + name
        for target, tensor in convert(original_key, name, array).items():
            if target in out:
                raise CheckpointError(f"{checkpoint.path}: two source tensors map to {target} (the second is {original_key})")
            out[target] = tensor
    if leftover:
        raise CheckpointError(unknown_keys_message(checkpoint.path, leftover, checkpoint.state))
    return out, dropped


def split_fused_rows(path: Any, key: str, array: np.ndarray, name: str, fused: str, parts: tuple[str, ...],
                     what: str) -> dict[str, np.ndarray]:
    """A tensor whose rows stack ``parts`` (original ``kv``; mmseg's ``in_proj`` = query, key, value) split into
    one canonical tensor per part: ``name`` with ``fused`` (``".kv."``) replaced by ``".{part}."``. A row count
    that is not a positive multiple of ``len(parts)`` is a :class:`CheckpointError` naming ``key`` and ``what``."""
    rows = array.shape[0] if array.ndim else 0
    if rows == 0 or rows % len(parts):
        raise CheckpointError(
            f"{path}: {key} has shape {array.shape}; {what}, so its row count must be a positive multiple of {len(parts)}"
        )
    step = rows // len(parts)
    return {name.replace(fused, f".{part}."): np.ascontiguousarray(array[i * step : (i + 1) * step])
            for i, part in enumerate(parts)}


def is_original_state(state: Mapping[str, Any]) -> bool:
    """True for an mmcv / mmengine checkpoint (``state_dict`` inside) or a plain original or mmseg ``mit.py``
    state dict (also under ``model``, and with the ``module.`` prefix of DataParallel / DDP)."""
    if isinstance(state.get("state_dict"), Mapping):
        return True
    if isinstance(state.get("model"), Mapping):
        state = state["model"]
    return is_mmseg_state(state) or any(
        str(k).removeprefix("module.").startswith(("patch_embed1.", "backbone.patch_embed1."))
        or str(k).startswith("module.backbone.")
        for k in state
    )


SHOWN_NAMES = 5  # an error lists this many names of a long list, then how many more


def summarize_names(names: Iterable[str], limit: int = SHOWN_NAMES) -> str:
    """``"a, b, c"``, or the first ``limit`` names and ``"... and N more"`` (sorted): one readable line."""
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} ... and {len(names) - limit} more"


# (key pattern, what a state dict holding such a key looks like), first match wins
_FORMAT_HINTS: tuple[tuple[str, str], ...] = (
    (_MMSEG_KEY, "an mmsegmentation mit.py checkpoint (1.x / 0.x)"),
    (r"(module\.)?(backbone\.)?(patch_embed1|block1)\.", "an original NVlabs SegFormer checkpoint"),
    (r"(segformer\.)?encoder\.(patch_embeddings|block)\.", "a Hugging Face transformers SegFormer state dict"),
    (r"(module\.)?backbone\.", "an mmsegmentation / mmcv checkpoint of another backbone"),
    (r"(module\.)?(model\.)?(stem|stages|blocks)\.", "a timm-style image backbone"),
)


def looks_like(keys: Iterable[str]) -> str:
    """The checkpoint format a set of tensor names looks like, in words (``"an unknown format"`` if none)."""
    keys = list(keys)
    for pattern, name in _FORMAT_HINTS:
        if any(re.match(pattern, str(k)) for k in keys):
            return name
    return "an unknown format"


def unknown_keys_message(path: Any, leftover: Iterable[str], all_keys: Iterable[str]) -> str:
    """The one-line error for tensors no rename rule understands: how many, what the file looks like, the first few."""
    leftover = list(leftover)
    return (
        f"{path}: {len(leftover)} tensor(s) that no rename rule understands (nothing was converted; the keys look like "
        f"{looks_like(all_keys)}): {summarize_names(leftover)}"
    )


@dataclass
class OriginalCheckpoint:
    """What :func:`read_original_checkpoint` found: the tensors (original names), the meta dict, the layout."""

    path: Path
    state: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    # "mmseg" (original backbone.* / decode_head.*), "encoder" (plain backbone + head.*) or "mmseg-mit"
    # (mmsegmentation's mit.py keys, :mod:`segformer.conversion.mmseg`)
    layout: str = "mmseg"


def explain_torch_refusal(err: CheckpointError) -> CheckpointError:
    """``err`` with what to do when ``torch.load(weights_only=True)`` refused a pickle (any other error as is)."""
    if "refused" not in str(err):
        return err
    return CheckpointError(
        f"{err}\nThe mmcv 'meta' dict (or another entry) holds objects that torch.load(weights_only=True) "
        "refuses. This converter does not load files unsafely. If you trust the file, re-save only its "
        "tensors in a trusted environment, e.g. torch.save({'state_dict': torch.load(p, weights_only=False)"
        "['state_dict']}, 'clean.pth'), and convert that."
    )


def read_torch_object(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` into numpy; never falls back to unsafe loading.

    A refusal (an mmcv ``meta`` dict holding objects other than tensors and plain containers) is a
    :class:`CheckpointError` that says so and how to re-save the tensors alone.
    """
    try:
        return read_torch_bin(Path(path))
    except CheckpointError as err:
        raise explain_torch_refusal(err) from None


def read_original_checkpoint(path: str | os.PathLike) -> OriginalCheckpoint:
    """Read an original ``.pth`` with ``torch.load(weights_only=True)``; never falls back to unsafe loading.

    Raises :class:`CheckpointError` naming the file when it cannot be read safely or is not an original
    SegFormer checkpoint.
    """
    return original_from_object(read_torch_object(path), Path(path))


def original_from_object(obj: Any, path: Path) -> OriginalCheckpoint:
    """Split a loaded original checkpoint into tensors, meta and layout (see :func:`read_original_checkpoint`)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict in the original checkpoint, got {type(obj).__name__}")
    meta: dict[str, Any] = {}
    if isinstance(obj.get("state_dict"), Mapping):
        meta = dict(obj["meta"]) if isinstance(obj.get("meta"), Mapping) else {}
        state = dict(obj["state_dict"])
    elif isinstance(obj.get("model"), Mapping) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        state = dict(obj["model"])  # some training scripts save {"model": state_dict}
    else:
        state = dict(obj)
    if any(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel / DDP prefix
    not_arrays = sorted(k for k, v in state.items() if not isinstance(v, np.ndarray))
    if not_arrays:
        raise CheckpointError(f"{path}: entries of the state dict that are not tensors: {not_arrays[:10]}")
    if is_mmseg_state(state):
        layout = MMSEG_LAYOUT
    elif any(k.startswith("backbone.") for k in state):
        layout = "mmseg"
    elif any(k.startswith("patch_embed1.") for k in state):
        layout = "encoder"
    else:
        raise CheckpointError(
            f"{path}: not a SegFormer checkpoint of the original code or mmsegmentation: expected "
            "'backbone.patch_embed1.*' (original mmseg), 'patch_embed1.*' (encoder-only mit_b*.pth) or "
            f"'backbone.layers.0.0.projection.*' (mmsegmentation mit.py) keys; {len(state)} tensor(s) that look like "
            f"{looks_like(state)}: {summarize_names(state)}"
        )
    return OriginalCheckpoint(path=path, state=state, meta=meta, layout=layout)


def _split_prefix(key: str, layout: str) -> str:
    """Original key -> the ``encoder.`` / head spelling that :data:`ORIGINAL_RENAMES` reads."""
    if layout == "mmseg":
        if key.startswith("backbone."):
            return "encoder." + key.removeprefix("backbone.")
        return key
    if key.startswith("head."):
        return key
    return "encoder." + key


def _original_task(keys: Iterable[str]) -> str:
    keys = list(keys)
    if any(k.startswith("decode_head.") for k in keys):
        return "semantic_segmentation"
    if any(k.startswith("head.") for k in keys):
        return "image_classification"
    return "base"


def map_original_state(
    checkpoint: OriginalCheckpoint, progress: Any = None
) -> tuple[str, dict[str, np.ndarray], list[str]]:
    """Rename every original tensor onto the canonical names; ``(task, state, dropped_keys)``.

    Every source key is popped; ``kv`` is split into ``key`` (first C rows) and ``value`` (last C rows);
    ``decode_head.conv_seg.*`` is dropped (listed in ``dropped_keys``). Keys no rule matches raise
    ``CheckpointError`` listing all of them. ``progress`` is an optional tqdm-like object (``update(n)``).
    """
    task = _original_task(checkpoint.state)

    def convert(key: str, name: str, array: np.ndarray) -> dict[str, np.ndarray]:
        if name.endswith((".kv.weight", ".kv.bias")):
            return split_fused_rows(checkpoint.path, key, array, name, ".kv.", ("key", "value"),
                                    "a fused kv holds key rows then value rows")
        return {name: array}

    out, dropped = map_state(checkpoint, task, lambda key: rename_original_key(_split_prefix(key, checkpoint.layout)),
                             convert, progress)
    return task, out, dropped


# --------------------------------------------------------------------------------------- architecture
def _stage_count(state: Mapping[str, np.ndarray], prefix: str) -> int:
    count = 0
    while f"{prefix}encoder.patch_embeddings.{count}.proj.weight" in state:
        count += 1
    return count


def heads_from_meta(meta: Mapping[str, Any]) -> tuple[list[int] | None, str]:
    """``(num_heads, where)`` from the mmseg config text in ``meta["config"]``, or ``(None, reason)``."""
    text = None
    if isinstance(meta, Mapping):  # mmcv (0.x) stores the config text as "config", mmengine (1.x) as "cfg"
        text = next((meta[key] for key in ("config", "cfg") if isinstance(meta.get(key), str)), None)
    if not isinstance(text, str):
        return None, "no mmseg config text in the checkpoint's meta"
    match = re.search(r"['\"]?num_heads['\"]?\s*[:=]\s*(\[[^\]]*\]|\([^)]*\))", text)
    if match:
        try:
            heads = [int(h) for h in ast.literal_eval(match.group(1))]
        except (ValueError, SyntaxError, TypeError, OverflowError, RecursionError, MemoryError):
            return None, f"meta config num_heads {match.group(1)[:80]!r} is not a list of integers"
        return heads, "the mmseg config stored in the checkpoint's meta (num_heads)"
    match = re.search(r"['\"]?type['\"]?\s*[:=]\s*['\"]mit_b([0-5])['\"]", text)
    if match:
        return list(MIT_NUM_HEADS), f"the mmseg config stored in the checkpoint's meta (backbone mit_b{match.group(1)})"
    return None, "the checkpoint's meta config names no num_heads"


def known_variant_heads(hidden_sizes: list[int]) -> tuple[list[int], str] | None:
    """``(heads, variant names)`` when ``hidden_sizes`` are those of a known MiT variant (b0, b1..b5), else ``None``."""
    from ..common.model.variants import VARIANTS

    names = [name for name, spec in VARIANTS.items() if list(spec["hidden_sizes"]) == list(hidden_sizes)]
    if not names:
        return None
    return list(MIT_NUM_HEADS), names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"


def labels_from_meta(meta: Mapping[str, Any], num_labels: int) -> dict[int, str] | None:
    """``id2label`` from mmseg's ``meta["dataset_meta"]["classes"]`` (1.x) or ``meta["CLASSES"]`` (0.x) when it
    has ``num_labels`` names, else ``None``."""
    classes = None
    if isinstance(meta, Mapping):
        dataset_meta = meta.get("dataset_meta")
        classes = dataset_meta.get("classes") if isinstance(dataset_meta, Mapping) else None
        classes = meta.get("CLASSES") if classes is None else classes
    if isinstance(classes, (list, tuple)) and len(classes) == num_labels and all(isinstance(c, str) for c in classes):
        return {i: name for i, name in enumerate(classes)}
    return None


def palette_from_meta(meta: Mapping[str, Any], num_labels: int) -> list[list[int]] | None:
    """The colours of mmseg's ``meta["dataset_meta"]["palette"]`` (1.x) or ``meta["PALETTE"]`` (0.x) as a list of
    ``num_labels`` RGB triples, or ``None`` when absent or not that (the model card and ``predict`` then pick one)."""
    from ..common.images.labels import checkpoint_palette

    palette = None
    if isinstance(meta, Mapping):
        dataset_meta = meta.get("dataset_meta")
        palette = dataset_meta.get("palette") if isinstance(dataset_meta, Mapping) else None
        palette = meta.get("PALETTE") if palette is None else palette
    array = checkpoint_palette(palette, num_labels)
    return None if array is None or len(array) != num_labels else array.tolist()


def _tensor(state: Mapping[str, np.ndarray], name: str, source: str, ndim: int, original: str) -> np.ndarray:
    """``state[name]``, checked: present, ``ndim`` dimensions, none of them empty; else a :class:`CheckpointError`
    naming the tensor (``original``: its name in the original checkpoint)."""
    if name not in state:
        raise CheckpointError(f"{source}: tensor {original} ({name}) is missing")
    array = np.asarray(state[name])
    if array.ndim != ndim or 0 in array.shape:
        raise CheckpointError(
            f"{source}: tensor {original} ({name}) has shape {array.shape}; expected {ndim} non-empty dimensions"
        )
    return array


def infer_original_config(
    state: Mapping[str, np.ndarray],
    task: str,
    num_heads: list[int] | None = None,
    meta: Mapping[str, Any] | None = None,
    source: str = "checkpoint",
) -> tuple[SegformerConfig, list[str]]:
    """Read the architecture off canonical-named tensors (PyTorch layout); ``(config, notes)``.

    Stages, depths, hidden sizes, channels, patch sizes (proj kernels), sr ratios (``sr`` kernels), mlp
    ratios (``dense1`` rows), decoder width, number of labels come from the tensors; strides are the MiT
    values; heads from ``num_heads``, the meta config, or MiT defaults (see the module docstring).
    Raises ``CheckpointError`` naming the tensor when the shapes are inconsistent.
    """
    notes: list[str] = []
    prefix = base_prefix(task)
    stages = _stage_count(state, prefix)
    if stages == 0:
        raise CheckpointError(f"{source}: no patch embedding tensors (patch_embed1.proj.weight) found")
    hidden_sizes, patch_sizes, depths, sr_ratios, mlp_ratios = [], [], [], [], []
    num_channels = 0
    for i in range(stages):
        proj = _tensor(state, f"{prefix}encoder.patch_embeddings.{i}.proj.weight", source, 4, f"patch_embed{i + 1}.proj.weight")
        if proj.shape[2] != proj.shape[3]:
            raise CheckpointError(f"{source}: patch_embed{i + 1}.proj.weight has shape {proj.shape}; expected a square conv kernel")
        if i == 0:
            num_channels = int(proj.shape[1])
        elif proj.shape[1] != hidden_sizes[-1]:
            raise CheckpointError(
                f"{source}: patch_embed{i + 1}.proj.weight takes {proj.shape[1]} channels but stage {i} has {hidden_sizes[-1]}"
            )
        hidden = int(proj.shape[0])
        hidden_sizes.append(hidden)
        patch_sizes.append(int(proj.shape[2]))
        depth = 0
        while f"{prefix}encoder.block.{i}.{depth}.attention.self.query.weight" in state:
            depth += 1
        if depth == 0:
            raise CheckpointError(f"{source}: stage {i + 1} has no blocks (block{i + 1}.0.attn.q.weight missing)")
        depths.append(depth)
        sr_name = f"{prefix}encoder.block.{i}.0.attention.self.sr.weight"
        sr = _tensor(state, sr_name, source, 4, f"block{i + 1}.0.attn.sr.weight") if sr_name in state else None
        sr_ratios.append(int(sr.shape[2]) if sr is not None else 1)
        fc1 = _tensor(state, f"{prefix}encoder.block.{i}.0.mlp.dense1.weight", source, 2, f"block{i + 1}.0.mlp.fc1.weight")
        ratio = fc1.shape[0] / hidden
        mlp_ratios.append(int(ratio) if float(ratio).is_integer() else float(ratio))
        if int(hidden * mlp_ratios[-1]) != fc1.shape[0]:
            raise CheckpointError(f"{source}: block{i + 1}.0.mlp.fc1 has {fc1.shape[0]} rows, not a ratio of hidden size {hidden}")
    if num_heads is not None:
        heads = [int(h) for h in num_heads]
        heads_source = "--num-heads"
        if len(heads) != stages:
            raise ValueError(f"--num-heads must give one head count per stage ({stages} stages), got {heads}")
    else:
        heads, why = heads_from_meta(meta or {})
        heads_source = why
        if heads is not None and (len(heads) != stages or any(h < 1 or c % h for h, c in zip(heads, hidden_sizes))):
            notes.append(f"ignored num_heads {heads} from the meta config: it does not fit hidden sizes {hidden_sizes}")
            heads = None
        if heads is None:
            known = known_variant_heads(hidden_sizes)
            if known is None:
                raise ValueError(
                    f"{source}: the attention heads are not stored in any tensor ({why}) and hidden sizes "
                    f"{hidden_sizes} match no known variant (b0 {[32, 64, 160, 256]}, b1..b5 {[64, 128, 320, 512]}); "
                    "pass --num-heads H1,H2,... (num_heads=[...]), the head count per stage it was trained with"
                )
            heads, variant = known
            heads_source = f"{ASSUMED_PREFIX}the known variant {variant}'s heads, hidden sizes {hidden_sizes} ({why})"
    for i, (hidden, h) in enumerate(zip(hidden_sizes, heads)):
        if h < 1 or hidden % h:
            divisors = [d for d in range(1, hidden + 1) if hidden % d == 0]
            raise ValueError(
                f"--num-heads {','.join(map(str, heads))}: stage {i + 1} has hidden size {hidden}, which {h} heads "
                f"do not divide; valid head counts for it: {divisors}"
            )
    if heads_source.startswith(ASSUMED_PREFIX):
        notes.append(f"{ASSUMED_PREFIX}attention heads {heads}: {heads_source[len(ASSUMED_PREFIX):]}")
    else:
        notes.append(f"attention heads {heads} from {heads_source}")
    strides = [MIT_FIRST_STRIDE] + [MIT_LATER_STRIDE] * (stages - 1)
    notes.append(f"patch-embedding strides {strides}: the MiT values (strides are not stored in the tensors)")
    kwargs: dict[str, Any] = dict(
        num_channels=num_channels,
        num_encoder_blocks=stages,
        depths=depths,
        sr_ratios=sr_ratios,
        hidden_sizes=hidden_sizes,
        patch_sizes=patch_sizes,
        strides=strides,
        num_attention_heads=heads,
        mlp_ratios=mlp_ratios,
        layer_norm_eps=ORIGINAL_LAYER_NORM_EPS,
        patch_layer_norm_eps=ORIGINAL_PATCH_LAYER_NORM_EPS,
    )
    if task == "semantic_segmentation":
        linear_c = _tensor(state, "decode_head.linear_c.0.proj.weight", source, 2, "decode_head.linear_c1.proj.weight")
        kwargs["decoder_hidden_size"] = int(linear_c.shape[0])
        classifier = _tensor(state, "decode_head.classifier.weight", source, 4, "decode_head.linear_pred.weight")
        kwargs["num_labels"] = int(classifier.shape[0])
    elif task == "image_classification":
        kwargs["num_labels"] = int(_tensor(state, "classifier.weight", source, 2, "head.weight").shape[0])
    try:
        config = SegformerConfig(**kwargs)
    except ValueError as err:
        raise CheckpointError(f"{source}: the tensors describe an invalid architecture: {err}") from None
    return config, notes
