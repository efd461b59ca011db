"""Checkpoint I/O in numpy: safetensors, PyTorch ``.bin`` (``weights_only``), HF-layout ``tf_model.h5``, shards.

Everything here reads and writes ``dict[str, np.ndarray]``; the framework packages convert to and from
their tensors. Formats are detected from the file's content, not its name. Every write is atomic.

* :func:`load_state_dict` - any supported weights file (or a sharded index) -> ``{name: array}``.
* :func:`save_safetensors` / :func:`read_safetensors` - safetensors (bf16 / f16 upcast to float32 on read).
* :func:`read_tf_h5` / :func:`write_tf_h5` - the Keras-2 ``save_weights`` h5 layout Hugging Face's TF
  classes read and write (``layer_names`` / ``weight_names`` attributes, ``model_name/...:0`` datasets).
* :func:`match_state_dict` - compare a state dict with the canonical table: a :class:`LoadReport`.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .atomic import atomic_path
from .weights import ParamSpec

__all__ = [
    "CheckpointError",
    "LoadReport",
    "SAFE_WEIGHTS_NAME",
    "SAFE_WEIGHTS_INDEX_NAME",
    "PT_WEIGHTS_NAME",
    "PT_WEIGHTS_INDEX_NAME",
    "TF_WEIGHTS_NAME",
    "detect_format",
    "find_weights_file",
    "load_state_dict",
    "read_safetensors",
    "save_safetensors",
    "read_torch_bin",
    "read_tf_h5",
    "write_tf_h5",
    "read_h5_counters",
    "COUNTERS_ATTR",
    "match_state_dict",
]

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
PT_WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
TF_WEIGHTS_NAME = "tf_model.h5"

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A file is not a readable checkpoint (truncated, corrupted, wrong kind). The message names the file."""


