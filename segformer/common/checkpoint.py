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
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
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
_MAX_JSON_BYTES = 100 * 1024 * 1024
_MAX_TENSOR_BYTES = 1 << 36  # 64 GiB: far above any SegFormer tensor, far below what a crafted header declares
_MAX_ZIP_MEMBERS = 100_000
_MAX_ZIP_RATIO = 1000  # refuse .keras members that would inflate more than this (zip bombs)


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
                members = archive.infolist()
        except (zipfile.BadZipFile, UnicodeDecodeError, ValueError, OSError, EOFError) as err:
            raise CheckpointError(f"{path}: damaged zip archive ({type(err).__name__})") from None
        names = [member.filename for member in members]
        _check_zip_sizes(path, members, size)
        if "config.json" in names and "model.weights.h5" in names:
            return "keras"
        return "torch"
    if head[:1] == b"\x80":  # legacy (non-zip) torch.save pickle
        return "torch"
    if head.lstrip()[:1] == b"{":
        data = read_json(path, "sharded checkpoint index")
        if isinstance(data, dict) and "weight_map" in data:
            return "index"
        raise CheckpointError(f"{path}: a JSON file without 'weight_map' is not a sharded checkpoint index")
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len <= min(size - 8, _MAX_SAFETENSORS_HEADER) and head[8:9] == b"{":
            return "safetensors"
    raise CheckpointError(
        f"{path}: not a checkpoint (expected safetensors, a PyTorch .bin, an HDF5 tf_model.h5, a .keras "
        "archive or a sharded index)"
    )


def _check_zip_sizes(path: Path, members: list, size: int) -> None:
    """Refuse archives whose declared member sizes are absurd (before anything inflates them)."""
    if len(members) > _MAX_ZIP_MEMBERS:
        raise CheckpointError(f"{path}: zip archive declares {len(members)} members (at most {_MAX_ZIP_MEMBERS} allowed)")
    total = 0
    for index, member in enumerate(members):
        total += member.file_size
        if member.file_size > _MAX_ZIP_RATIO * max(member.compress_size, 1) + (1 << 20) or total > _MAX_TENSOR_BYTES:
            raise CheckpointError(
                f"{path}: zip member #{index} declares {member.file_size} bytes from {member.compress_size} compressed "
                f"(archive of {size} bytes); refused before inflating it (ratio above {_MAX_ZIP_RATIO} or over "
                f"{_MAX_TENSOR_BYTES} bytes in all)"
            )


