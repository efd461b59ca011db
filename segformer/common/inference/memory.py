"""How much memory segmenting one image takes, estimated before any work, and how much the machine has.

The estimate follows what :mod:`segformer.common.inference.streaming` keeps (numbers in bytes, ``H x W`` the image,
``K`` classes, ``h0`` the first stage's width, ``D`` the decoder width, ``m`` the MLP ratio):

* the image as uint8 (``3 H W``), the label map (``4 H W``, or ``0`` when written to a file on disk), the
  confidence map when kept (``4 H W``);
* the region the model runs on at once (the whole image in ``whole`` mode, ``window_batch`` windows in
  ``slide`` mode) as float32 pixel values (``12`` per pixel) plus the model's activations, dominated by the
  first stage's MLP, the decode head and the logits at 1/4 resolution: ``4 (m h0 + D + K) / 16`` per pixel;
  without fused attention (TensorFlow) also every stage's attention matrix ``heads x N x N / sr^2`` floats;
* the model-resolution logits kept for the bands: the whole image's (``4 K H W / 16``) in ``whole`` mode, about
  ``ceil(crop_h / stride_h) + 1`` rows of windows in ``slide`` mode (``4 K crop_h W / 16`` each);
* a few bands of :data:`~segformer.common.inference.streaming.BAND_ELEMENTS` floats, and the framework itself.

It is an estimate (allocators round up and keep caches); ``benchmarks/`` compares it with measured peaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..base.resources import available_memory, check_memory, format_bytes
from ..model.config import SegformerConfig
from .rules import as_size_pair
from .streaming import BAND_ELEMENTS

__all__ = ["MemoryEstimate", "available_memory", "check_inference_memory", "check_training_memory", "estimate_memory",
           "format_bytes", "FRAMEWORK_BASELINE", "TRAINING_FACTOR"]

FRAMEWORK_BASELINE = {"pt": 350 * 2**20, "tf": 700 * 2**20}
# A training step keeps every layer's activations for the backward pass, and their gradients: b0, batch 8, 512 x 512
# peaked at 2.7-3.4 GB (PyTorch, CPU) where the inference estimate of that batch is 0.3 GB.
TRAINING_FACTOR = 10


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes by part; ``total`` is their sum."""

    image: int
    outputs: int
    model: int
    kept_logits: int
    bands: int
    framework: int

    @property
    def total(self) -> int:
        return self.image + self.outputs + self.model + self.kept_logits + self.bands + self.framework

    def describe(self) -> str:
        parts = ", ".join(f"{name} {format_bytes(getattr(self, name))}"
                          for name in ("image", "outputs", "model", "kept_logits", "bands", "framework"))
        return f"{format_bytes(self.total)} ({parts})"


def _model_bytes(config: SegformerConfig, height: int, width: int, batch: int, fused_attention: bool) -> int:
    pixels = height * width * batch
    per_pixel = 12 + 4 * (config.mlp_ratios[0] * config.hidden_sizes[0] + config.decoder_hidden_size
                          + config.num_labels) / 16
    total = pixels * per_pixel
    if not fused_attention:
        size_h, size_w = height, width
        for index, stride in enumerate(config.strides):
            size_h, size_w = math.ceil(size_h / stride), math.ceil(size_w / stride)
            tokens = size_h * size_w
            reduced = max(size_h // config.sr_ratios[index], 1) * max(size_w // config.sr_ratios[index], 1)
            total = max(total, pixels * per_pixel + 8 * batch * config.num_attention_heads[index] * tokens * reduced)
    return int(total)


def estimate_memory(
    config: SegformerConfig,
    image_size: Sequence[int],
    mode: str = "whole",
    crop_size: int | Sequence[int] = (512, 512),
    stride: int | Sequence[int] = (341, 341),
    framework: str = "pt",
    keep_confidence: bool = False,
    labels_on_disk: bool = False,
    window_batch: int = 1,
) -> MemoryEstimate:
    """Estimated peak memory of segmenting one ``image_size = (H, W)`` image at its own size (see the module
    docstring). ``framework`` ``"pt"`` runs fused (memory-efficient) attention, ``"tf"`` materializes it."""
    height, width = as_size_pair("image_size", image_size)
    classes = config.num_labels
    pixels = height * width
    outputs = (0 if labels_on_disk else 4 * pixels) + (4 * pixels if keep_confidence else 0)
    fused = framework == "pt"
    if mode == "slide":
        crop_h, crop_w = as_size_pair("crop_size", crop_size)
        stride_h, _ = as_size_pair("stride", stride)
        crop_h, crop_w = min(crop_h, height), min(crop_w, width)
        model = _model_bytes(config, crop_h, crop_w, window_batch, fused)
        grid_rows = math.ceil(crop_h / stride_h) + 1
        kept = 4 * classes * grid_rows * crop_h * width // 16
    else:
        model = _model_bytes(config, height, width, 1, fused)
        kept = 4 * classes * pixels // 16
    bands = 4 * 4 * min(BAND_ELEMENTS, classes * width * 256)
    return MemoryEstimate(image=3 * pixels, outputs=outputs, model=model, kept_logits=kept, bands=bands,
                          framework=FRAMEWORK_BASELINE.get(framework, FRAMEWORK_BASELINE["tf"]))


def check_inference_memory(config: SegformerConfig, input_size: Sequence[int], argument: str, mode: str = "whole",
                           extra: int = 0, **options: Any) -> int:
    """Refuse, before the model runs, a ``input_size = (h, w)`` model input whose :func:`estimate_memory` (plus
    ``extra`` bytes, beside the framework already loaded) exceeds what this process can allocate
    (:func:`~segformer.common.base.resources.check_memory`), saying which input side would fit; ``argument``
    names the setting that asked for it. ``options`` are :func:`estimate_memory`'s. Returns the bytes."""
    height, width = as_size_pair("input_size", input_size)
    estimate = estimate_memory(config, (height, width), mode, **options)
    needed = estimate.total - estimate.framework + extra
    per_pixel = needed / (height * width)

    def fits(left: int) -> str:
        side = int((left / per_pixel) ** 0.5)
        return f"a model input up to about {side}x{side} pixels would fit"

    check_memory(needed, argument, f"a {height}x{width} model input in {mode} mode", fits)
    return needed


def check_training_memory(config: SegformerConfig, crop_size: Sequence[int], batch_size: int, framework: str = "pt"
                          ) -> int:
    """Refuse, before the first training step, a ``batch_size x crop_size`` step that cannot fit: the inference
    estimate of that batch times :data:`TRAINING_FACTOR`, plus weights, gradients and two Adam moments (16 bytes
    per parameter). Raises :class:`~segformer.common.base.errors.ResourceLimitError` naming both settings."""
    from ..model.weights import count_parameters

    height, width = as_size_pair("crop_size", crop_size)
    activations = _model_bytes(config, height, width, batch_size, framework == "pt")
    needed = TRAINING_FACTOR * activations + 16 * count_parameters(config)
    check_memory(needed, f"crop_size={height}x{width} with batch_size={batch_size} (--crop-size / --batch-size)",
                 f"one training step of {batch_size} crops of {height}x{width}",
                 "a smaller crop or batch would fit (halving the crop side needs about a quarter)")
    return needed
