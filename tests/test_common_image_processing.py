"""SegformerImageProcessor: Hugging Face parity (fixtures), inputs, properties, serialization, errors, post-processing."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import FIXTURES, ROOT, shared_or_skip
from segformer.common.images.image_processing import (
    BatchFeature,
    SegformerFeatureExtractor,
    SegformerImageProcessor,
    post_process_semantic_segmentation,
    reduce_labels,
    resize_nearest,
)

LOCAL_CASES = FIXTURES / "processor"
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _load_cases(folder: Path, npz_name: str) -> tuple[list[dict], dict[str, np.ndarray]]:
    cases = json.loads((folder / "cases.json").read_text())["cases"]
    with np.load(folder / npz_name) as data:
        arrays = {key: data[key] for key in data.files}
    return cases, arrays


def _run_case(case: dict, arrays: dict[str, np.ndarray]) -> tuple[float, bool | None]:
    """Run one fixture case through our processor: (max |diff| of pixel_values, labels exactly equal or None)."""
    name = case["name"]
    processor = SegformerImageProcessor(**case["processor_kwargs"])
    images = [arrays[f"{name}_image_{i}"] for i in range(case["num_images"])]
    maps = [arrays[f"{name}_map_{i}"] for i in range(case["num_maps"])] or None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of the reference cases may warn
        out = processor(images, maps, return_tensors="np")
    expected = arrays[f"{name}_pixel_values"]
    assert out.pixel_values.dtype == np.float32 and out.pixel_values.shape == expected.shape
    diff = float(np.abs(out.pixel_values - expected).max())
    labels_equal = None
    if maps is not None:
        assert out.labels.dtype == np.int64
        labels_equal = bool(np.array_equal(out.labels, arrays[f"{name}_labels"]))
    return diff, labels_equal


def _processing_cases(folder: Path, npz_name: str) -> list[dict]:
    return [c for c in json.loads((folder / "cases.json").read_text())["cases"] if c["name"] != "post"]


def _random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# parity with transformers' SegformerImageProcessor 4.57.6


@pytest.mark.parametrize("case", _processing_cases(LOCAL_CASES, "cases_small.npz"), ids=lambda c: c["name"])
def test_matches_hf_local_fixtures(case: dict) -> None:
    _, arrays = _load_cases(LOCAL_CASES, "cases_small.npz")
    diff, labels_equal = _run_case(case, arrays)
    print(f"pixel_values max|diff| {case['name']} (local subset): {diff:.3g}")
    assert diff <= 1e-6
    assert labels_equal in (None, True)


def test_matches_hf_full_fixtures() -> None:
    npz = shared_or_skip("processor/cases.npz")
    cases, arrays = _load_cases(npz.parent, "cases.npz")
    report = {}
    for case in cases:
        if case["name"] == "post":
            continue
        diff, labels_equal = _run_case(case, arrays)
        report[case["name"]] = (diff, labels_equal)
        assert diff <= 1e-6, (case["name"], diff)
        assert labels_equal in (None, True), case["name"]
    print("pixel_values max|diff| per case (full ../shared set):", report)
    assert "cats_default" in report


def _post_arrays() -> dict[str, np.ndarray]:
    _, arrays = _load_cases(LOCAL_CASES, "cases_small.npz")
    return arrays


POST_TARGETS = [(500, 300), (37, 53)]


def _check_post(make) -> None:
    arrays = _post_arrays()
    logits = make(arrays["post_logits"])
    resized = post_process_semantic_segmentation({"logits": logits}, target_sizes=POST_TARGETS)
    native = post_process_semantic_segmentation(logits)
    for i in range(2):
        assert np.array_equal(np.asarray(resized[i]), arrays[f"post_target_{i}"])
        assert np.array_equal(np.asarray(native[i]), arrays[f"post_native_{i}"])
        assert np.asarray(resized[i]).dtype == np.int64


def test_post_process_matches_hf_numpy() -> None:
    _check_post(lambda x: x)


def test_post_process_matches_hf_torch() -> None:
    torch = pytest.importorskip("torch")
    _check_post(torch.from_numpy)
    arrays = _post_arrays()
    out = post_process_semantic_segmentation(torch.from_numpy(arrays["post_logits"]), POST_TARGETS)
    assert isinstance(out[0], torch.Tensor) and out[0].dtype == torch.int64


def test_post_process_matches_hf_tf() -> None:
    tf = pytest.importorskip("tensorflow")
    _check_post(tf.constant)
    arrays = _post_arrays()
    out = post_process_semantic_segmentation(tf.constant(arrays["post_logits"]), POST_TARGETS)
    assert isinstance(out[0], tf.Tensor) and out[0].dtype == tf.int64


# ---------------------------------------------------------------------------------------------------------------
# inputs: layouts, frameworks, conversions


def test_defaults_match_hf() -> None:
    processor = SegformerImageProcessor()
    assert processor.to_dict() == {
        "do_normalize": True,
        "do_reduce_labels": False,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_processor_type": "SegformerImageProcessor",
        "image_std": [0.229, 0.224, 0.225],
        "resample": 2,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": 512, "width": 512},
    }
    assert SegformerImageProcessor(size=640).size == {"height": 640, "width": 640}
    assert SegformerImageProcessor(size=(64, 48)).size == {"height": 64, "width": 48}
    assert SegformerImageProcessor(resample=Image.Resampling.BICUBIC).resample == 3
    assert SegformerImageProcessor(resample="nearest").resample == 0


def test_layouts_agree(rng: np.random.Generator) -> None:
    hwc = _random_image(rng, 37, 53)
    processor = SegformerImageProcessor(size=(40, 24))
    expected = processor(hwc, return_tensors="np").pixel_values
    variants = {
        "pil": Image.fromarray(hwc),
        "chw": hwc.transpose(2, 0, 1),
        "list": [hwc],
        "batch4d": hwc[None],
        "nested": [[hwc]],
        "float01": hwc.astype(np.float32) / 255,
        "float255": hwc.astype(np.float64),
    }
    for name, image in variants.items():
        kwargs = {"do_rescale": False} if name == "float01" else {}
        got = processor(image, return_tensors="np", **kwargs).pixel_values
        if name == "float01":
            # [0, 1] floats are resized via uint8 and divided by 255 again, then not rescaled: same numbers.
            assert np.abs(got - expected).max() <= 1e-6, name
        else:
            assert np.array_equal(got, expected), name
    channels_last = processor(hwc, return_tensors="np", data_format="channels_last").pixel_values
    assert np.array_equal(channels_last, expected.transpose(0, 2, 3, 1))
    keep = processor([hwc, hwc.transpose(2, 0, 1)], data_format=None).pixel_values
    assert keep[0].shape == (40, 24, 3) and keep[1].shape == (3, 40, 24)


def test_torch_and_tf_inputs(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("tensorflow")
    hwc = _random_image(rng, 30, 20)
    label = rng.integers(0, 10, size=(30, 20))
    processor = SegformerImageProcessor(size=16)
    expected = processor(hwc, label, return_tensors="np")
    from_torch = processor(torch.from_numpy(hwc.transpose(2, 0, 1).copy()), torch.from_numpy(label), return_tensors="np")
    from_tf = processor(tf.constant(hwc[None]), tf.constant(label[None]), return_tensors="np")
    for got in (from_torch, from_tf):
        assert np.array_equal(got.pixel_values, expected.pixel_values)
        assert np.array_equal(got.labels, expected.labels)


def test_return_tensors_types(rng: np.random.Generator) -> None:
    images = [_random_image(rng, 20, 30), _random_image(rng, 25, 12)]
    maps = [rng.integers(0, 5, size=(20, 30)), rng.integers(0, 5, size=(25, 12))]
    processor = SegformerImageProcessor(size=8)
    as_lists = processor(images, maps)
    assert isinstance(as_lists, BatchFeature) and isinstance(as_lists.pixel_values, list)
    assert as_lists["pixel_values"][0].dtype == np.float32 and as_lists.labels[1].dtype == np.int64
    as_np = processor(images, maps, return_tensors="np")
    assert as_np.pixel_values.shape == (2, 3, 8, 8) and as_np.labels.shape == (2, 8, 8)
    torch = pytest.importorskip("torch")
    as_pt = processor(images, maps, return_tensors="pt")
    assert isinstance(as_pt.pixel_values, torch.Tensor) and as_pt.pixel_values.dtype == torch.float32
    assert as_pt.labels.dtype == torch.int64
    assert as_pt.to("cpu") is as_pt and as_pt.to(torch.float64).pixel_values.dtype == torch.float64
    assert as_pt.labels.dtype == torch.int64
    tf = pytest.importorskip("tensorflow")
    as_tf = processor(images, maps, return_tensors="tf")
    assert isinstance(as_tf.pixel_values, tf.Tensor) and as_tf.pixel_values.dtype == tf.float32
    assert as_tf.labels.dtype == tf.int64
    assert np.array_equal(as_tf.pixel_values.numpy(), as_np.pixel_values)


def test_import_loads_no_framework() -> None:
    code = (
        "import sys, numpy as np; from segformer.common import SegformerImageProcessor as P; "
        "P(size=8)(np.zeros((9, 9, 3), np.uint8), return_tensors='np'); "
        "import segformer.common.images.labels, segformer.common.images.viz; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_grayscale_and_alpha_are_converted(rng: np.random.Generator) -> None:
    processor = SegformerImageProcessor(size=(20, 16))
    gray = rng.integers(0, 256, size=(33, 21), dtype=np.uint8)
    gray_rgb = np.repeat(gray[:, :, None], 3, axis=-1)
    expected = processor(gray_rgb, return_tensors="np").pixel_values
    for image in (gray, gray[:, :, None], gray[None], Image.fromarray(gray), Image.fromarray(gray).convert("LA")):
        assert np.array_equal(processor(image, return_tensors="np").pixel_values, expected)
    rgb = _random_image(rng, 33, 21)
    rgba = np.concatenate([rgb, rng.integers(0, 256, size=(33, 21, 1), dtype=np.uint8)], axis=-1)
    expected_rgb = processor(rgb, return_tensors="np").pixel_values
    for image in (rgba, rgba.transpose(2, 0, 1), Image.fromarray(rgba)):
        assert np.array_equal(processor(image, return_tensors="np").pixel_values, expected_rgb)
    palette_image = Image.fromarray(rgb).convert("P")
    assert np.array_equal(
        processor(palette_image, return_tensors="np").pixel_values,
        processor(palette_image.convert("RGB"), return_tensors="np").pixel_values,
    )
    single = SegformerImageProcessor(size=8, do_convert_rgb=False, image_mean=0.5, image_std=0.5)
    assert single(gray, return_tensors="np").pixel_values.shape == (1, 1, 8, 8)
    assert single(rgba, return_tensors="np").pixel_values.shape == (1, 4, 8, 8)  # kept, as transformers does
    with pytest.raises(ValueError, match="image_mean has 3 values but images\\[0\\] has 4 channels"):
        SegformerImageProcessor(size=8, do_convert_rgb=False)(rgba)


def test_sixteen_bit_masks(rng: np.random.Generator) -> None:
    image = _random_image(rng, 29, 41)
    small = rng.integers(0, 200, size=(29, 41))
    processor = SegformerImageProcessor(size=(50, 17))
    expected = processor(image, small.astype(np.uint8), return_tensors="np").labels
    big = small * 300 + 7  # values up to ~60000: no uint8 round trip possible
    got = processor(image, big.astype(np.uint16), return_tensors="np").labels
    assert np.array_equal(got, expected * 300 + 7)
    pil16 = Image.fromarray(big.astype(np.uint16))
    assert np.array_equal(processor(image, pil16, return_tensors="np").labels, got)


def test_scaled_float_warns_once(rng: np.random.Generator) -> None:
    images = [rng.random((10, 12, 3), dtype=np.float32) for _ in range(3)]
    with pytest.warns(UserWarning, match="do_rescale") as record:
        SegformerImageProcessor(size=8)(images)
    assert sum("do_rescale" in str(w.message) for w in record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SegformerImageProcessor(size=8, do_rescale=False)(images)
        SegformerImageProcessor(size=8)(_random_image(rng, 10, 12))


# ---------------------------------------------------------------------------------------------------------------
# properties (hypothesis)

DTYPES = ["uint8", "float32_01", "float64_255", "uint16_255", "float32_wide"]
LAYOUTS = ["hwc", "chw", "pil", "torch_chw", "gray"]


def _make_input(data: st.DataObject, height: int, width: int, dtype: str, layout: str) -> tuple[object, np.ndarray]:
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height, width, 3)).astype(np.uint8)
    if dtype == "uint8":
        array = base
    elif dtype == "float32_01":
        array = base.astype(np.float32) / 255
    elif dtype == "float64_255":
        array = base.astype(np.float64)
    elif dtype == "uint16_255":
        array = base.astype(np.uint16)
    else:
        array = rng.normal(0.0, 3.0, size=(height, width, 3)).astype(np.float32)
    if layout == "gray":
        array = array[:, :, 0]
    elif layout in ("chw", "torch_chw"):
        array = np.ascontiguousarray(array.transpose(2, 0, 1))
    if layout == "pil":
        return Image.fromarray(base), base
    return array, array


@HYPOTHESIS
@given(
    data=st.data(),
    height=st.integers(5, 40),
    width=st.integers(5, 40),
    out_h=st.integers(1, 33),
    out_w=st.integers(1, 33),
    dtype=st.sampled_from(DTYPES),
    layout=st.sampled_from(LAYOUTS),
    do_resize=st.booleans(),
    reduce=st.booleans(),
    data_format=st.sampled_from(["channels_first", "channels_last"]),
)
def test_property_shapes_dtypes_no_mutation(
    data, height, width, out_h, out_w, dtype, layout, do_resize, reduce, data_format
) -> None:
    if layout == "torch_chw":
        torch = pytest.importorskip("torch")
    image, backing = _make_input(data, height, width, dtype, layout)
    if layout == "torch_chw":
        image = torch.from_numpy(backing)
    rng = np.random.default_rng(height * 100 + width)
    label = rng.integers(0, 256, size=(height, width)).astype(np.uint8)
    image_before, label_before = backing.copy(), label.copy()
    input_format = "channels_first" if layout in ("chw", "torch_chw") else None
    processor = SegformerImageProcessor(size=(out_h, out_w), do_resize=do_resize, do_reduce_labels=reduce)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = processor(
            [image, image], [label, label], return_tensors="np", data_format=data_format, input_data_format=input_format
        )
    h, w = (out_h, out_w) if do_resize else (height, width)
    expected_shape = (2, 3, h, w) if data_format == "channels_first" else (2, h, w, 3)
    assert out.pixel_values.shape == expected_shape and out.pixel_values.dtype == np.float32
    assert out.labels.shape == (2, h, w) and out.labels.dtype == np.int64
    assert np.all(np.isfinite(out.pixel_values))
    assert np.array_equal(backing, image_before) and np.array_equal(label, label_before)
    values = set(np.unique(out.labels).tolist())
    allowed = set(np.unique(reduce_labels(label) if reduce else label).tolist())
    assert values <= allowed


def _hf_reduce_label(label: np.ndarray) -> np.ndarray:
    """Hugging Face's reduce_label, verbatim in behaviour (on a copy)."""
    label = label.copy()
    label[label == 0] = 255
    label = label - 1
    label[label == 254] = 255
    return label


