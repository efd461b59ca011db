"""The PyTorch adapter of :class:`segformer.Segmenter`, ``segformer predict`` / ``eval`` and the export checks:
numpy in, numpy out.

Mirrored by ``segformer/tf/backend.py`` (same names, same signatures). Everything framework-specific that
those callers need is here, once: loading a checkpoint with its report, the logits of a batch, one image's
streaming pass (:func:`segformer.pt.inference.predict_streaming`), per-image labels for ``evaluate``, the
device, and the thread policy of parallel pipelines.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..common.model.outputs import logits_of

__all__ = ["FRAMEWORK", "Backend", "logits_of", "load_pretrained"]

FRAMEWORK = "pt"


def load_pretrained(source: str) -> tuple[Any, Any]:
    """``(model, report)``: ``SegformerForSemanticSegmentation.from_pretrained(source)`` in eval mode and its
    :class:`~segformer.common.checkpoints.matching.LoadReport`."""
    from .modeling import SegformerForSemanticSegmentation

    model, report = SegformerForSemanticSegmentation.from_pretrained(source, output_loading_info=True)
    return model.eval(), report


def _on_cpu(device: Any) -> bool:
    return device is None or str(device).split(":")[0] == "cpu"


class Backend:
    """A PyTorch model (put in eval mode, moved to ``device`` when one is given) behind numpy calls."""

    framework = FRAMEWORK
    serialized = False  # model calls may run in parallel threads (each on its share of the intra-op threads)

    def __init__(self, model: Any, device: Any = None) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.device = device
        model.eval()
        if device is not None:
            model.to(device)

    @staticmethod
    def default_workers(device: Any = None) -> int:
        """Parallel pipelines by default: on the CPU one per intra-op thread (``torch.get_num_threads()``),
        at most :data:`segformer.segmenter.MAX_DEFAULT_WORKERS`; on an accelerator 2 (the model on it,
        decoding and upsampling of the other image beside it)."""
        from ..segmenter import MAX_DEFAULT_WORKERS

        if _on_cpu(device):
            return max(1, min(MAX_DEFAULT_WORKERS, torch.get_num_threads()))
        return 2

    @contextlib.contextmanager
    def split_threads(self, workers: int) -> Iterator[None]:
        """On the CPU with ``workers >= 2``: each worker gets ``get_num_threads() // workers`` intra-op
        threads (at least 1) while the block runs; the previous setting is restored after it."""
        if workers < 2 or not _on_cpu(self.device):
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(max(1, before // workers))
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _tensor(self, pixel_values: Any) -> torch.Tensor:
        tensor = pixel_values if isinstance(pixel_values, torch.Tensor) else torch.from_numpy(np.asarray(pixel_values))
        return tensor if self.device is None else tensor.to(self.device)

    def logits(self, pixel_values: np.ndarray, full_resolution: bool = False) -> np.ndarray:
        """float32 ``(B, K, h, w)`` model-resolution logits of float32 ``(B, C, H, W)`` pixel values (with
        ``full_resolution``: upsampled bilinearly, ``align_corners=False``, to ``(H, W)``)."""
        tensor = self._tensor(pixel_values)
        with torch.inference_mode():
            logits = logits_of(self.model(tensor)).float()
            if full_resolution:
                logits = F.interpolate(logits, size=tuple(tensor.shape[2:]), mode="bilinear", align_corners=False)
            return logits.cpu().numpy()

    def stream(self, pixel_values: np.ndarray, **kwargs: Any) -> Any:
        """:func:`segformer.pt.inference.predict_streaming` of one image ``(1, C, H, W)`` (same keywords):
        a :class:`~segformer.common.inference.streaming.StreamResult` of numpy arrays."""
        from .inference import predict_streaming

        return predict_streaming(self.model, self._tensor(pixel_values), **kwargs)

    def labels(self, pixel_values: Any, size: tuple[int, int], **kwargs: Any) -> torch.Tensor:
        """int64 ``(B, H, W)`` labels at ``size`` (:func:`segformer.pt.inference.predict_labels`, keywords as
        ``predict_logits``), as the trainers' ``evaluate`` takes them."""
        from .inference import predict_labels

        return predict_labels(self.model, self._tensor(pixel_values), output_size=size, **kwargs)
