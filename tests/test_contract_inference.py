"""Whole / sliding-window / test-time-augmented inference: the window rule against an independent
re-implementation of mmsegmentation's loop, exact averaging with fake models whose output is known, and
the real tiny models of both frameworks."""

from __future__ import annotations

import numpy as np
import pytest

from randomize import random_state, tiny_config
from segformer.common.inference.rules import (
    check_inference_args,
    grid_shape,
    resolve_output_sizes,
    scaled_size,
    sliding_windows,
    tta_passes,
    window_counts,
)
from segformer.common.images.resize import resize_bilinear


# ------------------------------------------------------------------------------ independent references
def mmseg_windows(h_img: int, w_img: int, h_crop: int, w_crop: int, h_stride: int, w_stride: int) -> list[tuple]:
    """mmseg ``EncoderDecoder.slide_inference``'s loop, transcribed."""
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    out = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * h_stride
            x1 = w_idx * w_stride
            y2 = min(y1 + h_crop, h_img)
            x2 = min(x1 + w_crop, w_img)
            y1 = max(y2 - h_crop, 0)
            x1 = max(x2 - w_crop, 0)
            out.append((y1, y2, x1, x2))
    return out


def numpy_slide(fake, image: np.ndarray, crop: tuple, stride: tuple) -> np.ndarray:
    """Expected slide result for a numpy fake model: sum of upsampled window logits / count."""
    _, _, h_img, w_img = image.shape
    total = None
    count = np.zeros((h_img, w_img), np.float32)
    for y1, y2, x1, x2 in mmseg_windows(h_img, w_img, crop[0], crop[1], stride[0], stride[1]):
        logits = resize_bilinear(fake(image[:, :, y1:y2, x1:x2]), (y2 - y1, x2 - x1))
        if total is None:
            total = np.zeros(image.shape[:1] + logits.shape[1:2] + (h_img, w_img), np.float32)
        total[:, :, y1:y2, x1:x2] += logits
        count[y1:y2, x1:x2] += 1
    return total / count


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# Fake models (numpy): their logits are known exactly for any input.
def fake_window_mean(x: np.ndarray) -> np.ndarray:
    """Full-resolution logits: 2 channels, the input's first channel and the window's mean (a value that
    differs between windows, so the overlap averaging is visible)."""
    mean = x.mean(axis=(1, 2, 3), keepdims=True) * np.ones_like(x[:, :1])
    return np.concatenate([x[:, :1], mean], axis=1).astype(np.float32)


def fake_quarter(x: np.ndarray) -> np.ndarray:
    """Logits at 1/4 resolution (rounded up) like the real model: strided subsample, 3 channels."""
    sub = x[:, :, ::4, ::4]
    ramp = np.arange(sub.shape[3], dtype=np.float32)[None, None, None, :] * 0.1
    return np.concatenate([sub[:, :1], sub[:, 1:2] + ramp, -sub[:, 2:3]], axis=1).astype(np.float32)


def fake_asymmetric(x: np.ndarray) -> np.ndarray:
    """Not flip-equivariant: a left-to-right ramp added to each channel."""
    ramp = np.linspace(-1.0, 1.0, x.shape[3], dtype=np.float32)[None, None, None, :]
    return np.concatenate([x[:, :1] + ramp, x[:, 1:2] - 2 * ramp, x[:, 2:3] * 0.5], axis=1).astype(np.float32)