@HYPOTHESIS
@given(
    height=st.integers(1, 30),
    width=st.integers(1, 30),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from(["uint8", "int32", "int64"]),
)
def test_property_reduce_labels(height, width, seed, dtype) -> None:
    rng = np.random.default_rng(seed)
    label = rng.choice(np.array([0, 1, 2, 7, 149, 150, 254, 255]), size=(height, width)).astype(dtype)
    before = label.copy()
    reduced = reduce_labels(label)
    assert np.array_equal(label, before)
    assert np.array_equal(reduced, _hf_reduce_label(label).astype(np.int64))
    assert np.all(reduced[before == 0] == 255) and np.all(reduced[before == 255] == 255)
    inside = (before > 0) & (before < 255)
    assert np.array_equal(reduced[inside], before[inside].astype(np.int64) - 1)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    out = SegformerImageProcessor(do_resize=False, do_reduce_labels=True)(
        image, label, return_tensors="np", input_data_format="channels_last"
    )
    assert np.array_equal(out.labels[0], reduced)


@HYPOTHESIS
@given(
    height=st.integers(1, 60),
    width=st.integers(1, 60),
    out_h=st.integers(1, 60),
    out_w=st.integers(1, 60),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_nearest_matches_pillow(height, width, out_h, out_w, seed) -> None:
    label = np.random.default_rng(seed).integers(0, 256, size=(height, width)).astype(np.uint8)
    expected = np.asarray(Image.fromarray(label).resize((out_w, out_h), resample=Image.Resampling.NEAREST))
    assert np.array_equal(resize_nearest(label, (out_h, out_w)), expected)


@FEW
@given(
    size=st.one_of(st.integers(1, 2048), st.tuples(st.integers(1, 999), st.integers(1, 999))),
    resample=st.integers(0, 5),
    do_resize=st.booleans(),
    do_rescale=st.booleans(),
    rescale_factor=st.floats(1e-4, 10, allow_nan=False),
    do_normalize=st.booleans(),
    mean=st.lists(st.floats(-1, 1, allow_nan=False), min_size=3, max_size=3),
    std=st.lists(st.floats(0.01, 2, allow_nan=False), min_size=3, max_size=3),
    reduce=st.booleans(),
    convert=st.booleans(),
)
def test_property_save_load_round_trip(
    tmp_path_factory, size, resample, do_resize, do_rescale, rescale_factor, do_normalize, mean, std, reduce, convert
) -> None:
    folder = tmp_path_factory.mktemp("proc")
    processor = SegformerImageProcessor(
        do_resize=do_resize,
        size=size,
        resample=resample,
        do_rescale=do_rescale,
        rescale_factor=rescale_factor,
        do_normalize=do_normalize,
        image_mean=mean,
        image_std=std,
        do_reduce_labels=reduce,
        do_convert_rgb=convert,
    )
    written = processor.save_pretrained(folder)
    assert written == [str(folder / "preprocessor_config.json")]
    first = (folder / "preprocessor_config.json").read_text()
    loaded = SegformerImageProcessor.from_pretrained(folder)
    assert loaded == processor and loaded.to_dict() == processor.to_dict()
    loaded.save_pretrained(folder)
    assert (folder / "preprocessor_config.json").read_text() == first
    assert json.loads(first)["image_processor_type"] == "SegformerImageProcessor"
    assert ("do_convert_rgb" in json.loads(first)) == (not convert)
    assert sorted(p.name for p in folder.iterdir()) == ["preprocessor_config.json"]


# ---------------------------------------------------------------------------------------------------------------
# serialization and legacy


def test_hf_file_format(tmp_path: Path) -> None:
    SegformerImageProcessor(size=(256, 320)).save_pretrained(tmp_path)
    text = (tmp_path / "preprocessor_config.json").read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "do_normalize": true,')
    assert '"size": {\n    "height": 256,\n    "width": 320\n  }' in text
    assert SegformerImageProcessor.from_pretrained(tmp_path / "preprocessor_config.json").size == {"height": 256, "width": 320}
    override = SegformerImageProcessor.from_pretrained(tmp_path, do_normalize=False)
    assert override.do_normalize is False


def test_legacy_reduce_labels_is_honoured(tmp_path: Path) -> None:
    with pytest.warns(FutureWarning, match="reduce_labels"):
        assert SegformerImageProcessor(reduce_labels=True).do_reduce_labels is True
    old = {
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "SegformerFeatureExtractor",
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "reduce_labels": True,
        "resample": 2,
        "size": 512,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(old))
    with pytest.warns(FutureWarning, match="reduce_labels"):
        loaded = SegformerImageProcessor.from_pretrained(tmp_path)
    assert loaded.do_reduce_labels is True and loaded.size == {"height": 512, "width": 512}
    image, label = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)
    with pytest.warns(FutureWarning, match="reduce_labels"):
        out = SegformerImageProcessor(do_resize=False)(image, label, reduce_labels=True, return_tensors="np",
                                                       input_data_format="channels_last")
    assert np.all(out.labels == 255)
    with pytest.warns(UserWarning, match="keep_ratio"):
        SegformerImageProcessor(keep_ratio=False, image_scale=(512, 512))
    with pytest.warns(UserWarning, match="unknown arguments"):
        SegformerImageProcessor(not_an_arg=1)


