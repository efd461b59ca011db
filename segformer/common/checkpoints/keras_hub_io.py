"""keras-hub SegFormer presets (``SegFormerImageSegmenter.save_to_preset``) read and written as data only.

A preset is a folder: ``config.json`` (the ``SegFormerBackbone`` with its ``MiTBackbone`` image encoder),
``model.weights.h5`` (the backbone: encoder and decode head up to the fuse BatchNorm), ``task.json`` +
``task.weights.h5`` (the segmenter: ``num_classes``, the classifier), ``metadata.json`` and, when the
segmenter has one, ``preprocessor.json`` + ``image_converter.json``.

The weights files are Keras 3 ``.weights.h5`` files: every variable sits at a positional path such as
``layers/functional/layers/hierarchical_transformer_encoder_3/attn/q/vars/0``. Keras names each layer of a
container by its class (``dense``, ``dense_1`` ...) in the container's layer order, so the paths follow
from the architecture alone; :data:`KERAS_HUB_NAMES` is that mapping, one ordered table, and
:func:`keras_hub_names` expands it for a config. Facts of keras-hub 0.32's layer structure it encodes:

* the encoder's layers are numbered over the whole model: patch embedding ``i`` of stage ``i``, transformer
  block ``b`` counted over all stages (stage 0's blocks first), stage norm ``i``;
* the decode head's stage projections (``dense``, ``dense_1`` ...) come in reverse stage order (the last
  stage's is ``dense``);
* keras-hub's depthwise kernel is ``(3, 3, C, 1)`` (Keras ``DepthwiseConv2D``), ours in TF ``(3, 3, 1, C)``;
* keras-hub has no ``num_batches_tracked``; reading sets it to 0.

keras-hub's numerics (what :func:`config_from_keras_hub` sets): GELU is ``keras.ops.gelu``'s default, the
tanh approximation (``hidden_act="gelu_new"``); LayerNorm epsilon 1e-6 in the block norms, 1e-5 in the
patch-embedding, sequence-reduction and stage norms; Mix-FFN ratio 4; logits resized to the (square,
fixed) input size inside the model.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..base.atomic import atomic_path, atomic_write_text
from ..base.json_io import read_json
from ..model.config import SegformerConfig
from ..model.weights import SEMANTIC_SEGMENTATION, parameter_table, to_pt_layout, to_tf_layout
from .files import CheckpointError
from .h5_io import _check_h5_links, _read_h5_dataset

__all__ = [
    "KERAS_HUB_NAMES",
    "KERAS_HUB_VERSION",
    "KERAS_HUB_NUMERICS",
    "KERAS_HUB_MLP_RATIO",
    "BACKBONE_CONFIG",
    "BACKBONE_WEIGHTS",
    "TASK_CONFIG",
    "TASK_WEIGHTS",
    "KerasHubPreset",
    "keras_hub_preset_folder",
    "keras_hub_names",
    "config_from_keras_hub",
    "read_keras_hub_preset",
    "write_keras_hub_preset",
    "keras_hub_differences",
]

BACKBONE_CONFIG, BACKBONE_WEIGHTS = "config.json", "model.weights.h5"
TASK_CONFIG, TASK_WEIGHTS = "task.json", "task.weights.h5"
PREPROCESSOR_CONFIG, IMAGE_CONVERTER_CONFIG, METADATA = "preprocessor.json", "image_converter.json", "metadata.json"
KERAS_HUB_VERSION = "0.32.0"  # the version whose layer structure KERAS_HUB_NAMES follows
KERAS_HUB_MLP_RATIO = 4  # keras-hub's MixFFN width is 4 x the hidden size, not configurable
# keras-hub's numerics as config fields (the module docstring says where each comes from)
KERAS_HUB_NUMERICS: dict[str, Any] = {
    "hidden_act": "gelu_new",
    "layer_norm_eps": 1e-6,
    "patch_layer_norm_eps": 1e-5,
    "stage_layer_norm_eps": 1e-5,
}
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")
_SEGMENTER = "SegFormerImageSegmenter"
_ENCODER = "layers/functional/layers/"

# The mapping, in canonical (Hugging Face ``state_dict``) order: (canonical name, keras-hub file, keras-hub
# path). Placeholders: {i} stage, {j} block within the stage, {b} block counted over all stages, {r} the
# stage counted from the last; a "{x_}" is Keras' class-name counter: "" for 0, "_x" otherwise.
KERAS_HUB_NAMES: tuple[tuple[str, str, str], ...] = (
    ("segformer.encoder.patch_embeddings.{i}.proj.weight", BACKBONE_WEIGHTS, _ENCODER + "overlapping_patching_and_embedding{i_}/proj/vars/0"),
    ("segformer.encoder.patch_embeddings.{i}.proj.bias", BACKBONE_WEIGHTS, _ENCODER + "overlapping_patching_and_embedding{i_}/proj/vars/1"),
    ("segformer.encoder.patch_embeddings.{i}.layer_norm.weight", BACKBONE_WEIGHTS, _ENCODER + "overlapping_patching_and_embedding{i_}/norm/vars/0"),
    ("segformer.encoder.patch_embeddings.{i}.layer_norm.bias", BACKBONE_WEIGHTS, _ENCODER + "overlapping_patching_and_embedding{i_}/norm/vars/1"),
    ("segformer.encoder.block.{i}.{j}.layer_norm_1.weight", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/norm1/vars/0"),
    ("segformer.encoder.block.{i}.{j}.layer_norm_1.bias", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/norm1/vars/1"),
    ("segformer.encoder.block.{i}.{j}.attention.self.query.weight", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/attn/q/vars/0"),
    ("segformer.encoder.block.{i}.{j}.attention.self.query.bias", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/attn/q/vars/1"),
    ("segformer.encoder.block.{i}.{j}.attention.self.key.weight", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/attn/k/vars/0"),
    ("segformer.encoder.block.{i}.{j}.attention.self.key.bias", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/attn/k/vars/1"),
    ("segformer.encoder.block.{i}.{j}.attention.self.value.weight", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/attn/v/vars/0"),
    ("segformer.encoder.block.{i}.{j}.attention.self.value.bias", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/attn/v/vars/1"),
    ("segformer.encoder.block.{i}.{j}.attention.self.sr.weight", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/attn/sr/vars/0"),
    ("segformer.encoder.block.{i}.{j}.attention.self.sr.bias", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/attn/sr/vars/1"),
    ("segformer.encoder.block.{i}.{j}.attention.self.layer_norm.weight", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/attn/norm/vars/0"),
    ("segformer.encoder.block.{i}.{j}.attention.self.layer_norm.bias", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/attn/norm/vars/1"),
    ("segformer.encoder.block.{i}.{j}.attention.output.dense.weight", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/attn/proj/vars/0"),
    ("segformer.encoder.block.{i}.{j}.attention.output.dense.bias", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/attn/proj/vars/1"),
    ("segformer.encoder.block.{i}.{j}.layer_norm_2.weight", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/norm2/vars/0"),
    ("segformer.encoder.block.{i}.{j}.layer_norm_2.bias", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/norm2/vars/1"),
    ("segformer.encoder.block.{i}.{j}.mlp.dense1.weight", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/mlp/fc1/vars/0"),
    ("segformer.encoder.block.{i}.{j}.mlp.dense1.bias", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/mlp/fc1/vars/1"),
    ("segformer.encoder.block.{i}.{j}.mlp.dwconv.dwconv.weight", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/mlp/dwconv/vars/0"),
    ("segformer.encoder.block.{i}.{j}.mlp.dwconv.dwconv.bias", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/mlp/dwconv/vars/1"),
    ("segformer.encoder.block.{i}.{j}.mlp.dense2.weight", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/mlp/fc2/vars/0"),
    ("segformer.encoder.block.{i}.{j}.mlp.dense2.bias", BACKBONE_WEIGHTS, _ENCODER + "hierarchical_transformer_encoder{b_}/mlp/fc2/vars/1"),
    ("segformer.encoder.layer_norm.{i}.weight", BACKBONE_WEIGHTS, _ENCODER + "layer_normalization{i_}/vars/0"),
    ("segformer.encoder.layer_norm.{i}.bias", BACKBONE_WEIGHTS, _ENCODER + "layer_normalization{i_}/vars/1"),
    ("decode_head.linear_c.{i}.proj.weight", BACKBONE_WEIGHTS, "layers/dense{r_}/vars/0"),
    ("decode_head.linear_c.{i}.proj.bias", BACKBONE_WEIGHTS, "layers/dense{r_}/vars/1"),
    ("decode_head.linear_fuse.weight", BACKBONE_WEIGHTS, "layers/sequential/layers/conv2d/vars/0"),
    ("decode_head.batch_norm.weight", BACKBONE_WEIGHTS, "layers/sequential/layers/batch_normalization/vars/0"),
    ("decode_head.batch_norm.bias", BACKBONE_WEIGHTS, "layers/sequential/layers/batch_normalization/vars/1"),
    ("decode_head.batch_norm.running_mean", BACKBONE_WEIGHTS, "layers/sequential/layers/batch_normalization/vars/2"),
    ("decode_head.batch_norm.running_var", BACKBONE_WEIGHTS, "layers/sequential/layers/batch_normalization/vars/3"),
    ("decode_head.classifier.weight", TASK_WEIGHTS, "layers/conv2d/vars/0"),
    ("decode_head.classifier.bias", TASK_WEIGHTS, "layers/conv2d/vars/1"),
)


def _counter(index: int) -> str:
    return f"_{index}" if index else ""


def keras_hub_names(config: SegformerConfig) -> list[tuple[str, str, str]]:
    """:data:`KERAS_HUB_NAMES` expanded for ``config``: ``(canonical name, file, keras-hub path)`` for every
    tensor keras-hub stores, in the canonical table's order (``num_batches_tracked`` has no keras-hub twin)."""
    wanted = {spec.name for spec in parameter_table(config, SEMANTIC_SEGMENTATION)}
    stages = config.num_encoder_blocks
    blocks = [(i, j, sum(config.depths[:i]) + j) for i in range(stages) for j in range(config.depths[i])]
    out: list[tuple[str, str, str]] = []
    for canonical, file, path in KERAS_HUB_NAMES:
        if "{j}" in canonical:
            places = [{"i": i, "j": j, "b_": _counter(b)} for i, j, b in blocks]
        elif "{i}" in canonical:
            places = [{"i": i, "i_": _counter(i), "r_": _counter(stages - 1 - i)} for i in range(stages)]
        else:
            places = [{}]
        for place in places:
            name = canonical.format(**place)
            if name in wanted:  # the sr / its norm only where sr_ratio > 1
                out.append((name, file, path.format(**place)))
    return out


