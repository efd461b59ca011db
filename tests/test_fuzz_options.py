"""Fuzzing: random Segmenter options (constructor and call) and random processor configs.

Only documented errors (segformer.common.base.errors) may escape, and nothing accepted may be silently wrong: an
accepted Segmenter call gives a label map of the image's size with valid class ids (and finite probabilities),
an accepted processor config gives finite pixel values for any uint8 image. The memory limit is fixed at 2 GB
(``resources.memory_limits`` replaced) so that requests above it are refused, never run. Bounded in CI; for a
long run: ``SEGFORMER_FUZZ_EXAMPLES=1000 python -m pytest tests/test_fuzz_options.py -s``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_counts import counted, new_outcomes, print_outcomes
from randomize import tiny_config
from segformer.common.base import resources

EXAMPLES = int(os.environ.get("SEGFORMER_FUZZ_EXAMPLES", "25"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
OUTCOMES = new_outcomes()
OURS = ("ValueError", "TypeError", "ResourceLimitError")


@pytest.fixture(scope="module", autouse=True)
def _report():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resources, "memory_limits", lambda: [("fuzz limit", 2 * 2**30)])
        yield
    print_outcomes(OUTCOMES)


def _run(kind: str, func):
    return counted(OUTCOMES, kind, func, OURS)


_sizes = st.one_of(st.integers(-2, 80), st.tuples(st.integers(-1, 80), st.integers(-1, 80)), st.just("16"),
                   st.just(2.5), st.just((8, 8, 8)), st.just(None))
_flags = st.one_of(st.booleans(), st.just("yes"), st.just(0), st.just(None), st.just(np.bool_(True)))
_options = st.fixed_dictionaries({}, optional={
    "mode": st.sampled_from(["whole", "slide", "tile", "", None]),
    "crop_size": _sizes,
    "stride": _sizes,
    "scales": st.one_of(st.lists(st.sampled_from([0.5, 1.0, 1.5, 30.0, 1e6, 0.0, -1.0, float("nan")]), max_size=3),
                        st.just("1.0"), st.just(2.0)),
    "flip": _flags,
    "resize": st.one_of(st.sampled_from(["processor", "keep-ratio", "none", "bogus"]), _sizes,
                        st.just((30000, 30000))),
    "test_scale": st.one_of(st.just((64, 32)), st.just((0, 0)), st.just(None), st.just("big")),
    "size_divisor": st.one_of(st.integers(-1, 40), st.just(None), st.just(2.0)),
    "batch_size": st.one_of(st.integers(-1, 3), st.just("2")),
    "palette": st.one_of(st.just(None), st.just("ade20k"), st.just("nope"), st.just(np.full((3, 3), 0.5)),
                         st.just(np.eye(3)), st.just(np.zeros((2, 3), np.uint8)), st.just(np.full((3, 3), 300))),
    "device": st.sampled_from([None, "cpu", "bogus", "cuda:99", 7]),
    "max_windows": st.sampled_from([0, -1, 1, 20, 200, "10", 2.5]),
})
_call = st.fixed_dictionaries({}, optional={
    "return_probabilities": _flags,
    "keep_confidence": _flags,
    "top_k": st.sampled_from([None, 1, 5]),
    "labels_out": st.sampled_from(["int32", "uint8", "float32", "readonly", "shape", "list"]),
})


@pytest.fixture(scope="module")
def pt_model():
    import torch

    from segformer.pt import SegformerForSemanticSegmentation

    torch.manual_seed(0)
    return SegformerForSemanticSegmentation(tiny_config(id2label={0: "a", 1: "a", 2: "b"})).eval()


def _labels_out(kind: str, shape: tuple[int, int]):
    if kind == "list":
        return [[0] * shape[1]] * shape[0]
    if kind == "shape":
        return np.zeros((shape[0] + 1, shape[1]), np.int32)
    array = np.zeros(shape, {"int32": np.int32, "uint8": np.uint8, "float32": np.float32}.get(kind, np.int32))
    if kind == "readonly":
        array.flags.writeable = False
    return array


@SETTINGS
@given(options=_options, call=_call, height=st.integers(1, 40), width=st.integers(1, 40), seed=st.integers(0, 99))
def test_segmenter_options_raise_only_documented_errors(pt_model, options, call, height, width, seed):
    from segformer import Segmenter

    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    call = dict(call)
    if "labels_out" in call:
        call["labels_out"] = _labels_out(call["labels_out"], (height, width))
    segmenter = _run("segmenter options", lambda: Segmenter(pt_model, **options))
    if segmenter is None:
        return
    result = _run("segmenter call", lambda: segmenter(image, **call))
    if result is None:
        return
    assert result.label_map.shape == (height, width)
    assert 0 <= result.label_map.min() and result.label_map.max() < 3
    if call.get("return_probabilities") is True:
        assert result.probabilities.shape == (3, height, width) and np.isfinite(result.probabilities).all()
    if "labels_out" in call:
        np.testing.assert_array_equal(call["labels_out"], result.label_map)
    assert not pt_model.training


_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e-40, 1e-36, 1e37, 0.0, -1.0]),
                     st.integers(-3, 300), st.text(max_size=3), st.none())
_fields = st.fixed_dictionaries({}, optional={
    "size": st.one_of(st.integers(-1, 64), st.just(10**9), st.just(1e9), st.just(60000),
                      st.fixed_dictionaries({"height": st.integers(-1, 64), "width": st.integers(-1, 64)}),
                      st.just({"shortest_edge": 32}), st.just("big")),
    "rescale_factor": _numbers,
    "image_mean": st.one_of(_numbers, st.lists(_numbers, max_size=4)),
    "image_std": st.one_of(_numbers, st.lists(_numbers, max_size=4)),
    "do_rescale": _flags,
    "do_normalize": _flags,
    "do_resize": _flags,
    "resample": st.sampled_from([0, 2, 3, 9, "bilinear", "bogus"]),
    "do_reduce_labels": _flags,
})


@pytest.mark.filterwarnings("ignore::UserWarning")
@SETTINGS
@given(config=_fields, seed=st.integers(0, 99))
def test_processor_configs_raise_only_documented_errors(config, seed):
    from segformer import SegformerImageProcessor

    image = np.random.default_rng(seed).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    image[0, 0] = 0
    image[0, 1] = 255  # both ends of the range, where an overflow shows
    processor = _run("processor config", lambda: SegformerImageProcessor.from_dict(config))
    if processor is None:
        return
    batch = _run("processor call", lambda: processor(image))
    if batch is None:
        return
    values = batch["pixel_values"][0]
    assert np.isfinite(values).all(), f"accepted config {config} gives non-finite pixel values"