def test_feature_extractor_alias_warns() -> None:
    with pytest.warns(FutureWarning, match="SegformerImageProcessor"):
        extractor = SegformerFeatureExtractor(size=64)
    assert isinstance(extractor, SegformerImageProcessor) and extractor.size == {"height": 64, "width": 64}
    assert extractor.to_dict()["image_processor_type"] == "SegformerImageProcessor"
    import segformer
    import segformer.common

    assert segformer.SegformerImageProcessor is SegformerImageProcessor
    assert segformer.common.SegformerFeatureExtractor is SegformerFeatureExtractor


# ---------------------------------------------------------------------------------------------------------------
# errors


def test_errors_name_argument_seen_and_allowed(rng: np.random.Generator) -> None:
    processor = SegformerImageProcessor(size=8)
    image = _random_image(rng, 10, 12)
    cases = [
        (ValueError, r"images\[0\].*5 channels.*allowed", lambda: processor(np.zeros((10, 12, 5), np.uint8), input_data_format="channels_last")),
        (ValueError, r"images\[0\].*channel axis.*\(10, 12, 5\)", lambda: processor(np.zeros((10, 12, 5), np.uint8))),
        (ValueError, r"images\[0\].*empty", lambda: processor(np.zeros((0, 12, 3), np.uint8))),
        (ValueError, r"images: got an empty list", lambda: processor([])),
        (ValueError, r"segmentation_maps: got 1 label maps for 2 images", lambda: processor([image, image], [np.zeros((10, 12))])),
        (ValueError, r"segmentation_maps\[0\] is \(10, 13\).*images\[0\] is \(10, 12\)", lambda: processor(image, np.zeros((10, 13), np.int64))),
        (TypeError, r"images\[0\]: dtype <U1.*allowed", lambda: processor(np.full((10, 12, 3), "a"))),
        (TypeError, r"images\[0\]: dtype complex128", lambda: processor(np.zeros((10, 12, 3), complex))),
        (TypeError, r"images\[0\]: dtype bool", lambda: processor(np.zeros((10, 12, 3), bool))),
        (TypeError, r"images: got str", lambda: processor("cat.png")),
        (ValueError, r"images\[0\].*NaN", lambda: processor(np.full((10, 12, 3), np.nan, np.float32))),
        (ValueError, r"return_tensors must be one of \(None, 'np', 'pt', 'tf'\), got 'jax'", lambda: processor(image, return_tensors="jax")),
        (ValueError, r"return_tensors='np' needs all pixel_values the same shape", lambda: processor([image, image[:5]], do_resize=False, return_tensors="np")),
        (ValueError, r"size must be an int.*shortest_edge", lambda: SegformerImageProcessor(size={"shortest_edge": 512})),
        (ValueError, r"resample must be a PIL filter code in 0..5", lambda: SegformerImageProcessor(resample=9)),
        (ValueError, r"image_std must be non-zero", lambda: SegformerImageProcessor(image_std=[1, 0, 1])),
        (ValueError, r"data_format must be 'channels_first', 'channels_last' or None, got 'nchw'", lambda: processor(image, data_format="nchw")),
        (ValueError, r"image_mean has 2 values but images\[0\] has 3 channels", lambda: processor(image, image_mean=[0.5, 0.5])),
        (TypeError, r"segmentation_maps\[0\]: dtype <U1 is not supported; allowed", lambda: processor(image, np.full((10, 12), "a"))),
        (ValueError, r"segmentation_maps\[0\]: float label map must hold integer", lambda: processor(image, np.full((10, 12), 0.5))),
        (ValueError, r"segmentation_maps\[0\]: a PIL label map must be single-channel.*'RGB'", lambda: processor(image, Image.fromarray(image))),
    ]
    for error, pattern, call in cases:
        with pytest.raises(error, match=pattern):
            call()


