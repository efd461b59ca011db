"""safetensors files in numpy, header checked before any tensor is built, and the checksum our files carry."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Mapping

import numpy as np

from ..base.atomic import atomic_write_bytes
from .files import _MAX_SAFETENSORS_HEADER, CheckpointError

__all__ = ["CHECKSUM_KEY", "read_safetensors", "save_safetensors", "tensors_digest"]


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
    """Write ``tensors`` as safetensors, atomically (serialized in memory first: a full disk is an ``OSError``
    naming ``path``, never safetensors' own error). ``metadata`` defaults to ``{"format": "pt"}`` (HF)."""
    from safetensors.numpy import save

    contiguous = {name: np.asarray(array, order="C") for name, array in tensors.items()}
    metadata = dict(metadata or {"format": "pt"})
    metadata[CHECKSUM_KEY] = tensors_digest(contiguous)
    atomic_write_bytes(path, save(contiguous, metadata=metadata))
    return Path(path)
