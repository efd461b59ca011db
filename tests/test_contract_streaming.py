"""Row-band (streaming) inference: the same labels as today's full-resolution path, bounded memory.

Oracles: ``predict_logits`` (the full-resolution path, itself tested against the original's rules), torch's
``interpolate`` for the bilinear taps, and ``window_counts`` for the window grid.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from segformer.common.inference.rules import check_inference_args, sliding_windows, window_counts
from segformer.common.inference.streaming import PassSource, bilinear_taps, stream_segmentation, window_grid_counts

from conftest import fixture_path

CASES = [
    ({}, (97, 131), None),
    ({}, (64, 64), (150, 90)),
    ({"mode": "slide", "crop_size": (48, 64), "stride": (32, 40)}, (97, 131), None),
    ({"mode": "slide", "crop_size": (48, 64), "stride": (32, 40)}, (130, 75), (33, 41)),
    ({"scales": (0.75, 1.25), "flip": True}, (130, 75), (33, 41)),
    ({"mode": "slide", "crop_size": 64, "stride": 48, "scales": (0.5, 1.0), "flip": True, "size_divisor": 32}, (97, 131), None),
]


def test_window_grid_counts_equal_window_counts():
    for size, crop, stride in (((97, 131), (48, 64), (32, 40)), ((1024, 2048), (1024, 1024), (768, 768)), ((5, 700), 512, 341)):
        windows = sliding_windows(size, crop, stride)
        rows, cols = window_grid_counts(size, windows)
        assert np.array_equal(rows[:, None] * cols[None, :], window_counts(size, windows))


def test_bilinear_taps_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for in_size, out_size in ((16, 64), (64, 16), (7, 33), (33, 7), (5, 5), (1, 9)):
        values = rng.standard_normal((1, 1, 1, in_size)).astype(np.float32)
        expected = torch.nn.functional.interpolate(torch.from_numpy(values), size=(1, out_size), mode="bilinear",
                                                   align_corners=False).numpy()[0, 0, 0]
        low, high, weight = bilinear_taps(in_size, out_size)
        got = values[0, 0, 0, low] + (values[0, 0, 0, high] - values[0, 0, 0, low]) * weight
        np.testing.assert_allclose(got, expected, atol=1e-6)


def _check_equal(result, logits, probabilities):
    ordered = np.sort(logits, axis=0)
    clear = (ordered[-1] - ordered[-2]) > 1e-4  # ties aside
    assert clear.mean() > 0.99
    assert np.array_equal(result.labels[clear], logits.argmax(0)[clear])
    np.testing.assert_allclose(result.logits, logits, atol=1e-5)
    np.testing.assert_allclose(result.probabilities, probabilities, atol=1e-5)
    np.testing.assert_allclose(result.confidence, probabilities.max(0), atol=1e-5)


@pytest.fixture(scope="module")
def pt_model():
    pytest.importorskip("torch")
    from segformer.pt import SegformerForSemanticSegmentation

    return SegformerForSemanticSegmentation.from_pretrained(str(fixture_path("hf/tiny-seg"))).eval()


@pytest.fixture(scope="module")
def tf_models():
    pytest.importorskip("tensorflow")
    from segformer.tf import TFSegformerForSemanticSegmentation

    folder = str(fixture_path("hf/tiny-seg"))
    return (TFSegformerForSemanticSegmentation.from_pretrained(folder),
            TFSegformerForSemanticSegmentation.from_pretrained(folder, data_format="channels_last"))


@pytest.mark.parametrize("kwargs,size,output", CASES)
def test_pt_streaming_equals_full_resolution(pt_model, kwargs, size, output):
    import torch

    from segformer.pt.inference import predict_labels, predict_logits, predict_streaming

    model = pt_model
    pixel_values = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 3) + size).astype(np.float32))
    logits = predict_logits(model, pixel_values, output_size=output, **kwargs)[0].numpy()
    probabilities = predict_logits(model, pixel_values, output_size=output, return_probabilities=True, **kwargs)[0].numpy()
    result = predict_streaming(model, pixel_values, output_size=output, return_confidence=True,
                               return_probabilities=True, return_logits=True, band_rows=16, **kwargs)
    _check_equal(result, logits, probabilities)
    if not kwargs:  # the batch entry point, once
        labels = predict_labels(model, torch.cat([pixel_values, pixel_values]), output_size=output, **kwargs)
        assert labels.dtype == torch.int64 and np.array_equal(labels[1].numpy(), result.labels)


@pytest.mark.parametrize("kwargs,size,output", CASES[:5])
def test_tf_streaming_equals_full_resolution(tf_models, kwargs, size, output):
    from segformer.tf.inference import predict_labels, predict_logits, predict_streaming

    model, model_nhwc = tf_models
    pixel_values = np.random.default_rng(2).standard_normal((1, 3) + size).astype(np.float32)
    logits = np.asarray(predict_logits(model, pixel_values, output_size=output, **kwargs)[0])
    probabilities = np.asarray(predict_logits(model, pixel_values, output_size=output, return_probabilities=True, **kwargs)[0])
    result = predict_streaming(model, pixel_values, output_size=output, return_confidence=True,
                               return_probabilities=True, return_logits=True, band_rows=16, **kwargs)
    _check_equal(result, logits, probabilities)
    nhwc = predict_streaming(model_nhwc, pixel_values.transpose(0, 2, 3, 1), output_size=output,
                             data_format="channels_last", band_rows=7, **kwargs)
    assert np.array_equal(nhwc.labels, result.labels)
    assert np.array_equal(np.asarray(predict_labels(model, pixel_values, output_size=output, **kwargs))[0], result.labels)


def test_streaming_memory_is_bounded_and_writes_into_labels_out(tmp_path):
    classes, height, width = 150, 1024, 1024  # full-resolution logits would be 600 MB
    rng = np.random.default_rng(3)
    low = rng.standard_normal((classes, height // 4, width // 4)).astype(np.float32)
    source = PassSource((height, width), False, lambda windows: [low])
    settings = check_inference_args()
    labels_out = np.lib.format.open_memmap(tmp_path / "labels.npy", mode="w+", dtype=np.uint8, shape=(height, width))
    tracemalloc.start()
    result = stream_segmentation(lambda scale, flipped: source, (height, width), settings, return_confidence=True,
                                 band_rows=32, labels_out=labels_out)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 150e6, f"peak {peak / 1e6:.0f} MB"
    assert result.labels is labels_out and result.confidence.shape == (height, width)
    # independent check of a few rows: bilinear upsampling along both axes in numpy, then argmax
    rows = np.array([0, 1, 513, 1023])
    r_low, r_high, r_w = bilinear_taps(height // 4, height)
    c_low, c_high, c_w = bilinear_taps(width // 4, width)
    picked = low[:, r_low[rows]] * (1 - r_w[rows])[None, :, None] + low[:, r_high[rows]] * r_w[rows][None, :, None]
    full = picked[:, :, c_low] * (1 - c_w) + picked[:, :, c_high] * c_w
    ordered = np.sort(full, axis=0)
    clear = (ordered[-1] - ordered[-2]) > 1e-4
    assert np.array_equal(np.asarray(labels_out)[rows][clear], full.argmax(0)[clear])


def test_streaming_argument_errors(pt_model):
    import torch

    from segformer.pt.inference import predict_streaming

    model = pt_model
    pixel_values = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match="one image"):
        predict_streaming(model, pixel_values)
    with pytest.raises(ValueError, match="direct_upsampling"):
        predict_streaming(model, pixel_values[:1], mode="slide", crop_size=16, stride=16, direct_upsampling=True)
    with pytest.raises(ValueError, match="band_rows"):
        predict_streaming(model, pixel_values[:1], band_rows=0)


def test_band_argmax_and_top_probability_equal_numpy_with_ties_and_non_finite():
    from segformer.common.inference.streaming import _top, _top_probability

    rng = np.random.default_rng(4)
    band = rng.integers(-3, 3, (7, 5, 9)).astype(np.float32)  # many ties between classes
    band[2, 0, 0] = -0.0
    labels, largest, finite = _top(band)
    assert finite and np.array_equal(labels, band.argmax(axis=0)) and np.array_equal(largest, band.max(axis=0))
    shifted = np.exp(band - band.max(axis=0, keepdims=True))
    np.testing.assert_allclose(_top_probability(band, largest), 1.0 / shifted.sum(axis=0), rtol=1e-6)
    for bad in (np.nan, np.inf, -np.inf):
        broken = band.copy()
        broken[3, 1, 2] = bad
        labels, _, finite = _top(broken)
        assert not finite and np.array_equal(labels, broken.argmax(axis=0)), bad
