"""keras-hub presets in ``segformer convert``, both ways.

* Source: a ``SegFormerImageSegmenter`` preset folder (:func:`read_keras_hub_source`) is read onto the
  canonical table by :mod:`segformer.common.checkpoints.keras_hub_io`, with keras-hub's numerics in the config
  (tanh GELU, LayerNorm eps 1e-6 / 1e-5 / stage 1e-5), so the converted model reproduces keras-hub's logits
  (keras-hub resizes them to the input size inside its model; ours stay at 1/4 of it).
* Target (``to="keras-hub"``, :func:`write_keras_hub_target`): the preset is written, read back through the
  same reader (tensors bit for bit, architecture equal), and a model of the read-back preset (keras-hub's
  numerics) is run next to the source model on square inputs. What keras-hub cannot represent is named in
  the report: refused when it changes the weights (Mix-FFN ratio, an mmseg head), measured when it changes
  the numbers (exact GELU, LayerNorm epsilons: the max |diff| is printed as "measured", not as a failure);
  keras-hub's input is square and of the one size ``image_size`` (a multiple of the total stride).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..common.checkpoints.keras_hub_io import (
    KerasHubPreset,
    keras_hub_differences,
    keras_hub_names,
    read_keras_hub_preset,
    write_keras_hub_preset,
)
from ..common.model.config import SegformerConfig
from ..common.model.weights import SEMANTIC_SEGMENTATION
from .report import KERAS_HUB, PREPROCESSOR_NAME, Check, ConversionError
from .write import bit_exact_check

__all__ = ["KERAS_HUB", "DEFAULT_IMAGE_SIZE", "read_keras_hub_source", "write_keras_hub_target"]

DEFAULT_IMAGE_SIZE = 512  # keras-hub's models take one fixed square size; ours when the source names none
_ARCHITECTURE = ("num_channels", "depths", "hidden_sizes", "num_attention_heads", "sr_ratios", "patch_sizes",
                 "strides", "mlp_ratios", "decoder_hidden_size", "num_labels")


def read_keras_hub_source(folder: Path) -> tuple[SegformerConfig, dict[str, np.ndarray], list[str], dict[str, Any]]:
    """Config, canonical tensors, notes and meta (``image_size``, ``preprocessor``) of a keras-hub preset."""
    preset = read_keras_hub_preset(folder)
    config = preset.config
    notes = [
        "keras-hub numerics: tanh-approximate GELU (hidden_act 'gelu_new'), LayerNorm eps 1e-6 in the blocks, "
        "1e-5 in the patch-embedding, sequence-reduction and stage norms (stage_layer_norm_eps)",
        "keras-hub resizes the logits to its input size inside the model; these logits are at 1/4 of the input "
        "(post_process_semantic_segmentation / a bilinear resize gives keras-hub's)",
        "keras-hub presets carry no class names: LABEL_0.. unless --labels",
        "num_batches_tracked: not stored by keras-hub; set to 0",
    ]
    if preset.ignored:
        notes.append(f"ignored (optimizer state): {', '.join(preset.ignored)}")
    meta = {"image_size": preset.image_size, "preprocessor": preset.preprocessor}
    return config, preset.state, notes, meta


def _processor_of(source: Any) -> tuple[int | None, list[float], list[float]]:
    """The square size (or None), mean and std of the source's processor (its folder's
    ``preprocessor_config.json``, a keras-hub source's converter, else the default processor)."""
    from ..common.images.image_processing import SegformerImageProcessor

    folder = source.path if source.path.is_dir() else source.path.parent
    if source.meta.get("preprocessor"):
        processor = SegformerImageProcessor(**source.meta["preprocessor"])
    elif (folder / PREPROCESSOR_NAME).is_file():
        processor = SegformerImageProcessor.from_pretrained(folder)
    else:
        processor = SegformerImageProcessor()
    size = processor.size if source.meta.get("preprocessor") or (folder / PREPROCESSOR_NAME).is_file() else {}
    height, width = size.get("height"), size.get("width")
    side = height if height is not None and height == width else None
    mean, std = processor.image_mean, processor.image_std
    mean = [float(m) for m in (mean if isinstance(mean, (list, tuple)) else [mean] * 3)]
    std = [float(s) for s in (std if isinstance(std, (list, tuple)) else [std] * 3)]
    return side, mean, std


