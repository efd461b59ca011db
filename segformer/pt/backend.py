"""The PyTorch adapter of :class:`segformer.Segmenter`, ``segformer predict`` / ``eval`` and the export checks:
numpy in, numpy out.

Mirrored by ``segformer/tf/backend.py`` (same names, same signatures). Everything framework-specific that
those callers need is here, once: loading a checkpoint with its report, the logits of a batch, one image's
streaming pass (:func:`segformer.pt.inference.predict_streaming`), per-image labels for ``evaluate``, the
device, and the thread policy of parallel pipelines.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..common.model.outputs import logits_of

__all__ = ["FRAMEWORK", "Backend", "adapted_threads", "available_devices", "check_device", "logits_of", "load_pretrained"]

FRAMEWORK = "pt"


@contextlib.contextmanager
def adapted_threads() -> Iterator[int]:
    """Run the block with PyTorch's intra-op threads lowered to the CPUs no other process is using right now
    (:func:`segformer.common.base.threads.threads_for_now` of ``torch.get_num_threads()``); the count is
    restored after the block, and yielded. Our runners (``Segmenter``, the trainer, ``segformer bench``) wrap
    each forward pass or training step in it; a no-op under ``SEGFORMER_THREAD_POLICY=0`` or on one thread.
    PyTorch only: TensorFlow fixes its intra-op pool when its runtime starts, so ``segformer/tf/backend.py``
    has no twin. A library user can wrap their own calls::

        with adapted_threads():
            logits = model(pixel_values).logits
    """
    from ..common.base.threads import policy_enabled, record_elsewhere, threads_for_now

    before = torch.get_num_threads()
    if before < 2 or not policy_enabled():
        yield before
        return
    now = threads_for_now(before)
    if now != before:
        torch.set_num_threads(now)
    try:
        yield now
    finally:
        record_elsewhere()
        if now != before:
            torch.set_num_threads(before)


def load_pretrained(source: str) -> tuple[Any, Any]:
    """``(model, report)``: ``SegformerForSemanticSegmentation.from_pretrained(source)`` in eval mode and its
    :class:`~segformer.common.checkpoints.matching.LoadReport`."""
    from .modeling import SegformerForSemanticSegmentation

    model, report = SegformerForSemanticSegmentation.from_pretrained(source, output_loading_info=True)
    return model.eval(), report


def available_devices() -> list[str]:
    """The device names this PyTorch build can use on this machine (``"cpu"``, ``"cuda:0"``, ..., ``"mps"``)."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def check_device(device: Any) -> Any:
    """``device`` (``None``, a name or a ``torch.device``) if this build and machine have it; otherwise one
    ``ValueError`` listing :func:`available_devices` (``"cuda"`` on a CPU-only build, ``"bogus"``)."""
    from ..common.inference.rules import device_error

    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise device_error(device, "PyTorch", available_devices(), "not a PyTorch device name") from None
    if parsed.type == "cpu":
        return device
    module = getattr(torch, parsed.type, None) if parsed.type != "mps" else getattr(torch.backends, "mps", None)
    is_available = getattr(module, "is_available", None)
    if not callable(is_available) or not is_available():
        raise device_error(device, "PyTorch", available_devices(), f"this build or machine has no {parsed.type}")
    count = getattr(module, "device_count", None)
    if parsed.index is not None and callable(count) and parsed.index >= count():
        raise device_error(device, "PyTorch", available_devices(), f"{count()} {parsed.type} device(s)")
    return device


def _on_cpu(device: Any) -> bool:
    return device is None or str(device).split(":")[0] == "cpu"


class Backend:
    """A PyTorch model (moved to ``device`` when one is given) behind numpy calls, run in eval mode.

    Every call runs the model in eval mode (dropout off, BatchNorm on its running statistics), whatever mode the
    caller left it in: a model switched to ``train()`` after the segmenter was built (which put it in eval mode)
    still gives the same, deterministic results. The mode the caller had set (of every submodule) is restored
    when the outermost call ends (:meth:`eval_mode`), so a model being fine-tuned keeps training afterwards."""

    framework = FRAMEWORK
    serialized = False  # model calls may run in parallel threads (each on its share of the intra-op threads)

    def __init__(self, model: Any, device: Any = None) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.device = check_device(device)
        self.model = model
        self._eval_lock = threading.Lock()
        self._eval_depth = 0
        self._modes: list[tuple[torch.nn.Module, bool]] = []
        model.eval()
        if device is not None:
            model.to(device)

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[None]:
        """The model in eval mode while the block runs; every submodule's previous mode back when the outermost
        block (of every thread) ends."""
        with self._eval_lock:
            if self._eval_depth == 0:
                self._modes = [(module, module.training) for module in self.model.modules()]
                self.model.eval()
            self._eval_depth += 1
        try:
            yield
        finally:
            with self._eval_lock:
                self._eval_depth -= 1
                if self._eval_depth == 0:
                    for module, training in self._modes:
                        module.training = training
                    self._modes = []

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
        with self.eval_mode(), torch.inference_mode(), adapted_threads():
            logits = logits_of(self.model(tensor)).float()
            if full_resolution:
                logits = F.interpolate(logits, size=tuple(tensor.shape[2:]), mode="bilinear", align_corners=False)
            return logits.cpu().numpy()

    def stream(self, pixel_values: np.ndarray, **kwargs: Any) -> Any:
        """:func:`segformer.pt.inference.predict_streaming` of one image ``(1, C, H, W)`` (same keywords):
        a :class:`~segformer.common.inference.streaming.StreamResult` of numpy arrays."""
        from .inference import predict_streaming

        with self.eval_mode(), adapted_threads():
            return predict_streaming(self.model, self._tensor(pixel_values), **kwargs)

    def labels(self, pixel_values: Any, size: tuple[int, int], **kwargs: Any) -> torch.Tensor:
        """int64 ``(B, H, W)`` labels at ``size`` (:func:`segformer.pt.inference.predict_labels`, keywords as
        ``predict_logits``), as the trainers' ``evaluate`` takes them."""
        from .inference import predict_labels

        with self.eval_mode(), adapted_threads():
            return predict_labels(self.model, self._tensor(pixel_values), output_size=size, **kwargs)