def test_from_pretrained_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        SegformerImageProcessor.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError):
        SegformerImageProcessor.from_pretrained(tmp_path / "nope" / "deeper")


# ---------------------------------------------------------------------------------------------------------------
# post-processing across frameworks


@FEW
@given(
    batch=st.integers(1, 3),
    classes=st.integers(1, 6),
    height=st.integers(1, 20),
    width=st.integers(1, 20),
    sizes=st.lists(st.tuples(st.integers(1, 70), st.integers(1, 70)), min_size=3, max_size=3),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_post_process_frameworks_agree(batch, classes, height, width, sizes, seed) -> None:
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("tensorflow")
    logits = np.random.default_rng(seed).standard_normal((batch, classes, height, width)).astype(np.float32)
    target_sizes = sizes[:batch]
    from_np = post_process_semantic_segmentation(logits, target_sizes)
    from_pt = post_process_semantic_segmentation(torch.from_numpy(logits), torch.tensor(target_sizes))
    from_tf = post_process_semantic_segmentation(tf.constant(logits), np.array(target_sizes))
    probs_np = post_process_semantic_segmentation(logits, target_sizes, return_probabilities=True)
    probs_pt = post_process_semantic_segmentation(torch.from_numpy(logits), target_sizes, return_probabilities=True)
    probs_tf = post_process_semantic_segmentation(tf.constant(logits), target_sizes, return_probabilities=True)
    for i, (h, w) in enumerate(target_sizes):
        assert probs_np[i].shape == (classes, h, w)
        assert np.abs(probs_np[i] - probs_pt[i].numpy()).max() <= 1e-5
        assert np.abs(probs_np[i] - probs_tf[i].numpy()).max() <= 1e-5
        assert np.allclose(probs_np[i].sum(axis=0), 1.0, atol=1e-5)
        # Class maps may only differ where two classes are tied to float rounding.
        for other in (from_pt[i].numpy(), from_tf[i].numpy()):
            differ = from_np[i] != other
            if differ.any():
                top = np.sort(probs_np[i], axis=0)
                assert np.all((top[-1] - top[-2])[differ] <= 1e-5)
        assert from_np[i].shape == (h, w) and from_np[i].dtype == np.int64


def test_post_process_inputs_and_errors(rng: np.random.Generator) -> None:
    logits = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)

    class Output:
        def __init__(self, logits):
            self.logits = logits

    native = post_process_semantic_segmentation(Output(logits))
    assert [m.shape for m in native] == [(4, 5), (4, 5)]
    assert np.array_equal(native[0], logits[0].argmax(0))
    processor = SegformerImageProcessor()
    assert np.array_equal(processor.post_process_semantic_segmentation({"logits": logits})[1], native[1])
    probs = post_process_semantic_segmentation(logits, return_probabilities=True)
    assert probs[0].shape == (3, 4, 5) and np.array_equal(probs[0].argmax(0), native[0])
    with pytest.raises(ValueError, match="target_sizes has 1 entries but the logits hold 2 images"):
        post_process_semantic_segmentation(logits, [(8, 8)])
    with pytest.raises(ValueError, match=r"logits must be 4-D \(N, C, H, W\), got shape \(3, 4, 5\)"):
        post_process_semantic_segmentation(logits[0])
    with pytest.raises(ValueError, match="without 'logits'"):
        post_process_semantic_segmentation({"scores": logits})
    with pytest.raises(TypeError, match="outputs must be"):
        post_process_semantic_segmentation([1, 2, 3])
    with pytest.raises(ValueError, match=r"\(height, width\) with positive ints"):
        post_process_semantic_segmentation(logits, [(8, 0), (8, 8)])
