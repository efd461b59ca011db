"""Losses (PyTorch), with the semantics of Hugging Face's PT classes. Mirrored by ``segformer/tf/losses.py``.

* Segmentation, ``num_labels > 1``: logits (B, K, h, w) upsampled bilinearly (align_corners=False) to the
  labels' (B, H, W), cross-entropy averaged over the pixels whose label is not ``ignore_index``.
* Segmentation, ``num_labels == 1``: binary cross-entropy with logits per pixel, times the valid mask
  ``(labels >= 0) & (labels != ignore_index)``, averaged over *all* pixels (Hugging Face's choice).
* Classification by ``problem_type``: regression (MSE), single-label (CE), multi-label (BCE); when ``None``, by
  the label rule of :mod:`segformer.common.model.losses` (shared with TF).

Speed: the multi-class loss upsamples in channels-last memory and takes the softmax over the contiguous class
axis of the (B*H*W, K) view, where ``cross_entropy`` of the NCHW tensor runs a strided softmax over dim 1
(b0, batch 2 x 512 x 512 x 150 classes, 2 threads on a loaded machine: loss forward + backward 2.1-2.5 s instead
of 3.3-4.4 s). On the CPU, when the label height is a whole multiple of the logits' height (the usual 4x), it goes one step
further, :func:`banded_upsampled_cross_entropy`: one image and a band of rows at a time, so the full-resolution
(B, K, H, W) logits, their log-softmax and their gradient (1.26 GB each for b0 at batch 8 x 512 x 512 x 150) are
never built; glibc maps every block that large afresh and page-faults it in on each step, which made PyTorch's
b0 batch-8 step take 14-17 s where the arithmetic takes 5-6 s. Same value and gradients within float rounding.

Labels outside ``[0, num_labels)`` that are not the ignore index raise ``ValueError`` (instead of a
device-side assert or a silently wrong loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common.model.config import SegformerConfig
from ..common.model.losses import (
    IGNORE_CLASS_ID, invalid_labels, label_range_message, resolve_problem_type, segmentation_label_bound,
)

__all__ = [
    "semantic_segmentation_loss", "classification_loss", "check_segmentation_labels", "upsampled_cross_entropy",
    "banded_upsampled_cross_entropy", "LOSS_BAND_ELEMENTS",
]

# Upsampled logits per band of the banded loss, at most about this many floats (16 MB): small enough that glibc
# serves and reuses the block from its heap (blocks above 32 MiB are mapped and faulted in anew every time).
LOSS_BAND_ELEMENTS = 4 * 1024 * 1024


def check_segmentation_labels(labels: torch.Tensor, logits: torch.Tensor, config: SegformerConfig) -> None:
    """Validate segmentation labels (B, H, W) against logits (B, K, h, w); raise ValueError / TypeError."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of shape (batch, height, width), got {type(labels).__name__}")
    if labels.ndim != 3:
        raise ValueError(f"labels must have shape (batch, height, width), got shape {tuple(labels.shape)}")
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels batch size {labels.shape[0]} does not match pixel_values batch size {logits.shape[0]}"
        )
    if min(labels.shape[1:]) < 1:
        raise ValueError(f"labels must not be empty, got shape {tuple(labels.shape)}")
    num_labels, ignore = config.num_labels, config.semantic_loss_ignore_index
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        if num_labels > 1:
            raise TypeError(f"labels must be an integer tensor (class ids), got dtype {labels.dtype}")
        return
    upper = segmentation_label_bound(num_labels)
    bad = invalid_labels(labels, upper, ignore)
    if bool(bad.any()):
        raise ValueError(label_range_message(upper, ignore, torch.unique(labels[bad])[:10].tolist()))