def _to_keras_hub(spec, array: np.ndarray) -> np.ndarray:
    """PyTorch layout -> keras-hub layout: the TF layout, with the depthwise kernel as (3, 3, C, 1)."""
    array = to_tf_layout(spec, array)
    return np.ascontiguousarray(array.transpose(0, 1, 3, 2)) if spec.kind == "dwconv" else array


def _from_keras_hub(spec, array: np.ndarray) -> np.ndarray:
    if spec.kind == "dwconv" and array.ndim == 4:
        array = array.transpose(0, 1, 3, 2)
    return to_pt_layout(spec, array)


# ----------------------------------------------------------------------------------------- detection
def _registered(data: Any) -> str:
    return str(data.get("registered_name") or "") if isinstance(data, dict) else ""


def keras_hub_preset_folder(path: str | os.PathLike) -> Path | None:
    """The preset folder when ``path`` is a keras-hub preset folder (or a file in one), else ``None``: a
    ``config.json`` whose ``registered_name`` starts with ``keras_hub>``, next to ``model.weights.h5``."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config = folder / BACKBONE_CONFIG
    if not (config.is_file() and (folder / BACKBONE_WEIGHTS).is_file()):
        return None
    try:
        data = read_json(config, "keras-hub config", CheckpointError)
    except CheckpointError:
        return None
    return folder if _registered(data).startswith("keras_hub>") else None


# ------------------------------------------------------------------------------------------- configs
def config_from_keras_hub(backbone: Mapping[str, Any], num_classes: int) -> tuple[SegformerConfig, int | None]:
    """Our config for a keras-hub ``SegFormerBackbone`` config (``config.json``'s ``config``) and class
    count, with keras-hub's numerics; and the square input side its ``image_shape`` fixes (or ``None``)."""
    try:
        encoder = backbone["image_encoder"]["config"]
        image_shape = list(encoder.get("image_shape") or (None, None, 3))
        config = SegformerConfig(
            num_channels=int(image_shape[-1]),
            num_encoder_blocks=int(encoder["num_layers"]),
            depths=list(encoder["layerwise_depths"]),
            hidden_sizes=list(encoder["hidden_dims"]),
            num_attention_heads=list(encoder["layerwise_num_heads"]),
            sr_ratios=list(encoder["layerwise_sr_ratios"]),
            patch_sizes=list(encoder["layerwise_patch_sizes"]),
            strides=list(encoder["layerwise_strides"]),
            mlp_ratios=[KERAS_HUB_MLP_RATIO] * int(encoder["num_layers"]),
            drop_path_rate=float(encoder.get("max_drop_path_rate", 0.1)),
            decoder_hidden_size=int(backbone["projection_filters"]),
            num_labels=int(num_classes),
            **KERAS_HUB_NUMERICS,
        )
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise CheckpointError(f"keras-hub SegFormerBackbone config: {type(err).__name__}: {err}") from None
    side = image_shape[0] if image_shape[0] is not None and image_shape[0] == image_shape[1] else None
    return config, side


def _dtype_policy() -> dict[str, Any]:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


def _backbone_json(config: SegformerConfig, side: int) -> dict[str, Any]:
    encoder = {
        "name": "mi_t_backbone", "trainable": True, "dtype": _dtype_policy(),
        "layerwise_depths": list(config.depths), "hidden_dims": list(config.hidden_sizes),
        "image_shape": [side, side, config.num_channels], "num_layers": config.num_encoder_blocks,
        "layerwise_num_heads": list(config.num_attention_heads), "layerwise_sr_ratios": list(config.sr_ratios),
        "max_drop_path_rate": config.drop_path_rate, "layerwise_patch_sizes": list(config.patch_sizes),
        "layerwise_strides": list(config.strides),
    }
    return {
        "module": "keras_hub.src.models.segformer.segformer_backbone",
        "class_name": "SegFormerBackbone",
        "config": {
            "name": "seg_former_backbone", "trainable": True, "dtype": _dtype_policy(),
            "projection_filters": config.decoder_hidden_size,
            "image_encoder": {"module": "keras_hub.src.models.mit.mit_backbone", "class_name": "MiTBackbone",
                              "config": encoder, "registered_name": "keras_hub>MiTBackbone"},
        },
        "registered_name": "keras_hub>SegFormerBackbone",
    }


def _preprocessor_json(side: int, mean: list[float], std: list[float]) -> dict[str, Any]:
    """keras-hub's image converter for our processor: ``x * scale + offset`` = ``(x / 255 - mean) / std``."""
    converter = {
        "module": "keras_hub.src.models.segformer.segformer_image_converter",
        "class_name": "SegFormerImageConverter",
        "config": {
            "name": "seg_former_image_converter", "trainable": True, "dtype": _dtype_policy(),
            "image_size": [side, side], "scale": [1.0 / (255.0 * s) for s in std],
            "offset": [-m / s for m, s in zip(mean, std)], "interpolation": "bilinear", "antialias": False,
            # the whole image resized to the square, as SegformerImageProcessor does (keras-hub's default crops)
            "crop_to_aspect_ratio": False, "pad_to_aspect_ratio": False, "bounding_box_format": "yxyx",
        },
        "registered_name": "keras_hub>SegFormerImageConverter",
    }
    return {
        "module": "keras_hub.src.models.segformer.segformer_image_segmenter_preprocessor",
        "class_name": "SegFormerImageSegmenterPreprocessor",
        "config": {"name": "seg_former_image_segmenter_preprocessor", "trainable": True, "dtype": _dtype_policy(),
                   "image_converter": converter, "config_file": PREPROCESSOR_CONFIG},
        "registered_name": "keras_hub>SegFormerImageSegmenterPreprocessor",
    }


# ------------------------------------------------------------------------------------------- reading
@dataclass
class KerasHubPreset:
    """A preset read onto the canonical table: ``config`` (keras-hub numerics), ``state`` (canonical names,
    PyTorch layout, counters set to 0), ``image_size`` (the square side its ``image_shape`` fixes, or None),
    ``preprocessor`` (``{"size", "image_mean", "image_std"}`` from ``preprocessor.json``, or None),
    ``ignored`` (the optimizer state of ``task.weights.h5``)."""

    folder: Path
    config: SegformerConfig
    state: dict[str, np.ndarray]
    image_size: int | None
    preprocessor: dict[str, Any] | None
    ignored: list[str]


def _read_weights(path: Path) -> dict[str, np.ndarray]:
    import h5py

    if not path.is_file():
        raise CheckpointError(f"{path.parent}: keras-hub preset without {path.name}")
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as handle:
            _check_h5_links(path, handle)

            def visit(name: str, node) -> None:
                if isinstance(node, h5py.Dataset):
                    out[name] = _read_h5_dataset(path, node, name)

            handle.visititems(visit)
    except CheckpointError:
        raise
    except Exception as err:  # h5py surfaces damaged files as many exception types
        raise CheckpointError(f"{path}: not a readable Keras weights file ({type(err).__name__}: {err})") from None
    return out


def _read_preprocessor(folder: Path) -> dict[str, Any] | None:
    path = folder / PREPROCESSOR_CONFIG
    if not path.is_file():
        return None
    data = read_json(path, "keras-hub preprocessor", CheckpointError)
    try:
        converter = data["config"]["image_converter"]["config"]
        scale, offset = [float(s) for s in converter["scale"]], [float(o) for o in converter["offset"]]
        std = [1.0 / (255.0 * s) for s in scale]
        mean = [-o * s for o, s in zip(offset, std)]
        height, width = (int(v) for v in converter["image_size"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None  # a converter we cannot express (no per-channel scale / offset): the default processor
    return {"size": {"height": height, "width": width}, "image_mean": mean, "image_std": std}


def read_keras_hub_preset(folder: str | os.PathLike) -> KerasHubPreset:
    """Read a ``SegFormerImageSegmenter`` preset folder onto the canonical table (semantic segmentation).

    Every tensor of the two weights files must be consumed and every canonical tensor present, else
    :class:`CheckpointError` names them (optimizer state of ``task.weights.h5`` is ignored).
    """
    folder = Path(folder)
    backbone = read_json(folder / BACKBONE_CONFIG, "keras-hub config", CheckpointError)
    if not _registered(backbone).endswith(">SegFormerBackbone"):
        raise CheckpointError(
            f"{folder / BACKBONE_CONFIG}: a keras-hub {backbone.get('class_name')!r} preset; only SegFormer image "
            "segmenter presets (SegFormerBackbone + task.json) are read"
        )
    task_path = folder / TASK_CONFIG
    if not task_path.is_file():
        raise CheckpointError(f"{folder}: keras-hub SegFormerBackbone preset without {TASK_CONFIG}: the class count "
                              "and the classifier live in the segmenter (save the SegFormerImageSegmenter's preset)")
    task = read_json(task_path, "keras-hub task config", CheckpointError)
    if task.get("class_name") != _SEGMENTER or not isinstance(task.get("config"), dict):
        raise CheckpointError(f"{task_path}: expected a {_SEGMENTER}, got {task.get('class_name')!r}")
    config, side = config_from_keras_hub(backbone.get("config") or {}, task["config"].get("num_classes"))
    files = {name: _read_weights(folder / name) for name in (BACKBONE_WEIGHTS, TASK_WEIGHTS)}
    specs = {spec.name: spec for spec in parameter_table(config, SEMANTIC_SEGMENTATION)}
    state: dict[str, np.ndarray] = {}
    missing = []
    for canonical, file, path in keras_hub_names(config):
        if path not in files[file]:
            missing.append(f"{file}:{path}")
            continue
        try:
            state[canonical] = _from_keras_hub(specs[canonical], files[file].pop(path)).astype(np.float32)
        except ValueError as err:
            raise CheckpointError(f"{folder / file}: {path} -> {canonical}: {err}") from None
    for spec in specs.values():
        if spec.kind == "counter":
            state[spec.name] = np.array(0, dtype=np.int64)
    ignored = sorted(f"{TASK_WEIGHTS}:{p}" for p in files[TASK_WEIGHTS] if p.startswith("optimizer/"))
    left = sorted(f"{f}:{p}" for f, tensors in files.items() for p in tensors if f"{f}:{p}" not in ignored)
    if missing or left:
        problems = ([f"missing ({len(missing)}): {', '.join(missing[:5])}"] if missing else []) + (
            [f"left over ({len(left)}): {', '.join(left[:5])}"] if left else [])
        raise CheckpointError(
            f"{folder}: the weights do not match the keras-hub SegFormer of depths {config.depths}, hidden sizes "
            f"{config.hidden_sizes}: " + "; ".join(problems)
        )
    return KerasHubPreset(folder, config, state, side, _read_preprocessor(folder), ignored)


# ------------------------------------------------------------------------------------------- writing
def keras_hub_differences(config: SegformerConfig) -> tuple[list[str], list[str]]:
    """What a keras-hub preset cannot hold of ``config``: ``(refusals, approximations)``. Refusals change the
    weights' shapes or the head (nothing can be written); approximations change the numbers slightly."""
    refusals, approximations = [], []
    if any(r != KERAS_HUB_MLP_RATIO for r in config.mlp_ratios):
        refusals.append(f"mlp_ratios {config.mlp_ratios}: keras-hub's Mix-FFN is always {KERAS_HUB_MLP_RATIO}x wide")
    if len(set(config.hidden_sizes)) != len(config.hidden_sizes):
        refusals.append(f"hidden_sizes {config.hidden_sizes}: keras-hub names each stage's projection linear_<width>, "
                        "so two stages of one width do not build")
    head = getattr(config, "decode_head_type", "mlp")
    if head != "mlp":
        refusals.append(f"decode_head_type {head!r}: keras-hub has only the all-MLP SegFormer head")
    if config.hidden_act not in _TANH_GELU:
        approximations.append(f"hidden_act {config.hidden_act!r}: keras-hub computes the tanh-approximate GELU")
    for name, value in KERAS_HUB_NUMERICS.items():
        if name != "hidden_act" and getattr(config, name) != value:
            approximations.append(f"{name} {getattr(config, name):g}: keras-hub uses {value:g}")
    return refusals, approximations


def write_keras_hub_preset(
    folder: str | os.PathLike,
    config: SegformerConfig,
    state: Mapping[str, np.ndarray],
    image_size: int,
    image_mean: list[float] | None = None,
    image_std: list[float] | None = None,
) -> list[Path]:
    """Write a ``SegFormerImageSegmenter`` preset of ``state`` (canonical names, PyTorch layout) into the
    existing folder ``folder``, as keras-hub 0.32 writes one; the input size is ``image_size`` square. With
    ``image_mean`` / ``image_std`` a preprocessor (resize to ``image_size``, ``(x / 255 - mean) / std``) is
    written too. Each file is written atomically. Returns the files."""
    import h5py

    from ... import __version__

    folder = Path(folder)
    specs = {spec.name: spec for spec in parameter_table(config, SEMANTIC_SEGMENTATION)}
    grouped: dict[str, dict[str, np.ndarray]] = {BACKBONE_WEIGHTS: {}, TASK_WEIGHTS: {}}
    for canonical, file, path in keras_hub_names(config):
        grouped[file][path] = _to_keras_hub(specs[canonical], np.asarray(state[canonical], dtype=np.float32))
    grouped[TASK_WEIGHTS]["optimizer/vars/0"] = np.array(0, dtype=np.int64)  # what a fresh task's Adam holds
    grouped[TASK_WEIGHTS]["optimizer/vars/1"] = np.array(5e-05, dtype=np.float32)
    written = []
    for name, tensors in grouped.items():
        with atomic_path(folder / name) as tmp:
            with h5py.File(tmp, "w") as handle:
                handle.create_group("vars")
                for path, array in sorted(tensors.items()):
                    handle.create_dataset(path, data=array)
        written.append(folder / name)
    backbone = _backbone_json(config, image_size)
    task = {
        "module": "keras_hub.src.models.segformer.segformer_image_segmenter",
        "class_name": _SEGMENTER,
        "config": {"backbone": backbone, "preprocessor": None, "name": "seg_former_image_segmenter",
                   "num_classes": config.num_labels},
        "registered_name": f"keras_hub>{_SEGMENTER}",
    }
    texts = {BACKBONE_CONFIG: backbone, TASK_CONFIG: task}
    if image_mean is not None and image_std is not None:
        preprocessor = _preprocessor_json(image_size, list(image_mean), list(image_std))
        task["config"]["preprocessor"] = preprocessor
        texts[PREPROCESSOR_CONFIG] = preprocessor
        texts[IMAGE_CONVERTER_CONFIG] = preprocessor["config"]["image_converter"]
    texts[METADATA] = {
        "keras_version": _keras_version(), "keras_hub_version": KERAS_HUB_VERSION,
        "parameter_count": int(sum(np.asarray(state[n]).size for n, _, _ in keras_hub_names(config))),
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"), "tasks": ["ImageSegmenter"],
        "written_by": f"segformer {__version__}",
    }
    for name, data in texts.items():
        atomic_write_text(folder / name, json.dumps(data, indent=4) + "\n")
        written.append(folder / name)
    return sorted(written)


def _keras_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras")
    except PackageNotFoundError:
        return "3.15.1"
