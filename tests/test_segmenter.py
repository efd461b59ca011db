"""segformer.Segmenter, presets, Pillow-exact resize and the Keras raw-image model (issue: one call from image
to named classes).

Oracles: Pillow itself (resize), transformers' image-segmentation pipeline (when installed), numpy
computations written here (class fractions, softmax confidences), hand-computed keep-ratio sizes, and the
published Hub ids / mIoU figures typed in from the SegFormer paper and model cards.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from segformer.common.images.pil_resize import bilinear_coefficients, resize_uint8
from segformer.common.model.presets import PRESETS, format_presets_table, get_preset, keep_ratio_size, resolve_preset_name

from conftest import fixture_path

TINY_SEG = "hf/tiny-seg"


def _pillow(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR, reducing_gap=None))


def _random_sizes(rng: np.random.Generator, count: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    cases = [((480, 640), (512, 512)), ((1000, 90), (64, 64)), ((7, 9), (512, 512)), ((300, 300), (300, 100)),
             ((900, 40), (100, 40)), ((1, 1), (3, 5)), ((5, 3), (1, 1))]
    for _ in range(count):
        cases.append((tuple(int(v) for v in rng.integers(1, 260, 2)), tuple(int(v) for v in rng.integers(1, 260, 2))))
    return cases


# ------------------------------------------------------------------------------------------------- presets
def test_presets_cover_every_published_checkpoint():
    expected_ids = {f"nvidia/mit-b{i}" for i in range(6)}
    expected_ids |= {f"nvidia/segformer-b{i}-finetuned-ade-512-512" for i in range(5)}
    expected_ids |= {"nvidia/segformer-b5-finetuned-ade-640-640"}
    expected_ids |= {f"nvidia/segformer-b{i}-finetuned-cityscapes-1024-1024" for i in range(6)}
    expected_ids |= {f"nvidia/segformer-b0-finetuned-cityscapes-{s}" for s in ("512-1024", "640-1280", "768-768")}
    assert {p.hub_id for p in PRESETS.values()} == expected_ids
    published_ade = {"b0": 37.4, "b1": 42.2, "b2": 46.5, "b3": 49.4, "b4": 50.3, "b5": 51.0}
    for variant, miou in published_ade.items():
        preset = get_preset(f"{variant}-ade")
        assert (preset.metric, preset.score, preset.num_labels, preset.label_set) == ("mIoU", miou, 150, "ade20k")
        assert preset.mode == "whole"
    assert get_preset("b5-ade").input_size == (640, 640) and get_preset("b4-ade").input_size == (512, 512)
    city = get_preset("b2-city")
    assert (city.mode, city.crop_size, city.stride, city.num_labels) == ("slide", (1024, 1024), (768, 768), 19)
    assert get_preset("b0-city-512-1024").mode == "whole"
    assert get_preset("b0-city-768-768").crop_size == (768, 768)
    assert get_preset("mit-b3").task == "image-classification"


def test_preset_names_aliases_and_errors():
    assert get_preset("segformer_b0_ade20k_512").name == "b0-ade"  # keras-hub's name
    assert get_preset("B2-ADE").name == "b2-ade"
    assert get_preset("nvidia/segformer-b1-finetuned-cityscapes-1024-1024").name == "b1-city"
    assert resolve_preset_name("b0-ade") == "nvidia/segformer-b0-finetuned-ade-512-512"
    assert resolve_preset_name("mit_b5") == "nvidia/mit-b5"
    for unchanged in ("nvidia/other", "./b0-ade", "some/folder/b0-ade", "not-a-preset"):
        assert resolve_preset_name(unchanged) == unchanged
    with pytest.raises(ValueError, match="valid presets: .*b0-ade"):
        get_preset("b9-ade")
    table = format_presets_table()
    assert table.count("\n") == len(PRESETS) + 1 and "mIoU 51.0" in table and "slide 1024x1024 / 768" in table


def test_keep_ratio_size_hand_computed():
    # ADE20K test pipeline: fit long <= 2048 and short <= 512, then round up to multiples of 32.
    # 480 x 640: factor min(2048/640, 512/480) = 1.0667 -> 512 x int(682.67 + 0.5) = 683 -> 704.
    assert keep_ratio_size(480, 640, (2048, 512), 32) == (512, 704)
    assert keep_ratio_size(1024, 2048, (2048, 1024)) == (1024, 2048)
    # 3000 x 4000: factor min(2048/4000, 1024/3000) = 0.34133 -> 1024 x int(1365.33 + 0.5) = 1365.
    assert keep_ratio_size(3000, 4000, (2048, 1024)) == (1024, 1365)
    assert get_preset("b0-ade").test_size(480, 640) == (512, 704)


# ----------------------------------------------------------------------------------------- Pillow resize
def test_numpy_resize_is_pillow_bit_exact():
    rng = np.random.default_rng(3)
    for (height, width), size in _random_sizes(rng, 60):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        assert np.array_equal(resize_uint8(image, size), _pillow(image, size)), ((height, width), size)


def test_fixed_point_weights_sum_to_one():
    for in_size, out_size in ((640, 512), (7, 512), (4000, 512), (512, 512)):
        _, weights = bilinear_coefficients(in_size, out_size)
        assert np.all(np.abs(weights.sum(axis=1) - (1 << 22)) <= weights.shape[1])


# -------------------------------------------------------------------------------------------- Segmenter
@pytest.fixture(scope="module")
def pt_segmenter():
    pytest.importorskip("torch")
    from segformer import Segmenter

    return Segmenter.from_pretrained(str(fixture_path(TINY_SEG)), framework="pt")


@pytest.fixture(scope="module")
def tf_segmenter():
    pytest.importorskip("tensorflow")
    from segformer import Segmenter

    return Segmenter.from_pretrained(str(fixture_path(TINY_SEG)), framework="tf")


def _images(rng: np.random.Generator) -> list[np.ndarray]:
    from segformer.common.images.sample import load_sample_image

    return [load_sample_image(), rng.integers(0, 256, (37, 61, 3), dtype=np.uint8),
            rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)]


def test_segmenter_result_against_numpy(pt_segmenter):
    import torch

    rng = np.random.default_rng(0)
    image = _images(rng)[0]
    result = pt_segmenter(image, return_probabilities=True)
    height, width = image.shape[:2]
    assert result.label_map.shape == (height, width) and result.label_map.dtype == np.int32
    # independent path: processor + model + bilinear upsample + numpy softmax
    pixel_values = pt_segmenter.processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = pt_segmenter.model(pixel_values).logits
        logits = torch.nn.functional.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    logits = logits[0].numpy().astype(np.float64)
    probabilities = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    assert np.array_equal(result.label_map, logits.argmax(0))
    np.testing.assert_allclose(result.confidence, probabilities.max(0), atol=1e-5)
    np.testing.assert_allclose(result.probabilities, probabilities, atol=1e-5)
    counts = np.bincount(logits.argmax(0).reshape(-1), minlength=3)
    for item in result.classes:
        assert item.fraction == pytest.approx(counts[item.id] / (height * width))
        assert item.confidence == pytest.approx(probabilities.max(0)[logits.argmax(0) == item.id].mean(), abs=1e-5)
        assert item.name == pt_segmenter.model.config.id2label[item.id]
    assert [c.fraction for c in result.classes] == sorted((c.fraction for c in result.classes), reverse=True)
    biggest = result.classes[0]
    assert np.array_equal(result.mask(biggest.name), result.label_map == biggest.id)
    assert np.array_equal(result.mask(biggest.id), result.mask(biggest.name.upper()))
    with pytest.raises(ValueError, match="unknown class 'sky'; classes of this model"):
        result.mask("sky")
    assert result.colorize().shape == (height, width, 3) and result.overlay(0.3).dtype == np.uint8
    assert np.array_equal(result.colorize()[result.label_map == biggest.id][0], result.palette[biggest.id])
    assert "confidence" in result.summary() and biggest.name in repr(result)


def test_segmenter_top_k_min_area_and_inputs(pt_segmenter, tmp_path):
    rng = np.random.default_rng(1)
    images = _images(rng)
    full = pt_segmenter(images[0])
    assert len(pt_segmenter(images[0], top_k=1).classes) == 1
    smallest = min(c.fraction for c in full.classes)
    kept = pt_segmenter(images[0], min_area=smallest + 1e-9).classes
    assert all(c.fraction > smallest for c in kept) and len(kept) < len(full.classes)
    with pytest.raises(ValueError, match="top_k"):
        pt_segmenter(images[0], top_k=0)
    # folders (recursive, sorted, image files only), globs, lists, files, PIL images
    (tmp_path / "sub").mkdir()
    Image.fromarray(images[1]).save(tmp_path / "b.png")
    Image.fromarray(images[2]).save(tmp_path / "sub" / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    results = pt_segmenter(tmp_path)
    assert [r.source for r in results] == [str(tmp_path / "b.png"), str(tmp_path / "sub" / "a.png")]
    assert [r.size for r in results] == [(37, 61), (300, 200)]
    assert [r.source for r in pt_segmenter(str(tmp_path / "*.png"))] == [str(tmp_path / "b.png")]
    single = pt_segmenter(tmp_path / "b.png")
    assert np.array_equal(single.label_map, results[0].label_map)
    listed = pt_segmenter([Image.fromarray(images[1]), images[2]])
    assert np.array_equal(listed[1].label_map, results[1].label_map)
    with pytest.raises(ValueError, match="notes.txt"):
        pt_segmenter(tmp_path / "notes.txt")
    with pytest.raises(TypeError, match="uint8"):
        pt_segmenter(images[1].astype(np.float32))
    with pytest.raises(ValueError, match="missing.png: file does not exist"):
        pt_segmenter(tmp_path / "missing.png")
    (tmp_path / "list.txt").write_text("sub/a.png\nb.png\n")
    assert [r.source for r in pt_segmenter(f"@{tmp_path / 'list.txt'}")] == [str(tmp_path / "sub" / "a.png"), str(tmp_path / "b.png")]


def test_segmenter_batches_equal_single_calls(pt_segmenter):
    from segformer import Segmenter

    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(3)] + [_images(rng)[1]]
    batched = Segmenter(pt_segmenter.model, pt_segmenter.processor, batch_size=4)(images)
    for image, result in zip(images, batched):
        assert np.array_equal(result.label_map, pt_segmenter(image).label_map)


def test_segmenter_exif_orientation(pt_segmenter, tmp_path):
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    result = pt_segmenter(tmp_path / "rotated.jpg")
    assert result.size == (50, 30) and result.image.shape == (50, 30, 3)


def test_segmenter_pt_tf_same_label_maps(pt_segmenter, tf_segmenter):
    rng = np.random.default_rng(5)
    for image in _images(rng):
        pt_result = pt_segmenter(image, return_probabilities=True)
        tf_result = tf_segmenter(image)
        ordered = np.sort(pt_result.probabilities, axis=0)
        clear = (ordered[-1] - ordered[-2]) > 1e-4  # ties aside
        assert np.array_equal(pt_result.label_map[clear], tf_result.label_map[clear])
        assert (pt_result.label_map == tf_result.label_map).mean() >= 0.999
        np.testing.assert_allclose(pt_result.confidence, tf_result.confidence, atol=1e-4)


def test_segmenter_slide_and_tta_settings(pt_segmenter, tf_segmenter):
    from segformer import Segmenter

    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    options = dict(mode="slide", crop_size=64, stride=48, resize="none", scales=(0.75, 1.0), flip=True)
    pt_result = Segmenter(pt_segmenter.model, pt_segmenter.processor, **options)(image, return_probabilities=True)
    tf_result = Segmenter(tf_segmenter.model, tf_segmenter.processor, **options)(image)
    ordered = np.sort(pt_result.probabilities, axis=0)
    clear = (ordered[-1] - ordered[-2]) > 1e-4
    assert np.array_equal(pt_result.label_map[clear], tf_result.label_map[clear])
    np.testing.assert_allclose(pt_result.probabilities.sum(0), 1.0, atol=1e-5)


def test_segmenter_preset_settings(pt_segmenter):
    from segformer import Segmenter

    city = Segmenter(pt_segmenter.model, pt_segmenter.processor, preset="b0-city")
    assert (city.settings.mode, city.settings.crop_size, city.settings.stride) == ("slide", (1024, 1024), (768, 768))
    assert city.resize == "keep-ratio" and city.test_scale == (2048, 1024)
    assert Segmenter(pt_segmenter.model, preset="b0-city", mode="whole").settings.mode == "whole"
    ade = Segmenter(pt_segmenter.model, pt_segmenter.processor, preset="b0-ade")
    assert ade._prepared(np.zeros((480, 640, 3), np.uint8)).shape == (3, 512, 704)
    assert Segmenter(pt_segmenter.model, resize=(64, 96))._prepared(np.zeros((10, 10, 3), np.uint8)).shape == (3, 64, 96)
    with pytest.raises(ValueError, match="resize must be one of"):
        Segmenter(pt_segmenter.model, resize="stretch")


def test_segmenter_preset_offline_error(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("huggingface_hub")
    from segformer import Segmenter

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        Segmenter.from_pretrained("b0-ade")
    message = str(info.value)
    assert "nvidia/segformer-b0-finetuned-ade-512-512" in message and str(tmp_path / "cache") in message
    assert "segformer convert" in message
    with pytest.raises(ValueError, match="image-classification encoder"):
        Segmenter.from_pretrained("mit-b0")


def test_to_pipeline_equals_transformers_pipeline(pt_segmenter, tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "model"
    shutil.copytree(fixture_path(TINY_SEG), folder)
    processor_config = pt_segmenter.processor.to_dict()
    processor_config["size"] = {"height": 64, "width": 96}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor_config))
    from segformer import Segmenter

    ours = Segmenter.from_pretrained(str(folder))
    rng = np.random.default_rng(7)
    images = tmp_path / "images"
    images.mkdir()
    for index, image in enumerate(_images(rng)):
        Image.fromarray(image).save(images / f"{index}.png")
    reference = transformers.pipeline("image-segmentation", model=str(folder), framework="pt")
    results = ours(images)
    assert len(results) == 3
    for result in results:
        expected = reference(result.source)
        got = result.to_pipeline()
        assert [item["label"] for item in got] == [item["label"] for item in expected]
        for mine, theirs in zip(got, expected):
            assert mine["score"] is None and theirs["score"] is None
            assert mine["mask"].mode == theirs["mask"].mode == "L" and mine["mask"].size == theirs["mask"].size
            assert (np.asarray(mine["mask"]) == np.asarray(theirs["mask"])).mean() >= 0.999


def test_to_pipeline_on_16_bit_png_decodes_by_range_where_transformers_clips(pt_segmenter, tmp_path):
    """The one deliberate difference from transformers' pipeline: a 16-bit PNG is scaled by its range (ours) where
    transformers' loader clips every value above 255 to white. Each side is checked against its own numpy rule."""
    from segformer import Segmenter
    from segformer.common.inference.segmentation_result import SegmentationResult

    assert "16-bit PNG" in SegmentationResult.to_pipeline.__doc__ and "clips" in SegmentationResult.to_pipeline.__doc__
    folder = tmp_path / "model"
    shutil.copytree(fixture_path(TINY_SEG), folder)
    processor_config = pt_segmenter.processor.to_dict()
    processor_config["size"] = {"height": 64, "width": 96}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor_config))
    values = np.random.default_rng(16).integers(0, 65536, (48, 64), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    scaled = np.repeat(np.round(values * (255 / 65535)).astype(np.uint8)[:, :, None], 3, axis=2)
    clipped = np.repeat(np.clip(values, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    segmenter = Segmenter.from_pretrained(str(folder))
    ours = segmenter(tmp_path / "deep.png")
    assert np.array_equal(ours.label_map, segmenter(scaled).label_map)  # ours: the picture scaled by its range
    assert not np.array_equal(scaled, clipped)
    transformers = pytest.importorskip("transformers")
    from transformers.image_utils import load_image as hf_load_image

    assert np.array_equal(np.asarray(hf_load_image(str(tmp_path / "deep.png"))), clipped)  # theirs: clipped
    reference = transformers.pipeline("image-segmentation", model=str(folder), framework="pt")
    expected = reference(str(tmp_path / "deep.png"))
    from_clipped = segmenter(clipped).to_pipeline()  # our pipeline fed transformers' clipped pixels agrees with it
    assert [item["label"] for item in from_clipped] == [item["label"] for item in expected]
    for mine, theirs in zip(from_clipped, expected):
        assert (np.asarray(mine["mask"]) == np.asarray(theirs["mask"])).mean() >= 0.999


# ------------------------------------------------------------------------------- Keras raw-image model
@pytest.fixture(scope="module")
def image_segmenter(tf_segmenter):
    from segformer import SegformerImageProcessor
    from segformer.tf.image_segmenter import TFSegformerImageSegmenter

    processor = SegformerImageProcessor(size={"height": 64, "width": 96})
    return TFSegformerImageSegmenter.from_processor(tf_segmenter.model, processor), processor


def test_tf_resize_is_pillow_bit_exact():
    tf = pytest.importorskip("tensorflow")
    from segformer.tf.image_segmenter import resize_uint8 as tf_resize

    rng = np.random.default_rng(8)
    dynamic = {}
    for (height, width), size in _random_sizes(rng, 8):
        image = rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8)
        expected = _pillow(image[0], size)
        assert np.array_equal(tf_resize(tf.constant(image), size).numpy()[0], expected)
        if size not in dynamic:
            spec = tf.TensorSpec((None, None, None, 3), tf.uint8)
            dynamic[size] = tf.function(lambda x, s=size: tf_resize(x, s), input_signature=[spec])
        assert np.array_equal(dynamic[size](image).numpy()[0], expected), ((height, width), size)


def test_raw_image_model_equals_processor_model_postprocess(image_segmenter):
    from segformer.common.images.image_processing import post_process_semantic_segmentation

    segmenter, processor = image_segmenter
    rng = np.random.default_rng(9)
    for shape in ((2, 70, 50, 3), (1, 200, 300, 3)):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        pixel_values = processor(images=list(images), return_tensors="np")["pixel_values"]
        np.testing.assert_array_equal(
            segmenter.pixel_values(images).numpy(), pixel_values.transpose(0, 2, 3, 1)
        )
        logits = segmenter.model(pixel_values).logits.numpy()
        expected = np.stack(post_process_semantic_segmentation(logits, target_sizes=[shape[1:3]] * shape[0]))
        assert np.array_equal(segmenter(images).numpy(), expected)
        assert np.array_equal(segmenter.predict(images, verbose=0), expected)
    with pytest.raises(TypeError, match="uint8"):
        segmenter(np.zeros((1, 8, 8, 3), np.float32))


def test_raw_image_model_keras_savedmodel_tflite(image_segmenter, tmp_path):
    import keras
    import tensorflow as tf

    from segformer.tf.export import run_tflite

    segmenter, _ = image_segmenter
    rng = np.random.default_rng(10)
    images = rng.integers(0, 256, (2, 45, 70, 3), dtype=np.uint8)
    eager = segmenter(images).numpy()
    segmenter.save(tmp_path / "raw.keras")
    restored = keras.saving.load_model(tmp_path / "raw.keras")  # safe mode
    assert np.array_equal(restored(images).numpy(), eager)
    segmenter.export_saved_model(str(tmp_path / "serving"))
    serve = tf.saved_model.load(str(tmp_path / "serving")).signatures["serving_default"]
    assert np.array_equal(serve(images=tf.constant(images))["labels"].numpy(), eager)
    other = rng.integers(0, 256, (1, 130, 33, 3), dtype=np.uint8)  # another size, same signature
    assert np.array_equal(serve(images=tf.constant(other))["labels"].numpy(), segmenter(other).numpy())
    segmenter.export_tflite(str(tmp_path / "raw.tflite"), (45, 70))
    assert np.array_equal(run_tflite(tmp_path / "raw.tflite", images[:1]), eager[:1])


def test_presets_command(capsys):
    from segformer.cli import main

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for preset in PRESETS.values():
        assert preset.hub_id in out
    assert "mIoU 37.4" in out and "top-1 70.5" in out


def test_segmenter_slide_lazy_windows_equal_full_path(pt_segmenter, tf_segmenter, tmp_path):
    import torch

    from segformer import Segmenter
    from segformer.pt.inference import predict_logits

    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, (150, 210, 3), dtype=np.uint8)
    options = dict(mode="slide", crop_size=(64, 96), stride=(48, 64), resize="none", batch_size=3)
    segmenter = Segmenter(pt_segmenter.model, pt_segmenter.processor, **options)
    assert segmenter._lazy
    labels_out = np.lib.format.open_memmap(tmp_path / "labels.npy", mode="w+", dtype=np.uint8, shape=(150, 210))
    result = segmenter(image, keep_confidence=False, labels_out=labels_out)
    pixel_values = pt_segmenter.processor(images=image, do_resize=False, return_tensors="pt")["pixel_values"]
    logits = predict_logits(pt_segmenter.model, pixel_values, mode="slide", crop_size=(64, 96), stride=(48, 64))[0]
    logits = logits.numpy()
    ordered = np.sort(logits, axis=0)
    clear = (ordered[-1] - ordered[-2]) > 1e-4
    assert result.label_map is labels_out and result.confidence is None
    assert np.array_equal(np.asarray(labels_out)[clear], logits.argmax(0)[clear])
    counts = np.bincount(np.asarray(labels_out).reshape(-1), minlength=3)
    assert [c.fraction for c in result.classes] == sorted((counts[counts > 0] / counts.sum()).tolist(), reverse=True)
    tf_result = Segmenter(tf_segmenter.model, tf_segmenter.processor, **options)(image)
    assert np.array_equal(tf_result.label_map[clear], logits.argmax(0)[clear])
    with pytest.raises(ValueError, match="one image"):
        segmenter([image, image], labels_out=labels_out)


def test_every_class_resolves_preset_names_to_hub_ids(monkeypatch, tmp_path):
    """A preset name goes to huggingface_hub as its Hub id (a local stand-in for the download); offline, the
    error names the Hub id, the cache and the conversion route."""
    hub = pytest.importorskip("huggingface_hub")
    import shutil as _shutil

    from segformer import SegformerConfig, SegformerImageProcessor

    asked = []

    def snapshot_download(repo_id, **kwargs):
        asked.append(repo_id)
        folder = tmp_path / repo_id.replace("/", "--")
        if not folder.exists():
            _shutil.copytree(fixture_path(TINY_SEG), folder)
            SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
        return str(folder)

    def hf_hub_download(repo_id, filename, **kwargs):
        return str(snapshot_download(repo_id)) + "/" + filename

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(hub, "hf_hub_download", hf_hub_download)
    monkeypatch.chdir(tmp_path)
    assert SegformerConfig.from_pretrained("b0-ade").num_labels == 3  # the stand-in serves the tiny fixture
    assert SegformerImageProcessor.from_pretrained("segformer_b0_ade20k_512").size == {"height": 64, "width": 64}
    ids = {"nvidia/segformer-b0-finetuned-ade-512-512"}
    torch = pytest.importorskip("torch")
    from segformer.pt import SegformerForSemanticSegmentation

    assert SegformerForSemanticSegmentation.from_pretrained("b2-city").config.num_labels == 3
    ids.add("nvidia/segformer-b2-finetuned-cityscapes-1024-1024")
    pytest.importorskip("tensorflow")
    from segformer import Segmenter
    from segformer.tf import TFSegformerForSemanticSegmentation

    assert TFSegformerForSemanticSegmentation.from_preset("segformer_b1_ade20k_512").config.num_labels == 3
    ids.add("nvidia/segformer-b1-finetuned-ade-512-512")
    segmenter = Segmenter.from_preset("b0-city", framework="tf")
    assert segmenter.settings.mode == "slide" and segmenter.processor.size == {"height": 64, "width": 64}
    ids.add("nvidia/segformer-b0-finetuned-cityscapes-1024-1024")
    assert set(asked) == ids and torch is not None

    def offline(repo_id, **kwargs):
        raise hub.errors.LocalEntryNotFoundError("offline and not in the cache")

    monkeypatch.setattr(hub, "snapshot_download", offline)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    for load in (lambda: SegformerForSemanticSegmentation.from_pretrained("b3-ade"),
                 lambda: SegformerConfig.from_pretrained("b3-ade")):
        with pytest.raises(FileNotFoundError) as info:
            load()
        message = str(info.value)
        assert "nvidia/segformer-b3-finetuned-ade-512-512" in message and str(tmp_path / "cache") in message
        assert "segformer convert" in message


def test_imap_background_workers_equal_one_at_a_time(pt_segmenter, tmp_path):
    from segformer import Segmenter
    from segformer.common.images.image_io import BadImageError

    rng = np.random.default_rng(12)
    shapes = [(40, 50), (40, 50), (33, 61), (40, 50), (33, 61), (40, 50), (32, 32)]
    paths = []
    for index, shape in enumerate(shapes):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, shape + (3,), dtype=np.uint8)).save(path)
        paths.append(path)
    broken = tmp_path / "3b.png"
    broken.write_bytes(paths[0].read_bytes()[:60])  # truncated, sorts between 3.png and 4.png
    items = sorted(paths + [broken])
    one_by_one = Segmenter(pt_segmenter.model, pt_segmenter.processor, resize="none", batch_size=1)
    batched = Segmenter(pt_segmenter.model, pt_segmenter.processor, resize="none", batch_size=3)
    results = list(batched.imap(items, workers=2))
    assert len(results) == len(items)
    for item, result in zip(items, results):
        if item == broken:
            assert isinstance(result, BadImageError) and result.path == str(broken)
            continue
        expected = one_by_one(item)
        assert result.source == str(item) and np.array_equal(result.label_map, expected.label_map)
        assert [c.id for c in result.classes] == [c.id for c in expected.classes]
    assert [r.source for r in one_by_one.imap(items, workers=0) if not isinstance(r, BadImageError)] == \
        [str(p) for p in items if p != broken]


