"""Hugging Face-layout ``tf_model.h5`` (the Keras-2 ``save_weights`` layout) read and written as data only."""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..base.atomic import atomic_write_bytes
from .files import _MAX_TENSOR_BYTES, _MAX_ZIP_RATIO, CheckpointError
from .safetensors_io import CHECKSUM_KEY, tensors_digest

__all__ = ["COUNTERS_ATTR", "read_h5_counters", "read_tf_h5", "write_tf_h5"]


def read_tf_h5(path: str | os.PathLike) -> tuple[str, dict[str, np.ndarray]]:
    """Read a Keras-2 / Hugging Face ``tf_model.h5``: ``(model_name, {tf_path: array})``.

    ``tf_path`` drops the leading model name and the ``:0`` suffix:
    ``tf_segformer_for_semantic_segmentation/segformer/encoder/.../kernel:0`` -> ``segformer/encoder/.../kernel``.
    h5 files are read as data only (no pickled objects, no code).
    """
    import h5py

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise CheckpointError(f"{path}: not a readable HDF5 file ({type(err).__name__}; truncated or corrupted)") from None
    out: dict[str, np.ndarray] = {}
    model_names = set()
    try:
        with handle:
            expected_digest = _as_str(handle.attrs[CHECKSUM_KEY]) if CHECKSUM_KEY in handle.attrs else None
            layer_names = [_as_str(n) for n in handle.attrs.get("layer_names", [])]
            if not layer_names:
                raise CheckpointError(f"{path}: HDF5 file has no 'layer_names' attribute (not a Keras weights file)")
            _check_h5_links(path, handle)
            for layer in layer_names:
                if layer not in handle:
                    raise CheckpointError(f"{path}: layer group {layer!r} listed but missing")
                group = handle[layer]
                for weight_name in (_as_str(n) for n in group.attrs.get("weight_names", [])):
                    if weight_name not in group:
                        raise CheckpointError(f"{path}: weight {weight_name!r} listed but missing")
                    array = _read_h5_dataset(path, group[weight_name], weight_name)
                    model_name, _, rest = weight_name.partition("/")
                    model_names.add(model_name)
                    out[rest.removesuffix(":0")] = array
    except (OSError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path}: corrupted HDF5 content ({type(err).__name__}: {err})") from None
    except CheckpointError:
        raise
    except Exception as err:  # h5py surfaces low-level HDF5 corruption as many exception types
        raise CheckpointError(f"{path}: corrupted HDF5 content ({type(err).__name__}: {err})") from None
    if expected_digest is not None and tensors_digest(out) != expected_digest:
        raise CheckpointError(f"{path}: checksum mismatch: the tensor data is corrupted (the file was written by segformer)")
    if len(model_names) > 1:
        raise CheckpointError(f"{path}: weights from several models {sorted(model_names)}")
    return (model_names.pop() if model_names else ""), out


def _as_str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _check_h5_links(path: Path, handle) -> None:
    """Refuse HDF5 content that points at other files: external links, virtual datasets, external storage.

    Soft links are refused too (a Keras weights file has none). Checked before any dataset is read.
    """
    import h5py

    # The visitors only collect: an exception raised inside h5py's callback surfaces as an unrelated SystemError.
    links: list[tuple[str, object]] = []
    handle.visititems_links(lambda name, link: links.append((name, link)) if isinstance(
        link, (h5py.ExternalLink, h5py.SoftLink)) else None)
    for name, link in links[:1]:
        if isinstance(link, h5py.ExternalLink):
            raise CheckpointError(f"{path}: {name!r} is an HDF5 external link (to another file); refused, not followed")
        raise CheckpointError(f"{path}: {name!r} is an HDF5 soft link; refused, not followed")

    datasets: list[tuple[str, str]] = []

    def check(name: str, node) -> None:
        if isinstance(node, h5py.Dataset) and (node.is_virtual or node.external):
            datasets.append((name, "a virtual dataset" if node.is_virtual else "stored in external files"))

    handle.visititems(check)
    for name, kind in datasets[:1]:
        raise CheckpointError(f"{path}: dataset {name!r} is {kind}; refused, other files are never read")


