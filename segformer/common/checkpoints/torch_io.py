"""PyTorch pickles (``.bin`` / ``.pth``) read with ``weights_only=True`` into numpy, and the version floors of
the two unpickling readers (torch for pickles, Keras for ``.keras`` archives)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from .files import CheckpointError

__all__ = ["SAFE_KERAS_VERSION", "SAFE_TORCH_VERSION", "check_keras_version", "check_torch_version", "read_torch_bin", "torch_load_error"]


def read_torch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a ``torch.save`` file with ``weights_only=True`` (no code from the file runs) into numpy.

    A pickle that needs more than tensors and plain containers is refused with an explanation.
    A mmcv-style checkpoint ``{"state_dict": {...}, "meta": ...}`` returns the whole dict's tensors
    flattened only at top level: callers that expect a plain state dict use :func:`load_state_dict`.
    """
    path = Path(path)
    from ..base.deps import require

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


def _check_storage(tensor, path: Path) -> None:
    """Refuse, before copying, a tensor that claims more elements than its stored bytes hold: a pickle can expand
    a 1-element storage to 60000 x 60000 with zero strides (13 GB from a 1 KB file); a saved tensor's elements
    are all stored (views of a larger storage hold fewer). Then the copy is checked against the memory limit."""
    from ..base.resources import check_memory

    stored = tensor.untyped_storage().nbytes()
    claimed = tensor.numel() * tensor.element_size()
    if claimed > stored:
        raise CheckpointError(
            f"{os.fspath(path)}: a tensor of shape {tuple(tensor.shape)} claims {tensor.numel():,} elements "
            f"({claimed:,} bytes) but the file stores {stored:,} bytes for it (overlapping / zero strides); refused "
            "before expanding it"
        )
    check_memory(claimed, f"{os.fspath(path)}", f"a tensor of shape {tuple(tensor.shape)}")


def _torch_obj_to_numpy(obj, path: Path):
    import torch

    if isinstance(obj, torch.Tensor):
        _check_storage(obj, path)
        tensor = obj.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy().copy()
    if isinstance(obj, Mapping):
        return {str(k): _torch_obj_to_numpy(v, path) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_torch_obj_to_numpy(v, path) for v in obj)
    return obj
