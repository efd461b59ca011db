"""Export a PyTorch SegFormer: ONNX (dynamic batch / height / width), ``torch.export``, ``torch.compile``.

Mirrored by ``segformer/tf/export.py`` (SavedModel, TFLite). Every file is written atomically
(:func:`segformer.common.base.atomic.atomic_path`): an interrupted export leaves any previous file intact.

The exported graph is the eval-mode model (fast path: fused attention, folded decode head) and returns
logits only: ``(B, num_labels, ceil(H/4), ceil(W/4))``, or ``(B, num_labels, H, W)`` with
``full_resolution=True`` (bilinear upsampling inside the graph, ``align_corners=False``).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..common.base.atomic import atomic_path
from ..common.inference.rules import as_size_pair
from ..common.model.outputs import logits_of

__all__ = ["LogitsModule", "export_onnx", "export_program", "compile_model", "bf16_logits"]

_MIN_OPSET = 17


class LogitsModule(nn.Module):
    """Wraps a segmentation model so that ``forward(pixel_values (B, C, H, W))`` returns the logits tensor
    ``(B, K, h, w)`` (optionally upsampled to ``(H, W)``), the single-output form exporters want."""

    def __init__(self, model: nn.Module, full_resolution: bool = False) -> None:
        super().__init__()
        self.model = model
        self.full_resolution = bool(full_resolution)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        logits = logits_of(self.model(pixel_values))
        if self.full_resolution:
            logits = F.interpolate(logits, size=pixel_values.shape[2:], mode="bilinear", align_corners=False)
        return logits


def _example(model: nn.Module, input_size: int | Sequence[int], batch: int) -> torch.Tensor:
    height, width = as_size_pair("input_size", input_size)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    channels = int(getattr(getattr(model, "config", None), "num_channels", 3))
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, channels, height, width, generator=generator, dtype=dtype)


def _eval_copy(model: nn.Module, full_resolution: bool) -> LogitsModule:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    wrapped = LogitsModule(copy.deepcopy(model), full_resolution=full_resolution)
    return wrapped.eval()


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    opset: int = 17,
    dynamic: bool = True,
    input_size: int | Sequence[int] = (512, 512),
    batch: int = 1,
    full_resolution: bool = False,
    overwrite: bool = True,
) -> Path:
    """Write ``model`` (eval mode; the caller's model is not modified) as an ONNX file.

    Args:
        path: the ``.onnx`` file to write (atomically; weights inside the file).
        opset: ONNX opset, at least 17.
        dynamic: batch, height and width as dynamic axes (``batch``, ``height``, ``width``); otherwise the
            graph is fixed to ``(batch, C, *input_size)``.
        input_size, batch: the example input traced for export, ``(height, width)``.
        full_resolution: upsample the logits to the input size inside the graph.

    The graph has one input ``pixel_values`` (B, C, H, W) float32 and one output ``logits``. It is
    traced with the TorchScript exporter (``dynamo=False``), which needs no extra package; the dynamic
    sizes are checked by running the file at two sizes in the tests.
    """
    if not isinstance(opset, int) or opset < _MIN_OPSET:
        raise ValueError(f"opset must be an int >= {_MIN_OPSET}, got {opset!r}")
    wrapped = _eval_copy(model, full_resolution)
    example = _example(model, input_size, batch)
    axes = None
    if dynamic:
        axes = {
            "pixel_values": {0: "batch", 2: "height", 3: "width"},
            "logits": {0: "batch", 2: "logits_height", 3: "logits_width"},
        }
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape -> int conversions in input checks
        torch.onnx.export(
            wrapped,
            (example,),
            str(tmp),
            dynamo=False,
            input_names=["pixel_values"],
            output_names=["logits"],
            opset_version=opset,
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    return path


def export_program(
    model: nn.Module,
    input_size: int | Sequence[int] = (512, 512),
    batch: int = 1,
    dynamic: bool = False,
    full_resolution: bool = False,
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of the eval-mode logits function (:class:`LogitsModule`).

    With ``dynamic`` the batch is a dynamic dimension (height and width stay static: the sequence
    reduction convs make the spatial sizes piecewise functions that the exporter specializes on).
    Save it with ``torch.export.save(program, path)``.
    """
    wrapped = _eval_copy(model, full_resolution)
    example = _example(model, input_size, batch)
    shapes: Any = None
    if dynamic:
        shapes = {"pixel_values": {0: torch.export.Dim("batch", min=1, max=1024)}}
    with torch.no_grad():
        return torch.export.export(wrapped, (example,), dynamic_shapes=shapes)


def compile_model(model: nn.Module, full_resolution: bool = False, **compile_kwargs: Any) -> Any:
    """``torch.compile`` of the eval-mode logits function; call it with ``pixel_values`` (B, C, H, W)."""
    wrapped = _eval_copy(model, full_resolution)
    return torch.compile(wrapped, **compile_kwargs)


def bf16_logits(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Logits computed under CPU (or CUDA) ``torch.autocast(dtype=torch.bfloat16)``, returned as float32."""
    if model.training:
        raise ValueError("model is in training mode (dropout, batch statistics); call model.eval() first")
    device_type = pixel_values.device.type
    wrapped = model if isinstance(model, LogitsModule) else LogitsModule(model)
    with torch.inference_mode(), torch.autocast(device_type=device_type, dtype=torch.bfloat16):
        logits = wrapped(pixel_values)
    return logits.float()
