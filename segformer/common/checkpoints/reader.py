"""The one format dispatcher: :func:`read_checkpoint` reads any supported weights file, its kind detected
from the content (:func:`~segformer.common.checkpoints.files.detect_format`), into a :class:`RawCheckpoint`.
Every loader (``from_pretrained`` of both frameworks, ``segformer convert``) starts here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any, Mapping

import numpy as np

from .files import CheckpointError, detect_format
from .h5_io import read_h5_counters, read_tf_h5
from .safetensors_io import read_safetensors
from .torch_io import read_torch_bin
from ..base.json_io import read_json

__all__ = ["PT_LAYOUT_KINDS", "RawCheckpoint", "index_shard_path", "load_state_dict", "read_checkpoint"]

PT_LAYOUT_KINDS = ("safetensors", "torch", "index")  # files whose names are PyTorch state-dict keys


@dataclass
class RawCheckpoint:
    """What a weights file holds, before any name mapping.

    ``kind``: ``"safetensors"``, ``"torch"``, ``"index"`` (sharded), ``"h5"`` or ``"keras"``.
    ``tensors``: ``{name: array}``, PyTorch state-dict names for the :data:`PT_LAYOUT_KINDS`, TF paths
    (``segformer/encoder/.../kernel``) for ``h5``; empty for ``keras`` (an archive only Keras opens).
    ``obj``: for ``torch``, the whole unpickled object (an mmcv ``{"state_dict", "meta"}`` dict, a list ...).
    ``model_name`` / ``counters``: for ``h5``, the Keras model name and the BatchNorm counters our files carry.
    """

    path: Path
    kind: str
    tensors: dict[str, Any] = field(default_factory=dict)
    obj: Any = None
    model_name: str = ""
    counters: dict[str, np.ndarray] = field(default_factory=dict)


def read_checkpoint(path: str | os.PathLike) -> RawCheckpoint:
    """Read ``path`` (any supported format, detected from its bytes) into a :class:`RawCheckpoint`.

    Raises :class:`CheckpointError` naming the file for anything unreadable; never runs code from a file.
    """
    path = Path(path)
    kind = detect_format(path)
    if kind == "safetensors":
        return RawCheckpoint(path, kind, read_safetensors(path))
    if kind == "torch":
        obj = read_torch_bin(path)
        return RawCheckpoint(path, kind, dict(obj) if isinstance(obj, Mapping) else {}, obj=obj)
    if kind == "index":
        return RawCheckpoint(path, kind, _read_sharded(path))
    if kind == "h5":
        model_name, tensors = read_tf_h5(path)
        return RawCheckpoint(path, kind, tensors, model_name=model_name, counters=read_h5_counters(path))
    return RawCheckpoint(path, kind)  # "keras"


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load the tensors of a PyTorch-layout weights file (safetensors, .bin, or a sharded index).

    Returns ``{state_dict_key: np.ndarray}``. For ``tf_model.h5`` use :func:`read_tf_h5` (TF names).
    """
    raw = read_checkpoint(path)
    if raw.kind not in PT_LAYOUT_KINDS:
        raise CheckpointError(f"{raw.path}: a {raw.kind} file is not a PyTorch-layout state dict; use the matching reader")
    if raw.kind == "torch" and not isinstance(raw.obj, Mapping):
        raise CheckpointError(f"{raw.path}: expected a dict of tensors, got {type(raw.obj).__name__}")
    return raw.tensors


def _read_sharded(path: Path) -> dict[str, np.ndarray]:
    weight_map = read_json(path, "sharded checkpoint index", CheckpointError)["weight_map"]
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{path}: 'weight_map' must map tensor names to shard file names")
    state: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_shard_path(path, shard)
        if detect_format(shard_path) not in ("safetensors", "torch"):
            raise CheckpointError(f"{path}: shard {shard!r} is not a safetensors or PyTorch weights file")
        state.update(load_state_dict(shard_path))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(f"{path}: tensors listed in the index but absent from the shards: {missing[:10]}")
    return state


def index_shard_path(index: str | os.PathLike, shard: str) -> Path:
    """The file a sharded index entry names, refused unless it stays inside the index's folder.

    Absolute paths, ``..``, the index itself and symbolic links resolving outside the folder are
    :class:`CheckpointError`. A link into the folder the index itself resolves to is accepted (the
    Hugging Face cache links every file of a snapshot into one ``blobs/`` folder).
    """
    index = Path(index)
    parts = Path(shard).parts
    if not shard or Path(shard).is_absolute() or PureWindowsPath(shard).is_absolute() or ".." in parts or "\\" in shard:
        raise CheckpointError(f"{index}: shard {shard!r} must be a file name inside the index's folder")
    candidate = index.parent / shard
    if not candidate.is_file():
        raise CheckpointError(f"{index}: shard {shard!r} listed in the index is missing")
    real = candidate.resolve()
    roots = {index.parent.resolve(), index.resolve().parent}
    if real == index.resolve() or not any(root in real.parents for root in roots):
        raise CheckpointError(f"{index}: shard {shard!r} resolves outside the index's folder or to the index itself; refused")
    return candidate