def test_imap_parallel_pipelines_split_torch_threads_and_restore_them(pt_segmenter, tmp_path):
    import torch

    from segformer import Segmenter
    from segformer.segmenter import default_workers

    rng = np.random.default_rng(13)
    images = [rng.integers(0, 256, shape + (3,), dtype=np.uint8) for shape in [(40, 50), (33, 61), (40, 50)] * 2]
    segmenter = Segmenter(pt_segmenter.model, pt_segmenter.processor, resize="none", batch_size=2)
    before = torch.get_num_threads()
    assert default_workers("pt") == max(1, min(4, before)) and default_workers("tf") == 2
    try:
        torch.set_num_threads(2)
        iterator = segmenter.imap(images, workers=2)
        first = next(iterator)
        assert torch.get_num_threads() == 1  # 2 threads / 2 workers while the iteration runs
        results = [first, *iterator]
        assert torch.get_num_threads() == 2  # restored at the end
    finally:
        torch.set_num_threads(before)
    for image, result in zip(images, results):
        assert np.array_equal(result.label_map, segmenter(image).label_map)
    with pytest.raises(ValueError, match="workers must be None or an int >= 0, got -1"):
        next(segmenter.imap(images, workers=-1))


def test_tf_imap_parallel_pipelines_equal_one_at_a_time(tf_segmenter, tmp_path):
    from segformer import Segmenter
    from segformer.common.images.image_io import BadImageError

    rng = np.random.default_rng(14)
    paths = []
    for index, shape in enumerate([(40, 50), (33, 61), (40, 50), (40, 50)]):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(rng.integers(0, 256, shape + (3,), dtype=np.uint8)).save(paths[-1])
    (tmp_path / "1b.png").write_bytes(paths[0].read_bytes()[:60])
    items = sorted(tmp_path.glob("*.png"))
    segmenter = Segmenter(tf_segmenter.model, tf_segmenter.processor, resize="none", batch_size=2)
    results = list(segmenter.imap(items, workers=2))
    assert isinstance(results[2], BadImageError) and results[2].path == str(tmp_path / "1b.png")
    for item, result in zip(items, results):
        if item.name != "1b.png":
            assert np.array_equal(result.label_map, segmenter(item).label_map), item.name