def _read_h5_dataset(path: Path, dataset, name: str) -> np.ndarray:
    """The dataset's array, after checking its dtype and declared size against what the file stores."""
    dtype = dataset.dtype
    if dtype.kind not in "fiub" or dtype.subdtype is not None or dtype.names is not None:
        raise CheckpointError(f"{path}: dataset {name!r} has dtype {dtype}; numeric tensors expected")
    shape = tuple(int(d) for d in dataset.shape or ())
    nbytes = math.prod(shape) * dtype.itemsize
    stored = int(dataset.id.get_storage_size())
    plausible = stored == nbytes if dataset.chunks is None else nbytes <= _MAX_ZIP_RATIO * stored + (1 << 20)
    if nbytes > _MAX_TENSOR_BYTES or not plausible:
        raise CheckpointError(
            f"{path}: dataset {name!r} declares shape {shape} ({nbytes} bytes) but the file stores {stored} bytes "
            "for it; refused before reading"
        )
    return np.asarray(dataset[()])


COUNTERS_ATTR = "segformer_counters"  # h5 root attribute: JSON {canonical name: int} (BN num_batches_tracked)


def read_h5_counters(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The integer counters (``num_batches_tracked``) a segformer-written h5 carries; ``{}`` for other files."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get(COUNTERS_ATTR)
    except Exception as err:  # h5py raises many kinds for damaged files
        raise CheckpointError(f"{path}: not a readable HDF5 file ({type(err).__name__}: {err})") from None
    if raw is None:
        return {}
    try:
        data = json.loads(_as_str(raw))
        counters = {str(k): int(v) for k, v in data.items() if not isinstance(v, bool)}
        if len(counters) != len(data) or not all(0 <= v < 2**63 for v in counters.values()):
            raise ValueError
        return {k: np.array(v, dtype=np.int64) for k, v in counters.items()}
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError, OverflowError, RecursionError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: attribute {COUNTERS_ATTR} is not a JSON object of integers in [0, 2**63)") from None


def write_tf_h5(
    path: str | os.PathLike, model_name: str, tensors: Mapping[str, np.ndarray], counters: Mapping[str, int] | None = None
) -> Path:
    """Write ``{tf_path: array}`` in the Keras-2 ``save_weights`` layout that HF's ``TFPreTrainedModel`` reads.

    Top-level layer groups are the first path segment (``segformer``, ``decode_head``, ``classifier``),
    weight names are ``model_name/tf_path:0``; written atomically. ``counters`` (canonical name -> int, the
    BatchNorm ``num_batches_tracked`` that Keras-2 files have no weight for) ride in a root attribute.
    """
    import h5py

    layers: dict[str, list[str]] = {}
    for tf_path in tensors:
        layers.setdefault(tf_path.split("/", 1)[0], []).append(tf_path)
    buffer = io.BytesIO()  # built in memory: HDF5 meeting a full disk can crash the process
    with h5py.File(buffer, "w") as handle:
        handle.attrs["backend"] = "tensorflow"
        handle.attrs["keras_version"] = "2.21.0"
        handle.attrs["layer_names"] = np.array([n.encode("utf-8") for n in layers], dtype=object)
        handle.attrs[CHECKSUM_KEY] = tensors_digest({n: np.asarray(t) for n, t in tensors.items()})
        if counters:
            handle.attrs[COUNTERS_ATTR] = json.dumps({k: int(v) for k, v in counters.items()}, sort_keys=True)
        for layer, names in layers.items():
            group = handle.create_group(layer)
            full = [f"{model_name}/{n}:0" for n in names]
            group.attrs["weight_names"] = np.array([n.encode("utf-8") for n in full], dtype=object)
            for name, full_name in zip(names, full):
                group.create_dataset(full_name, data=np.asarray(tensors[name], order="C"))
        top = handle.create_group("top_level_model_weights")
        top.attrs["weight_names"] = np.array([], dtype=np.float64)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
