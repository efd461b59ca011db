"""The mmseg training augmentations in numpy: reproducibility, shapes, and each step's contract."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from segformer.common.images.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    PhotoMetricDistortion,
    RandomCrop,
    RandomResize,
    TrainTransform,
    hsv_to_rgb,
    normalize,
    pad_to,
    rescale_size,
    resize_label,
    rgb_to_hsv,
)


def sample(rng, height=48, width=64, num_labels=5):
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    label = rng.integers(0, num_labels, size=(height, width)).astype(np.int64)
    label[:3, :5] = 255
    return image, label


def test_train_transform_reproducible_shapes_dtypes(rng):
    image, label = sample(rng)
    transform = TrainTransform(crop_size=(32, 40), img_scale=(96, 48))
    a = transform(image, label, np.random.default_rng(7))
    b = transform(image, label, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == (3, 32, 40) and a[0].dtype == np.float32
    assert a[1].shape == (32, 40) and a[1].dtype == np.int64
    outputs = [transform(image, label, np.random.default_rng(seed))[0] for seed in range(5)]
    assert len({out.tobytes() for out in outputs}) == 5
    assert set(np.unique(a[1])) <= set(range(5)) | {255}


def test_padding_values_and_content():
    rng = np.random.default_rng(1)
    image, label = sample(rng, height=20, width=30)
    transform = TrainTransform(
        crop_size=(40, 36), img_scale=(30, 20), ratio_range=(1.0, 1.0), flip_prob=0.0, photometric=False
    )
    pixel_values, labels = transform(image, label, rng)
    assert pixel_values.shape == (3, 40, 36) and labels.shape == (40, 36)
    assert np.all(pixel_values[:, 20:, :] == 0) and np.all(pixel_values[:, :, 30:] == 0)
    assert np.all(labels[20:, :] == 255) and np.all(labels[:, 30:] == 255)
    np.testing.assert_array_equal(labels[:20, :30], label)
    np.testing.assert_allclose(pixel_values[:, :20, :30], normalize(image), rtol=0, atol=0)


def test_normalize_direct_formula(rng):
    image = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    out = normalize(image)
    assert out.shape == (3, 5, 6) and out.dtype == np.float32
    for c in range(3):
        for y in range(5):
            for x in range(6):
                want = (float(image[y, x, c]) - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
                assert abs(out[c, y, x] - want) < 1e-5
    np.testing.assert_allclose(normalize(image, (0, 0, 0), (1, 1, 1)), image.transpose(2, 0, 1))


def test_flip_flips_image_and_label_together(rng):
    image, label = sample(rng, height=24, width=32)
    kwargs = dict(crop_size=(24, 32), img_scale=(32, 24), ratio_range=(1.0, 1.0), photometric=False)
    plain = TrainTransform(flip_prob=0.0, **kwargs)(image, label, np.random.default_rng(3))
    flipped = TrainTransform(flip_prob=1.0, **kwargs)(image, label, np.random.default_rng(3))
    np.testing.assert_array_equal(flipped[0], plain[0][:, :, ::-1])
    np.testing.assert_array_equal(flipped[1], plain[1][:, ::-1])
    np.testing.assert_array_equal(plain[1], label)
    # about half the draws flip with the default probability
    transform = TrainTransform(flip_prob=0.5, **kwargs)
    flips = [np.array_equal(transform(image, label, np.random.default_rng(s))[1], label[:, ::-1]) for s in range(200)]
    assert 70 < sum(flips) < 130


def _banded_label():
    label = np.ones((64, 64), dtype=np.int64)
    label[:, 24:40] = 2
    return label


def _acceptable(crop, ratio=0.75, ignore=255):
    values, counts = np.unique(crop, return_counts=True)
    counts = counts[values != ignore]
    return len(counts) > 1 and counts.max() / counts.sum() < ratio


def test_crop_obeys_cat_max_ratio_when_possible():
    label = _banded_label()
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    with_rule = RandomCrop((16, 16), cat_max_ratio=0.75)
    without = RandomCrop((16, 16), cat_max_ratio=1.0)
    ok_with = [_acceptable(with_rule(image, label, np.random.default_rng(s))[1]) for s in range(60)]
    ok_without = [_acceptable(without(image, label, np.random.default_rng(s))[1]) for s in range(60)]
    assert all(ok_with)
    assert sum(ok_without) < 45  # the rule does something: plain crops often see one class only


def test_crop_gives_up_after_ten_retries_like_mmseg():
    # class 1 plus ignore pixels only: never acceptable, so mmseg's loop ends on the 11th draw
    label = np.full((30, 40), 255, dtype=np.int64)
    label[::2] = 1
    image = np.arange(30 * 40 * 3, dtype=np.int64).reshape(30, 40, 3).astype(np.uint8)
    crop = RandomCrop((8, 12), cat_max_ratio=0.75)
    out_image, out_label = crop(image, label, np.random.default_rng(5))
    replay = np.random.default_rng(5)
    boxes = [crop.get_crop_bbox(30, 40, replay) for _ in range(11)]
    y1, y2, x1, x2 = boxes[-1]
    np.testing.assert_array_equal(out_label, label[y1:y2, x1:x2])
    np.testing.assert_array_equal(out_image, image[y1:y2, x1:x2])


def test_crop_smaller_image_kept_whole(rng):
    image, label = sample(rng, height=10, width=50)
    out_image, out_label = RandomCrop((16, 16))(image, label, rng)
    assert out_image.shape == (10, 16, 3) and out_label.shape == (10, 16)


def test_rescale_size_and_ranges():
    assert rescale_size(512, 683, (2048, 512)) == (512, 683)
    assert rescale_size(100, 300, (2048, 512)) == (512, 1536)
    assert rescale_size(100, 1000, (2048, 512)) == (205, 2048)
    resize = RandomResize(img_scale=(2048, 512), ratio_range=(0.5, 2.0))
    scales = [resize.sample_scale(np.random.default_rng(s)) for s in range(300)]
    longs = np.array([s[0] for s in scales])
    shorts = np.array([s[1] for s in scales])
    assert longs.min() >= 1024 and longs.max() <= 4096 and shorts.min() >= 256 and shorts.max() <= 1024
    assert longs.min() < 1150 and longs.max() > 3900  # covers the range
    np.testing.assert_allclose(longs / shorts, 4.0, atol=0.02)

    small = RandomResize(img_scale=(64, 16), ratio_range=(0.5, 2.0))
    image = np.zeros((30, 50, 3), dtype=np.uint8)
    label = np.zeros((30, 50), dtype=np.int64)
    for seed in range(40):
        scale = small.sample_scale(np.random.default_rng(seed))
        out_image, out_label = small(image, label, np.random.default_rng(seed))
        h, w = out_label.shape
        assert out_image.shape == (h, w, 3)
        assert max(h, w) <= max(scale) + 1 and min(h, w) <= min(scale) + 1
        assert max(h, w) >= max(scale) - 1 or min(h, w) >= min(scale) - 1  # one bound is tight
        assert abs(w / h - 50 / 30) < 2.0 / min(h, w) + 1e-9


def test_resize_label_keeps_values():
    label = np.array([[0, 1, 2], [3, 4, 255]], dtype=np.int64)
    up = resize_label(label, (4, 6))
    np.testing.assert_array_equal(up, np.repeat(np.repeat(label, 2, axis=0), 2, axis=1))
    assert up.dtype == np.int64
    down = resize_label(np.repeat(np.repeat(label, 3, axis=0), 3, axis=1), (2, 3))
    np.testing.assert_array_equal(down, label)


def test_pad_to_channels_first():
    array = np.ones((3, 2, 2), dtype=np.float32)
    padded = pad_to(array, (3, 4), 0.0, channels_first=True)
    assert padded.shape == (3, 3, 4) and padded[:, 2:].sum() == 0 and padded[:, :, 2:].sum() == 0


def test_hsv_matches_colorsys(rng):
    pixels = rng.random((200, 3))
    pixels[:5] = [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 1]]
    ours = rgb_to_hsv(pixels)
    expected = np.array([colorsys.rgb_to_hsv(*p) for p in pixels])
    np.testing.assert_allclose(ours, expected, atol=1e-12)
    back = hsv_to_rgb(ours)
    np.testing.assert_allclose(back, pixels, atol=1e-12)
    np.testing.assert_allclose(back, np.array([colorsys.hsv_to_rgb(*p) for p in expected]), atol=1e-12)


class RecordingRng:
    """Stands in for numpy.random.Generator: always 'yes' to coin flips, records every draw."""

    def __init__(self, mode: int) -> None:
        self.mode = mode
        self.calls: list[tuple] = []

    def integers(self, low, high=None):
        self.calls.append(("integers", low, high))
        if (low, high) == (2, None) and len([c for c in self.calls if c == ("integers", 2, None)]) == 2:
            return self.mode
        return 1 if high is None else high - 1

    def uniform(self, low, high):
        self.calls.append(("uniform", low, high))
        return low


@pytest.mark.parametrize("mode", [0, 1])
def test_photometric_order_and_draws(mode):
    image = np.random.default_rng(0).integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    rng = RecordingRng(mode)
    out, label = PhotoMetricDistortion()(image, None, rng)
    assert out.dtype == np.uint8 and out.shape == image.shape and label is None
    brightness = [("integers", 2, None), ("uniform", -32, 32)]
    contrast = [("integers", 2, None), ("uniform", 0.5, 1.5)]
    saturation = [("integers", 2, None), ("uniform", 0.5, 1.5)]
    hue = [("integers", 2, None), ("integers", -18, 18)]
    mode_draw = [("integers", 2, None)]
    if mode == 1:  # mmseg: mode == 1 -> contrast first
        expected = brightness + mode_draw + contrast + saturation + hue
    else:
        expected = brightness + mode_draw + saturation + hue + contrast
    assert rng.calls == expected


def test_photometric_brightness_direct():
    image = np.array([[[0, 100, 250]]], dtype=np.uint8)

    class Rng(RecordingRng):
        def integers(self, low, high=None):
            self.calls.append(("integers", low, high))
            return 1 if len(self.calls) == 1 else 0  # only brightness fires

        def uniform(self, low, high):
            return 10.7

    out, _ = PhotoMetricDistortion()(image, None, Rng(0))
    np.testing.assert_array_equal(out, [[[10, 110, 255]]])  # clip then truncate, like mmseg


def test_photometric_reproducible_and_nearly_identity_when_neutral(rng):
    image = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    distort = PhotoMetricDistortion()
    a, _ = distort(image, None, np.random.default_rng(11))
    b, _ = distort(image, None, np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)
    neutral = PhotoMetricDistortion(brightness_delta=0, contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=0)
    for seed in range(5):
        out, _ = neutral(image, None, np.random.default_rng(seed))
        assert np.abs(out.astype(int) - image).max() <= 8  # only 8-bit HSV round trips (H in 2-degree steps)


def test_eval_transform(rng):
    image, label = sample(rng, height=30, width=50)
    pixel_values, labels = EvalTransform()(image, label)
    assert pixel_values.shape == (3, 30, 50) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, label)
    pixel_values, labels = EvalTransform(size=(16, 24))(image, label)
    assert pixel_values.shape == (3, 16, 24) and labels.shape == (30, 50)
    fit = EvalTransform(size=(64, 16), keep_ratio=True, size_divisor=8)
    assert fit.output_size(30, 50) == (16, 32)  # rescale to 16x27, then up to multiples of 8
    pixel_values, none = fit(image)
    assert pixel_values.shape == (3, 16, 32) and none is None


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(crop_size=(0, 512)), r"crop_size.*positive"),
        (dict(crop_size=512), r"crop_size.*pair"),
        (dict(img_scale=(2048,)), r"img_scale"),
        (dict(ratio_range=(2.0, 0.5)), r"ratio_range.*low <= high"),
        (dict(cat_max_ratio=0.0), r"cat_max_ratio must lie in \(0.0, 1.0\], got 0.0"),
        (dict(cat_max_ratio=1.5), r"cat_max_ratio must lie in \(0.0, 1.0\], got 1.5"),
        (dict(flip_prob=-0.1), r"flip_prob must lie in \[0.0, 1.0\], got -0.1"),
        (dict(std=(1.0, 0.0, 1.0)), r"std must be 3 positive"),
        (dict(mean=(1.0, 2.0)), r"mean must be 3 numbers"),
        (dict(ignore_index="255"), r"ignore_index must be an integer"),
    ],
)
def test_train_transform_argument_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        TrainTransform(**kwargs)


def test_input_errors(rng):
    transform = TrainTransform(crop_size=(8, 8), img_scale=(16, 8))
    image, label = sample(rng, height=10, width=12)
    with pytest.raises(ValueError, match=r"\(10, 12\).*\(10, 11\)"):
        transform(image, label[:, :11], rng)
    with pytest.raises(TypeError, match="uint8"):
        transform(image.astype(np.float32), label, rng)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        transform(image[..., 0], label, rng)
    with pytest.raises(TypeError, match="Generator"):
        transform(image, label, 3)
    with pytest.raises(ValueError, match="keep_ratio"):
        EvalTransform(keep_ratio=True)
    with pytest.raises(ValueError, match="size_divisor"):
        EvalTransform(size_divisor=0)