# --------------------------------------------------------------------------------- framework backends
class PTBackend:
    name = "pt"

    def __init__(self) -> None:
        import torch

        from segformer.pt import SegformerForSemanticSegmentation
        from segformer.pt.inference import predict_labels, predict_logits, upsample_logits

        self.torch = torch
        self.predict_logits = predict_logits
        self.predict_labels = predict_labels
        self.upsample_logits = upsample_logits
        self.model_class = SegformerForSemanticSegmentation

    def tensor(self, array: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    def numpy(self, tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy()

    def wrap(self, fake):
        return lambda x: self.tensor(fake(self.numpy(x)))

    def tiny_model(self, **overrides):
        config = tiny_config(**overrides)
        model = self.model_class(config)
        model.load_state_dict_numpy(random_state(config, "semantic_segmentation", seed=1))
        return model.eval()

    def model_logits(self, model, array: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.numpy(model(self.tensor(array)).logits)


class TFBackend:
    name = "tf"

    def __init__(self) -> None:
        import tensorflow as tf

        from segformer.tf.inference import predict_labels, predict_logits, upsample_logits

        self.tf = tf
        self.predict_logits = predict_logits
        self.predict_labels = predict_labels
        self.upsample_logits = upsample_logits

    def tensor(self, array: np.ndarray):
        return self.tf.constant(np.asarray(array, dtype=np.float32))

    def numpy(self, tensor) -> np.ndarray:
        return np.asarray(tensor)

    def wrap(self, fake):
        return lambda x: self.tensor(fake(self.numpy(x)))

    def tiny_model(self, **overrides):
        from segformer.tf import TFSegformerForSemanticSegmentation

        config = tiny_config(**overrides)
        model = TFSegformerForSemanticSegmentation(config)
        model.load_state_dict_numpy(random_state(config, "semantic_segmentation", seed=1))
        return model

    def model_logits(self, model, array: np.ndarray) -> np.ndarray:
        return np.asarray(model(self.tensor(array), training=False).logits)


def _make_backend(name: str):
    if name == "pt":
        pytest.importorskip("torch")
        return PTBackend()
    pytest.importorskip("tensorflow")
    return TFBackend()


@pytest.fixture(params=["pt", "tf"], scope="module")
def backend(request):
    return _make_backend(request.param)


# ------------------------------------------------------------------------------------- common rules
def test_window_grid_matches_mmseg_loop_for_random_sizes():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(2000):
        h_img, w_img = (int(v) for v in rng.integers(1, 300, size=2))
        h_crop, w_crop = (int(v) for v in rng.integers(1, 160, size=2))
        h_stride = int(rng.integers((h_crop + 3) // 4, h_crop + 1))  # at most ~4 windows per crop length
        w_stride = int(rng.integers((w_crop + 3) // 4, w_crop + 1))
        expected = mmseg_windows(h_img, w_img, h_crop, w_crop, h_stride, w_stride)
        got = sliding_windows((h_img, w_img), (h_crop, w_crop), (h_stride, w_stride))
        assert [(w.y1, w.y2, w.x1, w.x2) for w in got] == expected
        assert grid_shape((h_img, w_img), (h_crop, w_crop), (h_stride, w_stride))[0] * grid_shape(
            (h_img, w_img), (h_crop, w_crop), (h_stride, w_stride)
        )[1] == len(expected)
        counts = window_counts((h_img, w_img), got)
        assert counts.min() >= 1
        # every window is as large as the crop, or the image where the image is smaller
        assert all(w.height == min(h_crop, h_img) and w.width == min(w_crop, w_img) for w in got)
        # the last window of each axis touches the border
        assert got[-1].y2 == h_img and got[-1].x2 == w_img
        checked += h_img < h_crop or w_img < w_crop
    assert checked > 100  # many images smaller than the crop were among them


def test_window_grid_cityscapes_examples():
    windows = sliding_windows((1024, 2048), (1024, 1024), (768, 768))
    assert [(w.y1, w.y2, w.x1, w.x2) for w in windows] == [(0, 1024, 0, 1024), (0, 1024, 768, 1792), (0, 1024, 1024, 2048)]
    assert sliding_windows((500, 300), (1024, 1024), (768, 768)) == sliding_windows((500, 300), 2000, 1)[:1]
    assert len(sliding_windows((500, 300), (1024, 1024), (768, 768))) == 1


def test_argument_validation_names_argument_value_and_choices():
    with pytest.raises(ValueError, match=r"mode must be one of \['whole', 'slide'\], got 'tile'"):
        check_inference_args(mode="tile")
    with pytest.raises(ValueError, match=r"stride \(800, 768\) must not exceed crop_size \(768, 768\)"):
        check_inference_args(crop_size=768, stride=(800, 768))
    with pytest.raises(ValueError, match="crop_size must be positive, got 0"):
        check_inference_args(crop_size=0)
    with pytest.raises(ValueError, match="crop_size must be an int or a"):
        check_inference_args(crop_size=(1, 2, 3))
    with pytest.raises(ValueError, match="scales must hold at least one"):
        check_inference_args(scales=())
    with pytest.raises(ValueError, match="scales must hold positive finite numbers"):
        check_inference_args(scales=(1.0, -0.5))
    with pytest.raises(ValueError, match="flip must be True or False, got 'yes'"):
        check_inference_args(flip="yes")
    with pytest.raises(ValueError, match="size_divisor must be None or a positive int, got 0"):
        check_inference_args(size_divisor=0)
    with pytest.raises(ValueError, match="batch=2 entries, got 3"):
        resolve_output_sizes(2, (10, 10), [(1, 2), (3, 4), (5, 6)])
    settings = check_inference_args(scales=0.5, flip=True)
    assert settings.scales == (0.5,) and settings.passes == [(0.5, False), (0.5, True)] and settings.augmented


def test_scaled_size_and_passes():
    assert scaled_size((512, 683), 0.75) == (384, 512)  # int(x * s + 0.5)
    assert scaled_size((512, 683), 1.25) == (640, 854)
    assert scaled_size((512, 683), 1.25, size_divisor=32) == (640, 864)
    assert scaled_size((3, 3), 0.01) == (1, 1)
    assert tta_passes((0.5, 1.0), flip=False) == [(0.5, False), (1.0, False)]
    assert resolve_output_sizes(2, (10, 12), None) == ([(10, 12), (10, 12)], False)
    assert resolve_output_sizes(2, (10, 12), 7) == ([(7, 7), (7, 7)], False)
    assert resolve_output_sizes(2, (10, 12), [(1, 2), (3, 4)]) == ([(1, 2), (3, 4)], True)


# ------------------------------------------------------------------------------ exact, fake models
def test_slide_averages_window_logits_exactly(backend):
    rng = np.random.default_rng(1)
    image = rng.standard_normal((2, 3, 37, 53)).astype(np.float32)
    for crop, stride in [((16, 24), (12, 10)), ((20, 20), (20, 20)), ((64, 64), (32, 32)), ((37, 10), (5, 7))]:
        expected = numpy_slide(fake_window_mean, image, crop, stride)
        got = backend.predict_logits(backend.wrap(fake_window_mean), backend.tensor(image), mode="slide",
                                     crop_size=crop, stride=stride)
        np.testing.assert_allclose(backend.numpy(got), expected, atol=1e-5, err_msg=f"crop {crop} stride {stride}")


def test_slide_upsamples_each_window_then_resizes_to_output(backend):
    rng = np.random.default_rng(2)
    image = rng.standard_normal((1, 3, 45, 61)).astype(np.float32)
    crop, stride = (24, 32), (16, 20)
    averaged = numpy_slide(fake_quarter, image, crop, stride)
    got = backend.predict_logits(backend.wrap(fake_quarter), backend.tensor(image), mode="slide", crop_size=crop,
                                 stride=stride)
    np.testing.assert_allclose(backend.numpy(got), averaged, atol=1e-5)
    resized = backend.predict_logits(backend.wrap(fake_quarter), backend.tensor(image), mode="slide", crop_size=crop,
                                     stride=stride, output_size=(30, 100))
    np.testing.assert_allclose(backend.numpy(resized), resize_bilinear(averaged, (30, 100)), atol=1e-5)
    probabilities = backend.predict_logits(backend.wrap(fake_quarter), backend.tensor(image), mode="slide",
                                           crop_size=crop, stride=stride, return_probabilities=True)
    np.testing.assert_allclose(backend.numpy(probabilities), softmax(averaged), atol=1e-6)


def test_whole_mode_upsamples_to_input_then_output(backend):
    rng = np.random.default_rng(3)
    image = rng.standard_normal((2, 3, 29, 42)).astype(np.float32)
    expected = resize_bilinear(fake_quarter(image), (29, 42))
    got = backend.predict_logits(backend.wrap(fake_quarter), backend.tensor(image))
    np.testing.assert_allclose(backend.numpy(got), expected, atol=1e-5)
    per_image = backend.predict_logits(backend.wrap(fake_quarter), backend.tensor(image), output_size=[(10, 11), (50, 40)])
    assert [tuple(t.shape) for t in per_image] == [(3, 10, 11), (3, 50, 40)]
    np.testing.assert_allclose(backend.numpy(per_image[1]), resize_bilinear(expected[1:], (50, 40))[0], atol=1e-5)
    labels = backend.predict_labels(backend.wrap(fake_quarter), backend.tensor(image))
    np.testing.assert_array_equal(backend.numpy(labels), expected.argmax(1))


def test_flip_tta_unflips_and_averages_probabilities(backend):
    rng = np.random.default_rng(4)
    image = rng.standard_normal((2, 3, 20, 31)).astype(np.float32)
    plain = softmax(fake_asymmetric(image))
    mirrored = softmax(fake_asymmetric(image[..., ::-1]))[..., ::-1]
    expected = (plain + mirrored) / 2
    got = backend.predict_logits(backend.wrap(fake_asymmetric), backend.tensor(image), flip=True, return_probabilities=True)
    np.testing.assert_allclose(backend.numpy(got), expected, atol=1e-6)
    log_probabilities = backend.predict_logits(backend.wrap(fake_asymmetric), backend.tensor(image), flip=True)
    np.testing.assert_allclose(backend.numpy(log_probabilities), np.log(expected), atol=1e-5)
    assert not np.allclose(plain, mirrored, atol=1e-3)  # the fake model really is not flip-equivariant


def test_multiscale_tta_resizes_image_and_averages_at_output_size(backend):
    rng = np.random.default_rng(5)
    image = rng.standard_normal((1, 3, 24, 40)).astype(np.float32)
    scales = (0.5, 1.0, 1.5)
    expected = np.zeros((1, 3, 24, 40), np.float32)
    for scale in scales:
        for flipped in (False, True):
            size = scaled_size((24, 40), scale, size_divisor=8)
            scaled = resize_bilinear(image, size)
            if flipped:
                scaled = scaled[..., ::-1]
            probabilities = softmax(resize_bilinear(resize_bilinear(fake_quarter(np.ascontiguousarray(scaled)), size), (24, 40)))
            expected += probabilities[..., ::-1] if flipped else probabilities
    expected /= 2 * len(scales)
    got = backend.predict_logits(backend.wrap(fake_quarter), backend.tensor(image), scales=scales, flip=True,
                                 size_divisor=8, return_probabilities=True)
    np.testing.assert_allclose(backend.numpy(got), expected, atol=2e-5)


# ------------------------------------------------------------------------------------- real models
def test_real_model_slide_with_crop_covering_image_equals_whole(backend):
    model = backend.tiny_model()
    image = np.random.default_rng(6).standard_normal((2, 3, 64, 96)).astype(np.float32)
    whole = backend.numpy(backend.predict_logits(model, backend.tensor(image)))
    slide = backend.numpy(backend.predict_logits(model, backend.tensor(image), mode="slide", crop_size=(64, 128),
                                                 stride=(48, 96)))
    np.testing.assert_allclose(slide, whole, atol=1e-5)
    expected = resize_bilinear(backend.model_logits(model, image), (64, 96))
    np.testing.assert_allclose(whole, expected, atol=1e-4)


def test_real_model_overlapping_windows_and_tta_run(backend):
    model = backend.tiny_model()
    image = np.random.default_rng(7).standard_normal((1, 3, 80, 112)).astype(np.float32)
    got = backend.predict_logits(model, backend.tensor(image), mode="slide", crop_size=64, stride=48,
                                 scales=(0.75, 1.0), flip=True, return_probabilities=True)
    got = backend.numpy(got)
    assert got.shape == (1, 3, 80, 112)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_pt_training_mode_model_is_refused():
    backend = _make_backend("pt")
    model = backend.tiny_model().train()
    with pytest.raises(ValueError, match="training mode"):
        backend.predict_logits(model, backend.tensor(np.zeros((1, 3, 64, 64), np.float32)))
    with pytest.raises(TypeError, match="floating point"):
        backend.predict_logits(model.eval(), backend.torch.zeros((1, 3, 64, 64), dtype=backend.torch.uint8))