@pytest.mark.parametrize("height", [1, 3, 4])
def test_few_row_images_are_read_channels_last(pt_segmenter, monkeypatch, height):
    """A (3, W, 3) RGB array is 3 rows of W pixels: the model must see that picture, never 3 channels of W x 3."""
    from segformer import Segmenter

    image = np.random.default_rng(height).integers(0, 256, (height, 40, 3), dtype=np.uint8)
    segmenter = Segmenter(pt_segmenter.model, pt_segmenter.processor)
    seen = []
    logits = segmenter.backend.logits
    monkeypatch.setattr(segmenter.backend, "logits", lambda pixel_values: seen.append(pixel_values) or logits(pixel_values))
    result = segmenter(image)
    # the processor's steps written out with numpy / Pillow: resize to 512 x 512, rescale, normalize
    resized = np.asarray(Image.fromarray(image).resize((512, 512), Image.BILINEAR, reducing_gap=None)).astype(np.float64)
    mean, std = np.array(pt_segmenter.processor.image_mean), np.array(pt_segmenter.processor.image_std)
    expected = ((resized.astype(np.float32) * (1 / 255) - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(seen[0][0], expected, atol=1e-5)
    assert result.label_map.shape == (height, 40)


def test_imap_yields_a_too_small_image_in_its_place(pt_segmenter, tmp_path):
    from segformer import Segmenter
    from segformer.common.images.image_io import BadImageError

    rng = np.random.default_rng(21)
    big = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(3)]
    Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    segmenter = Segmenter(pt_segmenter.model, pt_segmenter.processor, resize="none", batch_size=2)
    items = [big[0], tmp_path / "small.png", big[1], rng.integers(0, 256, (10, 50, 3), dtype=np.uint8), big[2]]
    for workers in (0, 2):
        results = list(segmenter.imap(items, workers=workers))
        assert len(results) == 5
        assert isinstance(results[1], BadImageError) and results[1].path == str(tmp_path / "small.png")
        assert "8x12 image is too small for this model" in str(results[1]) and "at least" in str(results[1])
        assert isinstance(results[3], BadImageError) and "10x50 image is too small" in str(results[3])
        for index, image in ((0, big[0]), (2, big[1]), (4, big[2])):
            assert np.array_equal(results[index].label_map, segmenter(image).label_map)
    with pytest.raises(ValueError, match="too small"):
        segmenter(tmp_path / "small.png")


def test_busy_machine_lowers_threads_per_call_and_keeps_the_numbers(pt_segmenter, monkeypatch):
    """The thread policy's per-call count: once every other CPU is seen taken (faked) at the end of one call
    and the start of the next, a Segmenter call runs its forward on 1 thread, then restores 2; labels and
    probabilities equal those of the 2-thread call."""
    import torch

    import segformer.common.base.threads as threads

    rng = np.random.default_rng(21)
    image = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    seen: list[int] = []
    hook = pt_segmenter.model.register_forward_hook(lambda *args: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(threads, "_LAST_ELSEWHERE", [None])
        monkeypatch.setattr(threads, "pinned_to_some_cpus", lambda: False)  # the loadavg rule, wherever this runs
        monkeypatch.setattr(threads, "runnable_elsewhere", lambda: 0)
        quiet = pt_segmenter(image, return_probabilities=True)
        monkeypatch.setattr(threads, "runnable_elsewhere", lambda: (os.cpu_count() or 1) - 1)
        pt_segmenter(image)  # seen busy now, not at the end of the quiet call: not steady yet
        busy = pt_segmenter(image, return_probabilities=True)
        assert torch.get_num_threads() == 2
    finally:
        hook.remove()
        torch.set_num_threads(before)
    assert seen == [min(2, os.cpu_count() or 1)] * 2 + [1]
    assert np.array_equal(quiet.label_map, busy.label_map)
    np.testing.assert_allclose(quiet.probabilities, busy.probabilities, atol=1e-5)