def read_json(path: str | os.PathLike, what: str = "JSON file", error: type[ValueError] | None = None):
    """Parse a JSON file; invalid, deeply nested, oversized or non-UTF-8 content is a :class:`CheckpointError`
    (or ``error``) naming the file, never a ``RecursionError``, and never quoting the file's content."""
    path = Path(path)
    error = error or CheckpointError
    size = path.stat().st_size
    if size > _MAX_JSON_BYTES:
        raise error(f"{path}: {what} of {size} bytes is larger than the {_MAX_JSON_BYTES} bytes allowed")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{path} is not valid JSON ({what} is not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise error(f"{path} is not valid JSON ({what}; line {err.lineno}, column {err.colno}: {err.msg})") from None
    except RecursionError:
        raise error(f"{path} is not valid JSON ({what} nested too deeply)") from None


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

    The header is checked as the safetensors library checks it before any tensor is built: integer
    shapes and offsets, sizes computed exactly (no int64 overflow), tensors that tile the data without
    gaps or overlaps, nothing outside the file. Anything else raises a :class:`CheckpointError` naming the
    file and the tensor.
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
        except UnicodeDecodeError:
            raise CheckpointError(f"{path}: corrupted safetensors header (not UTF-8)") from None
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path}: corrupted safetensors header ({err.msg} at byte {err.pos})") from None
        except RecursionError:
            raise CheckpointError(f"{path}: corrupted safetensors header (nested too deeply)") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: corrupted safetensors header (not an object)")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise CheckpointError(f"{path}: corrupted safetensors header (__metadata__ must map strings to strings)")
        entries = [_safetensors_entry(path, name, info) for name, info in header.items()]
        data_len = size - 8 - header_len
        position = 0
        for name, _, _, begin, end in sorted(entries, key=lambda e: (e[3], e[4])):
            if begin != position:
                raise CheckpointError(
                    f"{path}: tensor {name!r} starts at byte {begin} of the data, expected {position} "
                    "(tensors overlap or leave a gap); the file is corrupted"
                )
            position = end
        if position != data_len:
            raise CheckpointError(
                f"{path}: the tensors cover {position} bytes but the file holds {data_len} data bytes; "
                "the file is truncated or corrupted"
            )
        data = handle.read()
    out: dict[str, np.ndarray] = {}
    raw: dict[str, np.ndarray] = {}
    checked = CHECKSUM_KEY in metadata
    for name, dtype_name, shape, begin, end in entries:
        chunk = data[begin:end]
        if checked and dtype_name in _ST_DTYPES:
            raw[name] = np.frombuffer(chunk, dtype=np.dtype(_ST_DTYPES[dtype_name]).newbyteorder("<")).reshape(shape)
        if dtype_name == "BF16":
            array = (np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
        else:
            array = np.frombuffer(chunk, dtype=np.dtype(_ST_DTYPES[dtype_name]).newbyteorder("<")).reshape(shape)
            if upcast and array.dtype in (np.float16, np.float64):
                array = array.astype(np.float32)
        out[name] = np.array(array)  # own the memory, writable
    if checked and len(raw) == len(out):
        if tensors_digest(raw) != metadata[CHECKSUM_KEY]:
            raise CheckpointError(f"{path}: checksum mismatch: the tensor data is corrupted (the file was written by segformer)")
    return out


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _safetensors_entry(path: Path, name: str, info) -> tuple[str, str, list[int], int, int]:
    """``(name, dtype, shape, begin, end)`` of one header entry, every field checked (exact integers)."""
    try:
        dtype_name, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: corrupted safetensors entry for {name!r} (needs dtype, shape, data_offsets)") from None
    if not isinstance(dtype_name, str) or not (dtype_name == "BF16" or dtype_name in _ST_DTYPES):
        raise CheckpointError(
            f"{path}: tensor {name!r} has an unsupported dtype; supported: {['BF16', *_ST_DTYPES]}"
        )
    if not isinstance(shape, list) or len(shape) > 64 or not all(_is_int(d) and d >= 0 for d in shape):
        raise CheckpointError(f"{path}: tensor {name!r} has an invalid shape (a list of at most 64 integers >= 0 expected)")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) and o >= 0 for o in offsets):
        raise CheckpointError(f"{path}: tensor {name!r} has invalid data_offsets (two integers >= 0 expected)")
    begin, end = offsets
    itemsize = 2 if dtype_name == "BF16" else np.dtype(_ST_DTYPES[dtype_name]).itemsize
    nbytes = math.prod(shape) * itemsize  # exact Python integers: no overflow
    if end < begin or end - begin != nbytes:
        raise CheckpointError(
            f"{path}: tensor {name!r} ({dtype_name}, shape {shape}) needs {nbytes} bytes but its offsets "
            f"{begin}..{end} span {end - begin}; the file is corrupted"
        )
    return name, dtype_name, shape, begin, end


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
    check_torch_version(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, zip errors, truncation: torch raises many types
        raise torch_load_error(path, err) from None
    return _torch_obj_to_numpy(obj, path)


SAFE_TORCH_VERSION = (2, 6)
SAFE_KERAS_VERSION = (3, 12)


def _check_version(package: str, floor: tuple[int, int], path: str | os.PathLike, what: str, why: str, instead: str) -> None:
    """Refuse to load ``path`` with ``package`` older than ``floor`` (its safety guarantee has public bypasses)."""
    import importlib

    version = importlib.import_module(package).__version__
    if tuple(int(part) for part in re.findall(r"\d+", version)[:2]) < floor:
        wanted = ".".join(map(str, floor))
        raise ImportError(
            f"{os.fspath(path)} is {what}; loading it safely needs {package} >= {wanted} ({why}), found {package} "
            f"{version}: pip install '{package}>={wanted}', or {instead}"
        )


def check_keras_version(path: str | os.PathLike) -> None:
    """Refuse to open a ``.keras`` archive with a Keras whose safe mode has published bypasses (before 3.12)."""
    _check_version("keras", SAFE_KERAS_VERSION, path, "a .keras archive",
                   "safe mode of earlier versions can be bypassed to run code from the archive",
                   "convert it where a recent Keras is installed")


def check_torch_version(path: str | os.PathLike) -> None:
    """Refuse to unpickle with a torch whose ``weights_only=True`` has public bypasses (before 2.6)."""
    _check_version("torch", SAFE_TORCH_VERSION, path, "a PyTorch pickle",
                   "earlier versions' weights_only=True can be bypassed to run code from the file",
                   "use a safetensors file")


def torch_load_error(path: str | os.PathLike, err: BaseException) -> "CheckpointError":
    """A :class:`CheckpointError` for a failed ``torch.load(weights_only=True)``, without quoting the file's bytes."""
    text = str(err)
    if "weights_only" in text or "Unsupported global" in text or "UnpicklingError" in type(err).__name__:
        found = re.search(r"GLOBAL ([A-Za-z_][\w.]{0,200})", text)
        culprit = f" (it references {found.group(1)})" if found else ""
        return CheckpointError(
            f"{os.fspath(path)}: refused to load: the pickle needs more than tensors and plain containers{culprit}; "
            "loading it would run code from the file"
        )
    return CheckpointError(f"{os.fspath(path)}: not a readable PyTorch checkpoint ({type(err).__name__}; truncated or corrupted)")


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

    def visit(name: str, link) -> None:
        if isinstance(link, h5py.ExternalLink):
            raise CheckpointError(f"{path}: {name!r} is an HDF5 external link (to another file); refused, not followed")
        if isinstance(link, h5py.SoftLink):
            raise CheckpointError(f"{path}: {name!r} is an HDF5 soft link; refused, not followed")

    handle.visititems_links(visit)

    def check(name: str, node) -> None:
        if isinstance(node, h5py.Dataset) and (node.is_virtual or node.external):
            kind = "a virtual dataset" if node.is_virtual else "stored in external files"
            raise CheckpointError(f"{path}: dataset {name!r} is {kind}; refused, other files are never read")

    handle.visititems(check)


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
        weight_map = read_json(path, "sharded checkpoint index")["weight_map"]
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
    raise CheckpointError(f"{path}: a {kind} file is not a PyTorch-layout state dict; use the matching reader")


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