# ----------------------------------------------------------------------------------------- detection
def detect_format(path: str | os.PathLike) -> str:
    """``"safetensors"``, ``"torch"`` (zip or legacy pickle), ``"h5"``, ``"index"`` (sharded JSON) or ``"keras"``.

    Raises :class:`CheckpointError` for anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a file")
    with open(path, "rb") as handle:
        head = handle.read(16)
    size = path.stat().st_size
    if head.startswith(_HDF5_MAGIC):
        return "h5"
    if head.startswith(_ZIP_MAGIC):
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, UnicodeDecodeError, ValueError, OSError, EOFError) as err:
            raise CheckpointError(f"{path}: damaged zip archive ({type(err).__name__}: {err})") from None
        if "config.json" in names and "model.weights.h5" in names:
            return "keras"
        return "torch"
    if head[:1] == b"\x80":  # legacy (non-zip) torch.save pickle
        return "torch"
    if head.lstrip()[:1] == b"{":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{path}: JSON file is not valid") from None
        if isinstance(data, dict) and "weight_map" in data:
            return "index"
        raise CheckpointError(f"{path}: a JSON file without 'weight_map' is not a sharded checkpoint index")
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len <= min(size - 8, _MAX_SAFETENSORS_HEADER) and head[8:9] == b"{":
            return "safetensors"
    raise CheckpointError(
        f"{path}: not a checkpoint (expected safetensors, a PyTorch .bin, an HDF5 tf_model.h5, a .keras "
        f"archive or a sharded index; first bytes {head[:8]!r})"
    )


def find_weights_file(folder: str | os.PathLike, prefer: Iterable[str] = ("safetensors", "torch", "h5")) -> Path:
    """The weights file of a Hugging Face-layout folder, by preference among available formats."""
    folder = Path(folder)
    candidates = {
        "safetensors": [SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME],
        "torch": [PT_WEIGHTS_NAME, PT_WEIGHTS_INDEX_NAME],
        "h5": [TF_WEIGHTS_NAME],
    }
    for kind in prefer:
        for name in candidates[kind]:
            if (folder / name).is_file():
                return folder / name
    names = [n for kind in candidates for n in candidates[kind]]
    raise FileNotFoundError(f"no weights file in {folder}; looked for {names}")


# --------------------------------------------------------------------------------------- checksums
CHECKSUM_KEY = "segformer_sha256"


def tensors_digest(tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of ``tensors`` in sorted-name order.

    Files we write carry it (safetensors metadata / an h5 attribute; other readers ignore it), so a
    flipped byte in the tensor data of one of our files is detected on load, not silently used.
    """
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode("utf-8"))
        digest.update(np.asarray(array, order="C").tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------- safetensors
_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: str | os.PathLike, upcast: bool = True) -> dict[str, np.ndarray]:
    """Read a safetensors file into numpy (bf16 and, with ``upcast``, f16/f64 become float32).

    Every offset is checked against the file size, so a truncated or corrupted file raises a
    :class:`CheckpointError` naming the file instead of returning garbage.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw_len = handle.read(8)
        if len(raw_len) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > min(size - 8, _MAX_SAFETENSORS_HEADER):
            raise CheckpointError(f"{path}: safetensors header length {header_len} exceeds the file ({size} bytes)")
        try:
            header = json.loads(handle.read(header_len).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: corrupted safetensors header ({err})") from None
        data = handle.read()
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted safetensors header (not an object)")
    metadata = header.pop("__metadata__", None) or {}
    out: dict[str, np.ndarray] = {}
    raw: dict[str, np.ndarray] = {}
    for name, info in header.items():
        try:
            dtype_name, shape, (begin, end) = info["dtype"], [int(s) for s in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupted safetensors entry for {name!r}") from None
        if dtype_name == "BF16":
            itemsize = 2
        elif dtype_name in _ST_DTYPES:
            itemsize = np.dtype(_ST_DTYPES[dtype_name]).itemsize
        else:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype_name}")
        count = int(np.prod(shape)) if shape else 1
        if not (0 <= begin <= end <= len(data)) or end - begin != count * itemsize or min(shape, default=1) < 0:
            raise CheckpointError(
                f"{path}: tensor {name!r} ({dtype_name}, shape {shape}) points outside the file "
                f"(bytes {begin}..{end} of {len(data)}); the file is truncated or corrupted"
            )
        chunk = data[begin:end]
        if isinstance(metadata, dict) and CHECKSUM_KEY in metadata and dtype_name in _ST_DTYPES:
            raw[name] = np.frombuffer(chunk, dtype=np.dtype(_ST_DTYPES[dtype_name]).newbyteorder("<")).reshape(shape)
        if dtype_name == "BF16":
            array = (np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
        else:
            array = np.frombuffer(chunk, dtype=np.dtype(_ST_DTYPES[dtype_name]).newbyteorder("<")).reshape(shape)
            if upcast and array.dtype in (np.float16, np.float64):
                array = array.astype(np.float32)
        out[name] = np.array(array)  # own the memory, writable
    if isinstance(metadata, dict) and CHECKSUM_KEY in metadata and len(raw) == len(out):
        if tensors_digest(raw) != metadata[CHECKSUM_KEY]:
            raise CheckpointError(f"{path}: checksum mismatch: the tensor data is corrupted (the file was written by segformer)")
    return out


def save_safetensors(
    tensors: Mapping[str, np.ndarray], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """Write ``tensors`` as safetensors, atomically. ``metadata`` defaults to ``{"format": "pt"}`` (HF)."""
    from safetensors.numpy import save_file

    contiguous = {name: np.asarray(array, order="C") for name, array in tensors.items()}
    metadata = dict(metadata or {"format": "pt"})
    metadata[CHECKSUM_KEY] = tensors_digest(contiguous)
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=metadata)
    return Path(path)


# ------------------------------------------------------------------------------------------- torch
def read_torch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a ``torch.save`` file with ``weights_only=True`` (no code from the file runs) into numpy.

    A pickle that needs more than tensors and plain containers is refused with an explanation.
    A mmcv-style checkpoint ``{"state_dict": {...}, "meta": ...}`` returns the whole dict's tensors
    flattened only at top level: callers that expect a plain state dict use :func:`load_state_dict`.
    """
    path = Path(path)
    from .deps import require

    torch = require(
        "torch", f"reading {os.fspath(path)!r} (a PyTorch pickle, .bin/.pth)",
        "or convert it to safetensors on a machine that has torch",
    )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, zip errors, truncation: torch raises many types
        text = str(err)
        if "weights_only" in text or "Unsupported global" in text or "UnpicklingError" in type(err).__name__:
            raise CheckpointError(
                f"{path}: refused to load: the pickle needs more than tensors and plain containers "
                f"(loading it would run code from the file). torch said: {text.splitlines()[0] if text else err!r}"
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {text[:200]})") from None
    return _torch_obj_to_numpy(obj, path)


def _torch_obj_to_numpy(obj, path: Path):
    import torch

    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy().copy()
    if isinstance(obj, Mapping):
        return {str(k): _torch_obj_to_numpy(v, path) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_torch_obj_to_numpy(v, path) for v in obj)
    return obj


# ---------------------------------------------------------------------------------------------- h5
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
        raise CheckpointError(f"{path}: not a readable HDF5 file ({err})") from None
    out: dict[str, np.ndarray] = {}
    model_names = set()
    try:
        with handle:
            expected_digest = _as_str(handle.attrs[CHECKSUM_KEY]) if CHECKSUM_KEY in handle.attrs else None
            layer_names = [_as_str(n) for n in handle.attrs.get("layer_names", [])]
            if not layer_names:
                raise CheckpointError(f"{path}: HDF5 file has no 'layer_names' attribute (not a Keras weights file)")
            for layer in layer_names:
                if layer not in handle:
                    raise CheckpointError(f"{path}: layer group {layer!r} listed but missing")
                group = handle[layer]
                for weight_name in (_as_str(n) for n in group.attrs.get("weight_names", [])):
                    if weight_name not in group:
                        raise CheckpointError(f"{path}: weight {weight_name!r} listed but missing")
                    array = np.asarray(group[weight_name][()])
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
        return {str(k): np.array(int(v), dtype=np.int64) for k, v in data.items()}
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
        raise CheckpointError(f"{path}: attribute {COUNTERS_ATTR} is not a JSON object of integers") from None


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
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
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
    return Path(path)


