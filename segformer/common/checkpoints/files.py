"""Checkpoint files: the standard names, the error type, the size limits, format detection, and finding the
weights of a model folder (:func:`find_weights_file`, the one place that knows a folder's file names)."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterable

from ..base.errors import CheckpointError
from ..base.json_io import read_json

__all__ = [
    "CheckpointError",
    "SAFE_WEIGHTS_NAME",
    "SAFE_WEIGHTS_INDEX_NAME",
    "PT_WEIGHTS_NAME",
    "PT_WEIGHTS_INDEX_NAME",
    "TF_WEIGHTS_NAME",
    "WEIGHTS_NAMES",
    "detect_format",
    "find_weights_file",
]

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
PT_WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
TF_WEIGHTS_NAME = "tf_model.h5"

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_MAX_TENSOR_BYTES = 1 << 36  # 64 GiB: far above any SegFormer tensor, far below what a crafted header declares
_MAX_ZIP_MEMBERS = 100_000
_MAX_ZIP_RATIO = 1000  # refuse .keras members that would inflate more than this (zip bombs)


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



# A model folder's weights, by format kind: the file names (and, for Keras, a glob) tried in this order.
WEIGHTS_NAMES: dict[str, tuple[str, ...]] = {
    "safetensors": (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME),
    "torch": (PT_WEIGHTS_NAME, PT_WEIGHTS_INDEX_NAME),
    "h5": (TF_WEIGHTS_NAME,),
    "keras": ("*.keras",),
}


def find_weights_file(folder: str | os.PathLike, prefer: Iterable[str] = ("safetensors", "torch", "h5")) -> Path:
    """The weights file of a model folder: the first file found among ``prefer``'s kinds (keys of
    :data:`WEIGHTS_NAMES`), in that order. ``FileNotFoundError`` lists every name looked for."""
    folder = Path(folder)
    prefer = list(prefer)
    unknown = [kind for kind in prefer if kind not in WEIGHTS_NAMES]
    if unknown:
        raise ValueError(f"prefer: unknown weights kinds {unknown}; choose from {list(WEIGHTS_NAMES)}")
    for kind in prefer:
        for name in WEIGHTS_NAMES[kind]:
            found = sorted(p for p in folder.glob(name) if p.is_file()) if "*" in name else [folder / name]
            for path in found:
                if path.is_file():
                    return path
    names = [n for kind in prefer for n in WEIGHTS_NAMES[kind]]
    raise FileNotFoundError(f"no weights file in {folder}; looked for {names}")
