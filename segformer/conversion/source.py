"""Reading a conversion source onto the canonical table (:func:`read_source`) and setting its labels
(:func:`apply_labels`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..common.checkpoints import (
    CheckpointError,
    check_keras_version,
    detect_format,
    find_weights_file,
    match_state_dict,
    read_checkpoint,
)
from ..common.model.config import CONFIG_NAME, HF_LAYER_NORM_EPS, SegformerConfig
from ..common.base.deps import require
from ..common.checkpoints.keras_hub_io import keras_hub_preset_folder
from ..common.checkpoints.pretrained import canonical_state
from ..common.model.weights import BASE_MODEL_PREFIX, canonical_task, parameter_table
from .original import (
    OriginalCheckpoint,
    explain_torch_refusal,
    infer_original_config,
    is_original_state,
    labels_from_meta,
    palette_from_meta,
    map_original_state,
    original_from_object,
)
from .mmseg import MMSEG_LAYER_NORM_EPS, MMSEG_LAYOUT, map_mmseg_state
from .report import ConversionError


@dataclass
class SourceCheckpoint:
    """A source read onto the canonical table: config, task, tensors (PyTorch layout), provenance."""

    path: Path
    kind: str  # "hf-pt", "hf-tf", "keras", "keras-hub", "original-mmseg", "original-encoder", "mmseg-mit"
    framework: str | None  # "pt" / "tf" for Hugging Face / Keras sources, None for original checkpoints
    task: str
    config: SegformerConfig
    state: dict[str, np.ndarray]
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dropped_keys: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def detect_task(names: Sequence[str]) -> str:
    """The task a set of canonical (PyTorch) or TF tensor names belongs to.

    ``decode_head.*`` -> semantic segmentation; a top-level ``classifier`` -> image classification;
    otherwise the base model.
    """
    names = list(names)
    if any(n.startswith(("decode_head.", "decode_head/")) for n in names):
        return "semantic_segmentation"
    if any(n.startswith(("classifier.", "classifier/")) for n in names):
        return "image_classification"
    return "base"


def _weights_in_folder(folder: Path, to: str, source_framework: str | None) -> Path:
    """The source file of a folder: ``--from``'s framework only, else the other framework's file first (a
    folder holding both converts from the framework it is not converted to)."""
    pt_kinds, tf_kinds = ("safetensors", "torch"), ("h5", "keras")
    if source_framework == "pt":
        prefer = pt_kinds
    elif source_framework == "tf":
        prefer = tf_kinds
    else:
        prefer = pt_kinds + tf_kinds if to == "tf" else tf_kinds + pt_kinds
    try:
        return find_weights_file(folder, prefer)
    except FileNotFoundError as err:
        wanted = f" for --from {source_framework}" if source_framework else ""
        raise FileNotFoundError(f"source folder {folder}{wanted}: {err}") from None


def _strip_base_prefix(state: dict[str, np.ndarray], task: str) -> dict[str, np.ndarray]:
    if task == "base" and any(k.startswith(BASE_MODEL_PREFIX) for k in state):
        return {k.removeprefix(BASE_MODEL_PREFIX): v for k, v in state.items()}
    return state


def _check_against_table(
    state: Mapping[str, np.ndarray], config: SegformerConfig, task: str, source: Path, fill_counters: bool
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Match ``state`` with the canonical table; every tensor consumed, none missing, shapes equal."""
    specs = parameter_table(config, task)
    try:
        tensors, report = match_state_dict(state, specs)
    except ValueError as err:  # shape mismatch / wrong dtype
        raise ConversionError(f"{source}: {err} (config: depths {config.depths}, hidden sizes {config.hidden_sizes})") from None
    notes: list[str] = []
    counters = [k for k in report.missing_keys if k.endswith("num_batches_tracked")]
    missing = [k for k in report.missing_keys if k not in counters]
    if counters and fill_counters:
        for name in counters:
            tensors[name] = np.array(0, dtype=np.int64)
        notes.append(f"{', '.join(counters)}: not stored in the source (Keras has no such variable); set to 0")
    elif counters:
        missing += counters
    problems = []
    if missing:
        problems.append(f"missing from the source ({len(missing)}): {', '.join(missing)}")
    if report.unexpected_keys:
        problems.append(f"left over in the source ({len(report.unexpected_keys)}): {', '.join(report.unexpected_keys)}")
    if report.nonfinite_keys:
        problems.append(f"NaN / Inf values in: {', '.join(report.nonfinite_keys)}")
    if problems:
        raise ConversionError(
            f"{source} does not match a {task} model with depths {config.depths}, hidden sizes "
            f"{config.hidden_sizes}:\n" + "\n".join(problems)
        )
    return tensors, notes


