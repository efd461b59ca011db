"""Int8 inference of a PyTorch SegFormer: dynamic int8 linear layers (``torch.ao``) and ONNX Runtime int8 of
our ONNX export. Mirrored by the TFLite int8 / float16 export in ``segformer/tf/export.py``.

* :func:`quantize_dynamic` - a copy of the model whose encoder ``nn.Linear`` layers run as dynamic int8
  (``torch.ao.quantization.quantize_dynamic``: int8 weights, activations quantized per call). The decode head
  stays float32, so the eval fast path (its folded head reads the float weights of ``linear_c`` /
  ``linear_fuse`` / ``classifier``) still runs; the quantized copy is for inference only.
* :func:`export_onnx_int8` - our ONNX export (:func:`segformer.pt.export.export_onnx`, dynamic batch / height
  / width) quantized by ONNX Runtime (:func:`segformer.common.inference.quantization.quantize_onnx`): static int8 (QDQ)
  calibrated on the user's images by default. This is the int8 path that pays on CPU (see
  ``benchmarks/README.md``); static int8 inside PyTorch (``torch.ao`` FX / PT2E) is not offered: on x86 it
  runs fast only after ``torch.compile`` with the Inductor backend, and the same int8 kernels are what ONNX
  Runtime uses without a compile step.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..common.inference.quantization import quantize_onnx
from .export import export_onnx

__all__ = ["quantize_dynamic", "export_onnx_int8", "quantized_linear_names"]


def quantized_linear_names(model: nn.Module) -> list[str]:
    """The ``nn.Linear`` layers :func:`quantize_dynamic` converts: every one outside the decode head."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and not (name == "decode_head" or name.startswith("decode_head."))]


def quantize_dynamic(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with its encoder linear layers as dynamic int8 (``torch.qint8`` weights).

    The caller's model is not modified. The decode head is left float32 (the fast path folds it), as are
    convolutions, LayerNorms and attention; on CPU this gives about the float32 speed (the int8 GEMMs save
    less than the per-call activation quantization costs at these sizes; ``benchmarks/README.md``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = quantized_linear_names(model)
    if not names:
        raise ValueError(f"model ({type(model).__name__}) has no nn.Linear layers outside its decode head to quantize")
    quantized = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice (moving to torchao)
        return torch.ao.quantization.quantize_dynamic(quantized, set(names), dtype=torch.qint8)


def export_onnx_int8(
    model: nn.Module,
    path: str | os.PathLike,
    calibration: Sequence[np.ndarray] | None = None,
    mode: str = "static",
    input_size: int | Sequence[int] = (512, 512),
    opset: int = 17,
    overwrite: bool = True,
    **export_kwargs: Any,
) -> Path:
    """Export ``model`` to ONNX and write its ONNX Runtime int8 copy to ``path`` (atomically).

    Args:
        calibration: pixel values ``(1, C, H, W)`` from
            :func:`segformer.common.inference.quantization.calibration_pixel_values` (the user's images through the
            model's processor); needed for ``mode="static"``.
        mode: ``"static"`` (QDQ, calibrated activations) or ``"dynamic"`` (weights only).
        input_size: the example size traced for export; the file keeps dynamic batch / height / width.
        export_kwargs: more options of :func:`segformer.pt.export.export_onnx` (``full_resolution``).
    """
    if mode == "static" and not calibration:
        raise ValueError("static int8 needs calibration images (calibration=[pixel values ...]); none were given")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"file {os.fspath(path)!r} already exists; pass overwrite=True to replace it")
    with tempfile.TemporaryDirectory(prefix="segformer-onnx-") as scratch:
        float_path = export_onnx(model, Path(scratch) / "float32.onnx", opset=opset, input_size=input_size, **export_kwargs)
        return quantize_onnx(float_path, path, calibration=calibration, mode=mode, overwrite=overwrite)