# ------------------------------------------------------------------------------------- any format
def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load the tensors of a PyTorch-layout weights file (safetensors, .bin, or a sharded index).

    Returns ``{state_dict_key: np.ndarray}``. For ``tf_model.h5`` use :func:`read_tf_h5` (TF names).
    """
    path = Path(path)
    kind = detect_format(path)
    if kind == "safetensors":
        return read_safetensors(path)
    if kind == "torch":
        state = read_torch_bin(path)
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
        return state
    if kind == "index":
        index = json.loads(path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
        state: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = path.parent / shard
            if not shard_path.is_file():
                raise CheckpointError(f"{path}: shard {shard} listed in the index is missing")
            state.update(load_state_dict(shard_path))
        missing = sorted(set(weight_map) - set(state))
        if missing:
            raise CheckpointError(f"{path}: tensors listed in the index but absent from the shards: {missing[:10]}")
        return state
    raise CheckpointError(f"{path}: a {kind} file is not a PyTorch-layout state dict; use the matching reader")


# ------------------------------------------------------------------------------------ load report
@dataclass
class LoadReport:
    """What happened when a state dict met a model: names of missing, unexpected and mismatched tensors."""

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_keys: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    nonfinite_keys: list[str] = field(default_factory=list)
    added_prefix: str = ""
    removed_prefix: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing_keys or self.unexpected_keys or self.mismatched_keys or self.nonfinite_keys)

    def summary(self) -> str:
        lines = []
        if self.missing_keys:
            lines.append(f"missing ({len(self.missing_keys)}): {', '.join(self.missing_keys)}")
        if self.unexpected_keys:
            lines.append(f"unexpected ({len(self.unexpected_keys)}): {', '.join(self.unexpected_keys)}")
        if self.mismatched_keys:
            lines.append(
                f"mismatched ({len(self.mismatched_keys)}): "
                + ", ".join(f"{k} checkpoint {a} vs model {b}" for k, a, b in self.mismatched_keys)
            )
        if self.nonfinite_keys:
            lines.append(f"NaN/Inf values ({len(self.nonfinite_keys)}): {', '.join(self.nonfinite_keys)}")
        return "\n".join(lines) if lines else "all tensors matched"

    def __getitem__(self, key: str):  # HF returns a dict from output_loading_info=True
        return getattr(self, key)


def match_state_dict(
    state: Mapping[str, np.ndarray],
    specs: list[ParamSpec],
    ignore_mismatched_sizes: bool = False,
) -> tuple[dict[str, np.ndarray], LoadReport]:
    """Map ``state`` (PT layout, canonical names) onto ``specs``.

    Handles the ``segformer.`` base-model prefix both ways (a base checkpoint into a task model, a task
    checkpoint into a base model), checks shapes and dtypes, and returns ``(tensors_to_load, report)``.
    A shape mismatch is an error unless ``ignore_mismatched_sizes`` (then that tensor keeps its init and
    is listed in ``report.mismatched_keys``). Float tensors are cast to float32; integer / bool tensors
    for a float parameter are an error; NaN / Inf values are listed in ``report.nonfinite_keys``.
    """
    expected = {s.name: s for s in specs}
    report = LoadReport()
    state = dict(state)
    model_has_prefix = any(n.startswith("segformer.") for n in expected)
    ckpt_has_prefix = any(k.startswith("segformer.") for k in state)
    if model_has_prefix and not ckpt_has_prefix and any(k.startswith("encoder.") for k in state):
        state = {("segformer." + k if k.startswith("encoder.") else k): v for k, v in state.items()}
        report.added_prefix = "segformer."
    elif not model_has_prefix and ckpt_has_prefix:
        state = {k.removeprefix("segformer."): v for k, v in state.items()}
        report.removed_prefix = "segformer."
    to_load: dict[str, np.ndarray] = {}
    for name, spec in expected.items():
        if name not in state:
            report.missing_keys.append(name)
            continue
        array = np.asarray(state[name])
        if tuple(array.shape) != spec.shape:
            if not ignore_mismatched_sizes:
                raise ValueError(
                    f"tensor {name!r} has shape {tuple(array.shape)} in the checkpoint but {spec.shape} in the model; "
                    "pass ignore_mismatched_sizes=True to re-initialize it (e.g. a new classifier head)"
                )
            report.mismatched_keys.append((name, tuple(array.shape), spec.shape))
            continue
        if spec.kind == "counter":
            if array.dtype.kind not in "iu":
                raise ValueError(f"tensor {name!r} must be an integer counter, got dtype {array.dtype}")
            to_load[name] = array.astype(np.int64)
            continue
        if array.dtype.kind != "f":
            raise ValueError(f"tensor {name!r} must be floating point, got dtype {array.dtype}")
        array = array.astype(np.float32, copy=False)
        if not np.all(np.isfinite(array)):
            report.nonfinite_keys.append(name)
        to_load[name] = array
    report.unexpected_keys = sorted(set(state) - set(expected))
    return to_load, report