def upsampled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``cross_entropy(interpolate(logits, labels' size, bilinear, align_corners=False), labels, ignore_index)``:
    the mean over the non-ignored pixels, computed with the classes contiguous (see the module docstring);
    on the CPU banded (:func:`banded_upsampled_cross_entropy`) when the label height is a whole multiple of the
    logits'.

    logits (B, K, h, w) floating point, labels (B, H, W) integer class ids.
    """
    height, out_height = logits.shape[2], labels.shape[1]
    # banded on the CPU only (its point is glibc's page faults; on a GPU the caching allocator has none and the
    # bands would be many small kernels), and never inside a traced / compiled graph
    if (out_height % height == 0 and logits.device.type == "cpu"
            and not (torch.jit.is_tracing() or torch.compiler.is_compiling())):
        return banded_upsampled_cross_entropy(logits, labels, ignore_index)
    k = logits.shape[1]
    upsampled = F.interpolate(logits.contiguous(memory_format=torch.channels_last), size=labels.shape[-2:],
                              mode="bilinear", align_corners=False)  # (B, K, H, W) in channels-last memory
    return F.cross_entropy(upsampled.permute(0, 2, 3, 1).reshape(-1, k), labels.reshape(-1).long(),
                           ignore_index=ignore_index)


def _band_rows(height: int, factor: int, out_width: int, classes: int, band_elements: int) -> int:
    """Logit rows per band: the band's upsampled rows, one halo row on each side included, within budget."""
    per_row = factor * out_width * classes  # upsampled floats per logit row
    return max(1, band_elements // max(per_row, 1) - 2)


class _BandedCrossEntropy(torch.autograd.Function):
    """Loss and gradient band by band, in one pass (no autograd inside, nothing recomputed).

    A band is logit rows ``[start, stop)`` of one image plus one halo row on each side, ``[lo, hi)``. Upsampling
    those rows by the whole factor maps every output row to the source coordinate the full upsampling gives it
    (``(i + 0.5) / factor - 0.5``); only the rows next to the halo edge clamp differently, and they are
    excluded (treated as ignored), so the kept rows are the full upsampling's exactly. Per band:
    ``log_softmax`` over the contiguous class axis, the loss at the labels, and, when a gradient is needed,
    ``softmax - one_hot`` (zero on ignored and halo rows) taken back through the upsampling
    (``upsample_bilinear2d_backward``) into the kept (B, K, h, w) gradient."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, band_elements: int):
        batch, k, height, width = logits.shape
        factor, out_width = labels.shape[1] // height, labels.shape[2]
        count = (labels != ignore_index).sum()
        band = _band_rows(height, factor, out_width, k, band_elements)
        need_grad = ctx.needs_input_grad[0]
        grad = torch.zeros_like(logits, memory_format=torch.channels_last) if need_grad else None
        total = logits.new_zeros(())
        for image in range(batch):
            for start in range(0, height, band):
                stop = min(start + band, height)
                lo, hi = max(start - 1, 0), min(stop + 1, height)
                rows = logits[image:image + 1, :, lo:hi].contiguous(memory_format=torch.channels_last)
                out_rows = (hi - lo) * factor
                up = F.interpolate(rows, size=(out_rows, out_width), mode="bilinear", align_corners=False)
                log_probs = torch.log_softmax(up.permute(0, 2, 3, 1).reshape(-1, k), dim=1)  # (rows * W, K)
                target = labels[image, lo * factor:hi * factor].reshape(-1).long()
                valid = target != ignore_index
                valid[: (start - lo) * factor * out_width] = False  # halo rows: clamped differently, not kept
                valid[(stop - lo) * factor * out_width:] = False
                safe = torch.where(valid, target, torch.zeros_like(target))[:, None]
                picked = log_probs.gather(1, safe)[:, 0]
                total -= torch.where(valid, picked, torch.zeros_like(picked)).sum()
                if need_grad:
                    probs = log_probs.exp_()  # d loss / d logit = softmax - one_hot, per kept pixel
                    probs.scatter_add_(1, safe, -valid[:, None].to(probs.dtype))
                    probs.mul_(valid[:, None])
                    band_grad = torch.ops.aten.upsample_bilinear2d_backward(
                        probs.view(1, out_rows, out_width, k).permute(0, 3, 1, 2), [out_rows, out_width],
                        [1, k, hi - lo, width], False, None, None,
                    )
                    grad[image:image + 1, :, lo:hi] += band_grad
        ctx.save_for_backward(grad, count.to(logits.dtype))
        return total / count  # 0 / 0 = nan when every pixel is ignored, as cross_entropy's mean

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        grad, count = ctx.saved_tensors
        return grad * (grad_output / count), None, None, None


def banded_upsampled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int,
                                   band_elements: int = LOSS_BAND_ELEMENTS) -> torch.Tensor:
    """:func:`upsampled_cross_entropy` one image and one band of rows at a time, for labels (B, H, W) whose
    height ``H`` is a whole multiple of the logits' (B, K, h, w) height ``h`` (any width ratio). Never builds the
    (B, K, H, W) upsampled logits: each band's are about ``band_elements`` floats. The value and the gradient
    equal the full formulation's within float rounding (summation order). Not twice differentiable."""
    if labels.shape[1] % logits.shape[2]:
        raise ValueError(f"labels height {labels.shape[1]} is not a whole multiple of the logits height {logits.shape[2]}")
    return _BandedCrossEntropy.apply(logits, labels, ignore_index, int(band_elements))


def semantic_segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, config: SegformerConfig) -> torch.Tensor:
    """Scalar loss for logits (B, K, h, w) and labels (B, H, W); computed in float32."""
    check_segmentation_labels(labels, logits, config)
    ignore = config.semantic_loss_ignore_index
    if config.num_labels > 1:
        return upsampled_cross_entropy(logits.float(), labels, ignore)
    upsampled = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    valid = ((labels >= 0) & (labels != ignore)).float()
    per_pixel = F.binary_cross_entropy_with_logits(upsampled.squeeze(1), labels.float(), reduction="none")
    return (per_pixel * valid).mean()


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: SegformerConfig) -> torch.Tensor:
    """Scalar loss for logits (B, K) by ``config.problem_type``, chosen by the label rule of
    :mod:`segformer.common.model.losses` when ``None`` (class ids (B,) of any dtype; (B, K) multi-label targets)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim == 0 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels batch size {tuple(labels.shape)[:1]} does not match pixel_values batch size {logits.shape[0]}")
    num_labels = config.num_labels
    problem = resolve_problem_type(config.problem_type, num_labels, tuple(labels.shape))
    logits = logits.float()
    if problem == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.float().squeeze())
        return F.mse_loss(logits, labels.float())
    if problem == "single_label_classification":
        if labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"single-label classification needs class ids, got dtype {labels.dtype}")
        if labels.is_floating_point() and not bool((labels == labels.round()).all()):
            raise ValueError("single-label classification needs whole-number class ids, got fractional labels")
        flat = labels.reshape(-1).long()
        bad = invalid_labels(flat, num_labels, IGNORE_CLASS_ID)
        if bool(bad.any()):
            raise ValueError(label_range_message(num_labels, IGNORE_CLASS_ID, torch.unique(flat[bad])[:10].tolist()))
        return F.cross_entropy(logits.reshape(-1, num_labels), flat, ignore_index=IGNORE_CLASS_ID)
    if tuple(labels.shape) != tuple(logits.shape):
        raise ValueError(f"multi-label labels must have shape {tuple(logits.shape)}, got {tuple(labels.shape)}")
    return F.binary_cross_entropy_with_logits(logits, labels.float())
