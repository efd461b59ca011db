"""Drop-in for transformers: SegformerImageProcessor channel rule and public single-step methods (item 10),
transformers' slow SegformerImageProcessor as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segformer.common.images.image_processing import SegformerImageProcessor


def _hf_processor(**kwargs):
    transformers = pytest.importorskip("transformers")
    return transformers.SegformerImageProcessor(**kwargs)


@pytest.mark.parametrize("channels", [1, 2, 4])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_one_two_four_channels_kept_with_matching_mean_std(channels, layout):
    rng = np.random.default_rng(channels)
    image = rng.integers(0, 256, size=(40, 50, channels), dtype=np.uint8)
    if layout == "channels_first":
        image = image.transpose(2, 0, 1)
    kwargs = dict(size={"height": 24, "width": 32}, image_mean=[0.5] * channels, image_std=[0.25] * channels)
    ours = SegformerImageProcessor(**kwargs)(image, return_tensors="np", input_data_format=layout).pixel_values
    assert ours.shape == (1, channels, 24, 32)
    theirs = _hf_processor(**kwargs)(image, return_tensors="np", input_data_format=layout).pixel_values
    np.testing.assert_array_equal(ours, theirs)


def test_do_convert_rgb_false_keeps_channels_with_scalar_stats():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=(40, 50, 4), dtype=np.uint8)
    kwargs = dict(size=16, image_mean=0.5, image_std=0.5)
    ours = SegformerImageProcessor(do_convert_rgb=False, **kwargs)(image, return_tensors="np").pixel_values
    assert ours.shape == (1, 4, 16, 16)
    theirs = _hf_processor(**kwargs)(image, return_tensors="np", input_data_format="channels_last").pixel_values
    np.testing.assert_array_equal(ours, theirs)


def test_default_settings_keep_the_rgb_leniency():
    rng = np.random.default_rng(8)
    rgb = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((40, 50, 1), 200, np.uint8)], axis=-1)
    processor = SegformerImageProcessor(size=16)
    expected = processor(rgb, return_tensors="np").pixel_values
    for image in (rgba, Image.fromarray(rgba)):
        np.testing.assert_array_equal(processor(image, return_tensors="np").pixel_values, expected)
    gray = rgb[:, :, 0]
    assert processor(Image.fromarray(gray), return_tensors="np").pixel_values.shape == (1, 3, 16, 16)
    kept = SegformerImageProcessor(size=16, image_mean=[0.5] * 4, image_std=[0.5] * 4)
    assert kept(Image.fromarray(rgba), return_tensors="np").pixel_values.shape == (1, 4, 16, 16)
    with pytest.raises(ValueError, match="image_mean has 4 values but images\\[0\\] has 3 channels"):
        kept(rgb)


def test_public_single_steps_match_transformers():
    rng = np.random.default_rng(9)
    ours, theirs = SegformerImageProcessor(), _hf_processor()
    assert ours.is_fast is False and theirs.is_fast is False
    hwc = rng.integers(0, 256, size=(33, 47, 3), dtype=np.uint8)
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    for image in (hwc, chw):
        for size in ({"height": 20, "width": 28}, {"height": 64, "width": 64}):
            np.testing.assert_array_equal(ours.resize(image, size), theirs.resize(image, size))
        np.testing.assert_array_equal(
            ours.resize(image, {"height": 20, "width": 28}, data_format="channels_first"),
            theirs.resize(image, {"height": 20, "width": 28}, data_format="channels_first"),
        )
        rescaled = ours.rescale(image, 1 / 255)
        assert rescaled.dtype == np.float32 and rescaled.shape == image.shape
        np.testing.assert_array_equal(rescaled, theirs.rescale(image, 1 / 255))
        mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]
        np.testing.assert_array_equal(ours.normalize(rescaled, mean, std), theirs.normalize(rescaled, mean, std))
        np.testing.assert_array_equal(ours.normalize(image, 0.5, 0.5), theirs.normalize(image, 0.5, 0.5))
    label = rng.integers(0, 151, size=(33, 47)).astype(np.uint8)
    label[0, :3] = [0, 255, 1]
    expected = theirs.reduce_label(label.copy())
    np.testing.assert_array_equal(ours.reduce_label(label), expected)
    assert list(ours.reduce_label(label)[0, :3]) == [255, 255, 0]
    with pytest.raises(ValueError, match="mean has 2 values but the image has 3 channels"):
        ours.normalize(hwc, [0.5, 0.5], 0.5)
    with pytest.raises(TypeError, match="antialias"):
        ours.resize(hwc, 10, antialias=True)


@pytest.mark.parametrize("shape", [(3, 40, 3), (1, 40, 3), (4, 40, 3), (3, 40, 4), (3, 4, 4)])
def test_ambiguous_layouts_are_never_guessed(shape):
    """Both the first and the last axis could hold channels: transformers assumes channels first (with a warning)
    and reads a 3-row RGB image as 3 channels of 40 x 3 pixels; ours asks for ``input_data_format``."""
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    ours = SegformerImageProcessor(size={"height": 8, "width": 8})
    with pytest.raises(ValueError, match=r"images\[0\]: the channel axis of an image of shape .* is ambiguous.*"
                                         r"input_data_format='channels_last' \(HWC\) or 'channels_first' \(CHW\)"):
        ours(image, return_tensors="np")
    with pytest.raises(ValueError, match="ambiguous"):
        ours.resize(image, {"height": 8, "width": 8})
    theirs = _hf_processor(size={"height": 8, "width": 8})
    for layout, channels in (("channels_last", shape[-1]), ("channels_first", shape[0])):  # told the layout, both agree
        if channels != 3:
            continue  # transformers leaves 1 / 4 channel arrays as they are (its RGB conversion is for PIL images)
        np.testing.assert_allclose(
            ours(image, input_data_format=layout, return_tensors="np").pixel_values,
            theirs(image, input_data_format=layout, return_tensors="np").pixel_values, atol=1e-6)


@pytest.mark.parametrize("shape, channels_last", [((40, 50, 3), True), ((3, 40, 50), False), ((5, 40, 3), True),
                                                  ((3, 40, 6), False)])
def test_unambiguous_layouts_are_inferred_as_transformers_does(shape, channels_last):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    ours = SegformerImageProcessor(size={"height": 8, "width": 8})(image, return_tensors="np").pixel_values
    layout = "channels_last" if channels_last else "channels_first"
    theirs = _hf_processor(size={"height": 8, "width": 8})(image, input_data_format=layout, return_tensors="np")
    np.testing.assert_allclose(ours, theirs.pixel_values, atol=1e-6)
