"""Image-processor configs at their edges: ``size`` (ints, dicts, 0, huge, strings), ``image_mean`` /
``image_std`` (wrong length, zero, tiny, NaN), ``rescale_factor`` (huge, NaN, strings), the ``do_*`` flags
(strings such as ``"no"``, None, ints), passed as keywords or through ``preprocessor_config.json``.

Oracle: each value's allowed set is written here from its meaning; a config whose outputs would overflow
float32 (computed here from the 0..255 input range), a non-positive or NaN size, a size whose float32 output
needs more than 1 GB, a wrong-length mean / std or a flag that is not a bool must be a clear error naming
the field. A valid config's ``pixel_values`` must equal transformers' ``SegformerImageProcessor`` with the
same settings (the independent reference; ``input_data_format="channels_last"`` on both sides).
"""

from __future__ import annotations

import json
import math

import numpy as np

from fuzzing.cases import Case, require

F32_MAX = float(np.finfo(np.float32).max)


def setup(folder):
    return {}


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def make_case(rng, context, folder):
    from segformer import SegformerImageProcessor

    valid_only = rng.random() < 0.4
    kwargs = {}
    verdict = {}  # field -> True / False / None (either)
    nan = float("nan")
    if rng.random() < 0.6:
        kwargs["size"], verdict["size"] = _pick(rng, [
            (32, True), (17, True), ({"height": 24, "width": 40}, True), ({"height": 8, "width": 8}, True),
            ((24, 40), None), (32.0, None), ({"shortest_edge": 32}, None)] + ([] if valid_only else [
            (0, False), (-5, False), ({"height": 0, "width": 8}, False), ({"height": 8}, False), (20000, False),
            (10**9, False), (1e9, False), ({"height": 20000, "width": 20000}, False), ("32", False), (True, False),
            ({"height": nan, "width": 8}, False)]))
    if rng.random() < 0.4:
        kwargs["image_mean"], verdict["image_mean"] = _pick(rng, [
            ([0.5, 0.5, 0.5], True), (0.4, True), ([0.485, 0.456, 0.406], True), ([-3.0, 0.0, 1e3], True)] + (
            [] if valid_only else [([0.5, 0.5], False), ([0.5] * 4, False), ([nan, 0.5, 0.5], False),
                                   ("0.5", False), ([float("inf")] * 3, False)]))
    if rng.random() < 0.4:
        kwargs["image_std"], verdict["image_std"] = _pick(rng, [
            ([0.5, 0.5, 0.5], True), (0.25, True), ([0.229, 0.224, 0.225], True), ([1e-3, 1.0, 10.0], True),
            ([-0.5, 0.5, 0.5], None)] + ([] if valid_only else [
            ([0.0, 0.5, 0.5], False), ([1e-40] * 3, False), ([0.5, 0.5], False), ([nan] * 3, False), ("1", False)]))
    if rng.random() < 0.4:
        kwargs["rescale_factor"], verdict["rescale_factor"] = _pick(rng, [
            (1 / 255, True), (1.0, True), (0.5, True), (1e-3, True), (0.0, None), (-1 / 255, None)] + (
            [] if valid_only else [(1e38, False), (nan, False), (float("inf"), False), ("0.5", False)]))
    for flag in ("do_resize", "do_rescale", "do_normalize", "do_reduce_labels"):
        if rng.random() < 0.2:
            kwargs[flag], verdict[flag] = _pick(rng, [(True, True), (False, True), (0, None), (1, None),
                                                      (None, None)] + ([] if valid_only else [("no", False), ("yes", False)]))
    if kwargs.get("size") in (20000, 10**9, {"height": 20000, "width": 20000}) and kwargs.get("do_resize", True) is False:
        verdict["size"] = None  # too big to resize to, but no resize is done: refusing or taking it are both right
    if kwargs.get("do_normalize", True) is False:
        for field in ("image_mean", "image_std"):
            if verdict.get(field) is False:
                verdict[field] = None  # not used without normalization: refusing or taking it are both right
    through_file = bool(rng.random() < 0.4)
    height, width = int(rng.integers(4, 41)), int(rng.integers(4, 41))
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    # overflow: computed here from the input range and the settings as given
    if all(verdict.get(k) is not False for k in ("image_mean", "image_std", "rescale_factor")):
        if _overflows(kwargs):
            for field in ("image_std", "rescale_factor"):
                if field in kwargs:
                    verdict[field] = False
    invalid = sorted(k for k, v in verdict.items() if v is False)
    either = [k for k, v in verdict.items() if v is None]
    expect = "error" if invalid else ("either" if either else "ok")
    named = invalid + either  # refusing an either-field clearly is right too
    names = tuple(named) + tuple(n.replace("_", " ") for n in named)
    if "size" in named:
        names += ("height", "width")
    description = {"kwargs": {k: repr(v) for k, v in kwargs.items()}, "through_file": through_file,
                   "image": [height, width], "invalid": invalid}

    def run():
        if through_file:
            (folder / "preprocessor_config.json").write_text(json.dumps(
                {"image_processor_type": "SegformerImageProcessor", **kwargs}, allow_nan=True))
            processor = SegformerImageProcessor.from_pretrained(folder)
        else:
            processor = SegformerImageProcessor(**kwargs)
        return processor(image, input_data_format="channels_last", return_tensors="np")["pixel_values"]

    def check(pixels, caught):
        pixels = np.asarray(pixels)
        require(pixels.dtype == np.float32, f"pixel_values dtype {pixels.dtype}")
        require(np.isfinite(pixels).all(), "non-finite pixel_values from an accepted config")
        reference = _reference(kwargs, image)
        if reference is None:
            require(pixels.ndim == 4 and pixels.shape[:2] == (1, 3), f"pixel_values shape {pixels.shape}")
            return
        require(pixels.shape == reference.shape, f"pixel_values shape {pixels.shape}, reference {reference.shape}")
        scale = max(1.0, float(np.abs(reference).max()))
        diff = float(np.abs(pixels - reference).max())
        require(diff <= 1e-4 * scale, f"pixel_values differ from transformers' by {diff:.3g} (scale {scale:.3g})")

    return Case(description, run, expect=expect, names=names, check=check)


def _overflows(kwargs) -> bool:
    try:
        factor = float(kwargs.get("rescale_factor", 1 / 255)) if kwargs.get("do_rescale", True) else 1.0
        mean = np.broadcast_to(np.asarray(kwargs.get("image_mean", [0.485, 0.456, 0.406]), np.float64), (3,))
        std = np.broadcast_to(np.asarray(kwargs.get("image_std", [0.229, 0.224, 0.225]), np.float64), (3,))
    except (TypeError, ValueError):
        return False
    if not kwargs.get("do_normalize", True):
        mean, std = np.zeros(3), np.ones(3)
    with np.errstate(all="ignore"):
        extremes = np.abs((np.array([0.0, 255.0])[:, None] * factor - mean) / std)
    return bool(not np.isfinite(extremes).all() or extremes.max() > F32_MAX / 2)


def _reference(kwargs, image):
    """transformers' pixel values, or ``None`` where it refuses the config (shape checked only then)."""
    from transformers import SegformerImageProcessor as Reference

    try:
        processor = Reference(**kwargs)
        return np.asarray(processor(image, input_data_format="channels_last", return_tensors="np")["pixel_values"])
    except Exception:  # noqa: BLE001 - the reference refuses what it cannot take
        return None
