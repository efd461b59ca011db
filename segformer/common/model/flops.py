"""Analytic floating-point operation counts of a SegFormer forward pass, from the config alone.

A multiply-add counts as 2 FLOPs. Counted: convolutions (patch embeddings, sequence reduction, the 3x3
depthwise convs of the Mix-FFN, the decode head's 1x1 convs), linear layers and the two attention
matmuls (``Q K^T`` and ``P V``). Not counted: biases, norms, activations, softmax, bilinear resizes,
residual additions (all memory-bound and together a few percent of the total). Paper / mmcv "FLOPs"
are multiply-adds, i.e. half of :attr:`FlopCount.total` (b0 at 512x512 with 150 classes: 8.4 G
multiply-adds in the paper).

``plain`` is the textbook path that training uses (per-stage projection, upsampling, 4D concatenation,
``linear_fuse``); ``fast`` is the eval fast path of the decode head (``linear_fuse`` folded into each
stage's projection at the stage's own resolution, plus the per-call folding of the weights). The encoder
is the same in both. The mmseg head (``decode_head_type="mmseg"``) has the same plain count (its extra BatchNorms
and ReLUs are not counted); its fast path runs each stage's projection (BatchNorm folded in) and then the
stage's D x D block of ``linear_fuse`` at the stage's own resolution, and folds with elementwise scaling only.
A benchmark that divides the *plain* count by the fast path's time reports
"equivalent plain-path work per second".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..base.sizes import positive_int
from .config import SegformerConfig

__all__ = ["FlopCount", "count_flops", "PATHS"]

PATHS = ("plain", "fast")


@dataclass(frozen=True)
class FlopCount:
    """FLOPs (2 x multiply-adds) of one forward pass, split by part; ``total`` is their sum."""

    encoder: int
    decode_head: int
    breakdown: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.encoder + self.decode_head

    @property
    def gflops(self) -> float:
        return self.total / 1e9


def count_flops(
    config: SegformerConfig,
    height: int,
    width: int,
    batch: int = 1,
    path: str = "plain",
    task: str = "semantic_segmentation",
) -> FlopCount:
    """FLOPs of ``batch`` images of ``height x width`` through the model of ``config``.

    Args:
        path: ``"plain"`` or ``"fast"`` (decode head only; see the module docstring).
        task: ``"semantic_segmentation"`` (encoder + decode head), ``"base"`` (encoder only) or
            ``"image_classification"`` (encoder + linear classifier on the pooled last stage).
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {list(PATHS)}, got {path!r}")
    tasks = ("semantic_segmentation", "base", "image_classification")
    if task not in tasks:
        raise ValueError(f"task must be one of {list(tasks)}, got {task!r}")
    for name, value in (("height", height), ("width", width), ("batch", batch)):
        positive_int(name, value)
    sizes = config.stage_sizes(height, width)
    in_channels = [config.num_channels] + list(config.hidden_sizes[:-1])
    breakdown: dict[str, int] = {}
    encoder = 0
    for i, ((h, w), c_in, c) in enumerate(zip(sizes, in_channels, config.hidden_sizes)):
        n = h * w
        k = config.patch_sizes[i]
        r = config.sr_ratios[i]
        hidden = int(c * config.mlp_ratios[i])
        patch = n * c * c_in * k * k
        if r > 1:
            n_kv = (h // r) * (w // r)
            sr = n_kv * c * c * r * r
        else:
            n_kv = n
            sr = 0
        attention = n * c * c + sr + 2 * n_kv * c * c + 2 * n * n_kv * c + n * c * c  # q, sr, k+v, QK^T+PV, out
        mlp = n * c * hidden + n * hidden * 9 + n * hidden * c  # dense1, 3x3 depthwise, dense2
        stage = 2 * batch * (patch + config.depths[i] * (attention + mlp))
        breakdown[f"stage{i + 1}"] = stage
        encoder += stage
    head = 0
    if task == "semantic_segmentation":
        d = config.decoder_hidden_size
        n1 = sizes[0][0] * sizes[0][1]
        projections = sum(h * w * c * d for (h, w), c in zip(sizes, config.hidden_sizes))
        classifier = n1 * d * config.num_labels
        if path == "plain":
            fuse = n1 * config.num_encoder_blocks * d * d
            head = 2 * batch * (projections + fuse + classifier)
        elif config.decode_head_type == "mmseg":  # the ReLU after each stage stops the fold: D x D per stage
            blocks = sum(h * w * d * d for h, w in sizes)
            head = 2 * batch * (projections + blocks + classifier)
        else:
            folding = sum(d * d * c for c in config.hidden_sizes)  # W_fuse block @ W_proj, once per call
            head = 2 * (batch * (projections + classifier) + folding)
        breakdown["decode_head"] = head
    elif task == "image_classification":
        head = 2 * batch * config.hidden_sizes[-1] * config.num_labels
        breakdown["classifier"] = head
    return FlopCount(encoder=encoder, decode_head=head, breakdown=breakdown)