def _config_beside(weights: Path, config_path: Path | None) -> SegformerConfig | None:
    path = config_path if config_path is not None else weights.parent / CONFIG_NAME
    if path.is_file():
        return SegformerConfig.from_json_file(path)
    return None


def _read_keras(path: Path) -> tuple[SegformerConfig, str, dict[str, np.ndarray]]:
    """Config, task and canonical tensors of one of our ``.keras`` archives (loaded in Keras safe mode)."""
    keras = require("keras", f"reading {os.fspath(path)!r} (a .keras archive)")
    from .. import tf as segformer_tf  # noqa: F401  (registers the serializable classes)

    check_keras_version(path)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # keras raises many types for foreign / damaged archives
        raise CheckpointError(f"{path}: not a SegFormer .keras archive that loads in safe mode ({type(err).__name__})") from None
    task = getattr(model, "_task", None)
    if task is None or not hasattr(model, "state_dict_numpy"):
        raise CheckpointError(f"{path}: the .keras archive holds a {type(model).__name__}, not a SegFormer model")
    return model.config, canonical_task(task), model.state_dict_numpy()


def read_source(
    src: str | os.PathLike,
    to: str = "pt",
    num_heads: Sequence[int] | None = None,
    source_framework: str | None = None,
    config_path: str | os.PathLike | None = None,
    progress: Any = None,
) -> SourceCheckpoint:
    """Read ``src`` (folder or file, kind detected from the content) onto the canonical table.

    ``num_heads`` is only for sources without a ``config.json`` (original checkpoints, bare weights
    files); ``source_framework`` (``"pt"`` / ``"tf"``) picks the weights of a folder that has both.
    """
    path = Path(src)
    if not path.exists():
        raise FileNotFoundError(f"source {os.fspath(src)!r} does not exist")
    if source_framework not in (None, "pt", "tf"):
        raise ValueError(f"source_framework must be 'pt', 'tf' or None, got {source_framework!r}")
    preset = keras_hub_preset_folder(path)
    if preset is not None:
        from .keras_hub import read_keras_hub_source

        if num_heads is not None:
            raise ConversionError(f"--num-heads: {preset} is a keras-hub preset; its config.json gives the heads")
        config, state, notes, meta = read_keras_hub_source(preset)
        task = "semantic_segmentation"
        tensors, extra = _check_against_table(state, config, task, preset, fill_counters=True)
        return SourceCheckpoint(preset, "keras-hub", None, task, config, tensors, [preset], notes + extra, meta=meta)
    weights = _weights_in_folder(path, to, source_framework) if path.is_dir() else path
    explicit_config = Path(config_path) if config_path is not None else None
    kind = detect_format(weights)
    notes: list[str] = []

    if kind == "keras":
        config, task, state = _read_keras(weights)
        if num_heads is not None:
            raise ConversionError(f"--num-heads: {weights} carries its own config; head counts cannot be changed")
        tensors, extra = _check_against_table(state, config, task, weights, fill_counters=True)
        return SourceCheckpoint(weights, "keras", "tf", task, config, tensors, [weights], notes + extra)

    try:
        raw = read_checkpoint(weights)
    except CheckpointError as err:
        raise explain_torch_refusal(err) from None
    if raw.kind == "torch":
        if isinstance(raw.obj, Mapping) and is_original_state(raw.obj):
            return _from_original(original_from_object(raw.obj, weights), num_heads, progress)
        if not isinstance(raw.obj, Mapping):
            raise CheckpointError(f"{weights}: expected a dict of tensors, got {type(raw.obj).__name__}")

    config = _config_beside(weights, explicit_config)
    if raw.kind == "h5":
        task = detect_task(list(raw.tensors))
        if config is None:
            raise FileNotFoundError(
                f"{weights}: a tf_model.h5 needs its config.json beside it (or config_path=...): the TF names "
                "alone do not give the layouts"
            )
        if num_heads is not None:
            raise ConversionError(f"--num-heads: {weights} has a config.json; its num_attention_heads is used")
        state = canonical_state(raw, parameter_table(config, task))
        tensors, extra = _check_against_table(state, config, task, weights, fill_counters=True)
        notes += extra
        return SourceCheckpoint(weights, "hf-tf", "tf", task, config, tensors, [weights], notes)

    state = raw.tensors
    not_arrays = sorted(k for k, v in state.items() if not isinstance(v, np.ndarray))
    if not_arrays:
        raise CheckpointError(f"{weights}: entries that are not tensors: {not_arrays[:10]}")
    task = detect_task(list(state))
    state = _strip_base_prefix(state, task)
    if config is None:
        config, inferred = infer_original_config(state, task, num_heads=num_heads, source=str(weights))
        config = config.copy(layer_norm_eps=HF_LAYER_NORM_EPS, patch_layer_norm_eps=HF_LAYER_NORM_EPS)
        notes += [f"no {CONFIG_NAME} beside {weights.name}: architecture read off the tensors"] + inferred
        notes.append("LayerNorm eps 1e-5 everywhere (Hugging Face numerics, as for any HF-layout weights file)")
    elif num_heads is not None:
        raise ConversionError(f"--num-heads: {weights} has a {CONFIG_NAME}; its num_attention_heads is used")
    tensors, extra = _check_against_table(state, config, task, weights, fill_counters=False)
    return SourceCheckpoint(weights, "hf-pt", "pt", task, config, tensors, [weights], notes + extra)


