"""``post_process_semantic_segmentation``: logits (PyTorch, TF or numpy) -> per-image label maps, as
``transformers.SegformerImageProcessor.post_process_semantic_segmentation`` 4.57.6."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from segformer.common.images.image_arrays import is_arraylike, softmax, to_numpy
from segformer.common.images.resize import resize_bilinear


# ----------------------------------------------------------------------------------------------------------------
# Post-processing


def _framework_of(value: Any) -> str:
    module = type(value).__module__
    if module.startswith("torch"):
        return "pt"
    if module.startswith(("tensorflow", "tf_keras")):
        return "tf"
    return "np"


def _target_sizes_list(target_sizes: Any, batch: int) -> list[tuple[int, int]]:
    if is_arraylike(target_sizes):
        target_sizes = to_numpy(target_sizes).tolist()
    try:
        sizes = [tuple(size) for size in target_sizes]
    except TypeError:
        raise ValueError(f"target_sizes must be a sequence of (height, width) pairs, got {target_sizes!r}") from None
    if len(sizes) != batch:
        raise ValueError(
            f"target_sizes has {len(sizes)} entries but the logits hold {batch} images; pass one (height, width) per image"
        )
    result = []
    for size in sizes:
        if len(size) != 2 or any(isinstance(s, bool) or int(s) != s or int(s) < 1 for s in size):
            raise ValueError(f"target_sizes entries must be (height, width) with positive ints, got {size!r}")
        result.append((int(size[0]), int(size[1])))
    return result


def _check_target_memory(sizes: list[tuple[int, int]], classes: int, return_probabilities: bool) -> None:
    """Refuse, before upsampling, target sizes whose results cannot fit: each image's logits upsampled to its
    target (``4 C h w`` bytes, twice while the softmax or argmax runs) plus the kept results (int64 maps, or
    float probabilities) of every image."""
    from segformer.common.base.resources import check_memory

    kept = sum(h * w * (4 * classes if return_probabilities else 8) for h, w in sizes)
    largest = max(sizes, key=lambda hw: hw[0] * hw[1])
    needed = kept + 2 * 4 * classes * largest[0] * largest[1]
    check_memory(needed, f"target_sizes (largest {largest[0]}x{largest[1]})",
                 f"upsampling {classes}-class logits to {len(sizes)} target size(s)")


def post_process_semantic_segmentation(
    outputs: Any, target_sizes: Any = None, return_probabilities: bool = False
) -> list[Any]:
    """Per-pixel class maps (or probabilities) from semantic-segmentation logits.

    Args:
        outputs: an object with ``.logits``, a mapping with ``"logits"``, or the logits themselves: float
            ``(N, C, H, W)`` as a torch tensor, a tf tensor or a numpy array.
        target_sizes: ``None`` (keep ``H, W``) or one ``(height, width)`` per image (list, numpy, torch or tf).
            Logits are upsampled bilinearly (half-pixel centres, ``align_corners=False``, no antialias) before
            the argmax.
        return_probabilities: return softmax probabilities ``(C, h, w)`` (float, softmax over the upsampled
            logits) instead of class maps.

    Returns:
        A list of N items of the input's kind (torch / tf / numpy): int64 ``(h, w)`` class maps, or float
        ``(C, h, w)`` probabilities.
    """
    if hasattr(outputs, "logits"):
        logits = outputs.logits
    elif isinstance(outputs, Mapping):
        if "logits" not in outputs:
            raise ValueError(f"outputs is a mapping without 'logits' (keys: {sorted(outputs)})")
        logits = outputs["logits"]
    else:
        logits = outputs
    if not is_arraylike(logits):
        raise TypeError(
            "outputs must be a model output with .logits, a mapping with 'logits', or a (N, C, H, W) torch / tf tensor "
            f"or numpy array; got {type(logits).__name__}"
        )
    if len(logits.shape) != 4:
        raise ValueError(f"logits must be 4-D (N, C, H, W), got shape {tuple(logits.shape)}")
    batch = int(logits.shape[0])
    sizes = _target_sizes_list(target_sizes, batch) if target_sizes is not None else None
    if sizes is not None:
        _check_target_memory(sizes, int(logits.shape[1]), return_probabilities)
    framework = _framework_of(logits)

    if framework == "pt":
        import torch

        if not logits.is_floating_point():
            raise TypeError(f"logits must be a float tensor, got {logits.dtype}")
        results = []
        for i in range(batch):
            sample = logits[i : i + 1]
            if sizes is not None:
                sample = torch.nn.functional.interpolate(
                    sample, size=sizes[i], mode="bilinear", align_corners=False, antialias=False
                )
            sample = sample[0]
            results.append(torch.softmax(sample, dim=0) if return_probabilities else sample.argmax(dim=0))
        return results

    if framework == "tf":
        import tensorflow as tf

        if not logits.dtype.is_floating:
            raise TypeError(f"logits must be a float tensor, got {logits.dtype.name}")
        channels_last = tf.transpose(logits, [0, 2, 3, 1])
        results = []
        for i in range(batch):
            sample = channels_last[i : i + 1]
            if sizes is not None:
                sample = tf.image.resize(sample, sizes[i], method="bilinear", antialias=False)
            sample = sample[0]
            if return_probabilities:
                results.append(tf.transpose(tf.nn.softmax(sample, axis=-1), [2, 0, 1]))
            else:
                results.append(tf.argmax(sample, axis=-1, output_type=tf.int64))
        return results

    array = to_numpy(logits)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"logits must be a float array, got {array.dtype}")
    results = []
    for i in range(batch):
        sample = array[i]
        if sizes is not None:
            sample = resize_bilinear(sample, sizes[i], channels_first=True)
        results.append(softmax(sample, axis=0) if return_probabilities else sample.argmax(axis=0).astype(np.int64))
    return results