def _check_architecture(expected: SegformerConfig, got: SegformerConfig) -> list[str]:
    return [f"{name}: {getattr(expected, name)} written as {getattr(got, name)}"
            for name in _ARCHITECTURE if getattr(expected, name) != getattr(got, name)]


def write_keras_hub_target(
    tmp: Path,
    source: Any,
    config: SegformerConfig,
    image_size: int | None,
    verify: bool,
    tolerance: float,
    sizes: Sequence[tuple[int, int]],
    inputs: Sequence[np.ndarray] | None,
    seed: int,
) -> tuple[list[Check], list[str]]:
    """Write the preset of ``source`` into ``tmp`` and check it; ``(checks, notes)``. Refusals raise
    :class:`ConversionError` before anything is written."""
    if source.task != SEMANTIC_SEGMENTATION:
        raise ConversionError(f"--to keras-hub: keras-hub's SegFormer is an image segmenter; this is a {source.task} "
                              "checkpoint (a decode head is needed)")
    refusals, approximations = keras_hub_differences(config)
    if refusals:
        raise ConversionError("--to keras-hub: keras-hub cannot represent " + "; ".join(refusals) + "; nothing written")
    notes = ["keras-hub takes square inputs of one size (image_shape); non-square images must be resized or "
             "padded to it"]
    side, mean, std = _processor_of(source)
    if image_size is None:
        image_size = source.meta.get("image_size") or side or DEFAULT_IMAGE_SIZE
        if side is None and not source.meta.get("image_size"):
            notes.append(f"no square processor size in the source: image_shape {image_size}x{image_size} (--image-size)")
    total_stride = int(np.prod(config.strides))
    if not isinstance(image_size, int) or image_size < 1 or image_size % total_stride:
        raise ConversionError(f"--image-size must be a positive multiple of {total_stride} (the product of the "
                              f"strides {config.strides}: keras-hub reshapes each stage to size // stride), got {image_size!r}")
    notes += [f"not representable in keras-hub, approximated: {text}" for text in approximations]
    if config.num_labels and any(not name.startswith("LABEL_") for name in config.id2label.values()):
        notes.append(f"class names not written: keras-hub presets carry none ({config.num_labels} names)")
    write_keras_hub_preset(tmp, config, source.state, image_size, mean, std)
    preset = read_keras_hub_preset(tmp)
    wrong = _check_architecture(config, preset.config)
    if wrong:
        raise ConversionError("--to keras-hub: the written preset reads back differently: " + "; ".join(wrong))
    names = [name for name, _, _ in keras_hub_names(config)]  # keras-hub stores no num_batches_tracked
    checks = [bit_exact_check({n: source.state[n] for n in names}, {n: preset.state[n] for n in names})]
    if verify:
        checks += _run_both(config, source.state, preset, approximations, tolerance, sizes, inputs, seed)
    return checks, notes


def _run_both(config, state, preset: KerasHubPreset, approximations, tolerance, sizes, inputs, seed) -> list[Check]:
    """The source model vs a model of the read-back preset (keras-hub numerics), same framework, square inputs.
    With approximations the differences are measured (reported), else checked against ``tolerance``."""
    from .verify import _framework_available, build_model, verification_inputs, verify_state

    framework = "pt" if _framework_available("pt") else "tf"
    reference = build_model(framework, SEMANTIC_SEGMENTATION, config, state)
    candidate = build_model(framework, SEMANTIC_SEGMENTATION, preset.config, preset.state)
    if inputs is None:
        inputs = verification_inputs(config, sizes, seed)
    checks = verify_state(config, SEMANTIC_SEGMENTATION, (framework, reference), (framework, candidate),
                          [np.asarray(x, dtype=np.float32) for x in inputs], tolerance)
    if not approximations:
        return [Check(f"{c.name}: source vs keras-hub preset", c.max_abs_diff, c.tolerance) for c in checks]
    return [Check(f"{c.name}: source vs keras-hub numerics", c.max_abs_diff, float("inf"), "measured") for c in checks]