def _from_original(original: OriginalCheckpoint, num_heads: Sequence[int] | None, progress: Any) -> SourceCheckpoint:
    mit = original.layout == MMSEG_LAYOUT
    task, state, dropped = (map_mmseg_state if mit else map_original_state)(original, progress=progress)
    config, notes = infer_original_config(
        state, task, num_heads=list(num_heads) if num_heads is not None else None, meta=original.meta, source=str(original.path)
    )
    id2label = labels_from_meta(original.meta, config.num_labels) if task != "base" else None
    if id2label is not None:
        config = config.copy(id2label={str(k): v for k, v in id2label.items()}, label2id=None)
        notes.append(f"labels from the checkpoint's meta class names ({config.num_labels} names)")
    palette = palette_from_meta(original.meta, config.num_labels) if task != "base" else None
    if palette is not None:
        config = config.copy(palette=palette)
        notes.append(f"palette from the checkpoint's meta ({len(palette)} colours, config.json 'palette')")
    if mit:
        head = {"decode_head_type": "mmseg"} if task == "semantic_segmentation" else {}
        config = config.copy(layer_norm_eps=MMSEG_LAYER_NORM_EPS, patch_layer_norm_eps=MMSEG_LAYER_NORM_EPS, **head)
        notes.append(f"LayerNorm eps {MMSEG_LAYER_NORM_EPS:g} in every norm: mmsegmentation mit.py's")
        if head:
            notes.append("decode head type 'mmseg' (per-stage conv + BatchNorm + ReLU, concatenation in stage order 1..n)")
    else:
        notes.append("LayerNorm eps 1e-6 (block and stage norms) / 1e-5 (patch-embedding and sr norms): the original's")
    tensors, extra = _check_against_table(state, config, task, original.path, fill_counters=False)
    kind = MMSEG_LAYOUT if mit else "original-mmseg" if original.layout == "mmseg" else "original-encoder"
    return SourceCheckpoint(
        original.path, kind, None, task, config, tensors, [original.path], notes + extra, dropped, original.meta
    )


# ------------------------------------------------------------------------------------------ labels
def apply_labels(
    config: SegformerConfig,
    task: str,
    num_labels: int | None = None,
    labels: str | os.PathLike | None = None,
    id2label: Mapping[int, str] | None = None,
) -> tuple[SegformerConfig, list[str]]:
    """Set the label names. ``num_labels`` must equal the classifier's size (converting cannot resize it)."""
    notes: list[str] = []
    if labels is not None and id2label is not None:
        raise ValueError("pass either labels= (a label set name or JSON file) or id2label=, not both")
    if labels is not None:
        from ..common.images.labels import load_id2label

        id2label = load_id2label(labels)
        notes.append(f"labels from {os.fspath(labels)}")
    if id2label is not None:
        id2label = {int(k): str(v) for k, v in dict(id2label).items()}
    wanted = num_labels if num_labels is not None else (len(id2label) if id2label is not None else None)
    if num_labels is not None and id2label is not None and len(id2label) != num_labels:
        raise ValueError(f"--num-labels {num_labels} but the label names give {len(id2label)} classes")
    if wanted is None:
        return config, notes
    if task != "base" and wanted != config.num_labels:
        raise ConversionError(
            f"the checkpoint's classifier has {config.num_labels} classes but {wanted} were asked for "
            "(--num-labels / --labels); conversion keeps the head: fine-tune to change the label set"
        )
    if id2label is None:
        return config.copy(num_labels=wanted, id2label=None, label2id=None), notes
    if sorted(id2label) != list(range(wanted)):
        raise ValueError(f"label ids must be 0..{wanted - 1}, got {sorted(id2label)[:10]}...")
    return config.copy(num_labels=wanted, id2label={str(k): v for k, v in id2label.items()}, label2id=None), notes
