"""The equivalence matrix: every way this library turns an image into a label map agrees with one reference.

Specification. Model: the transformers-written tiny checkpoint ``tests/fixtures/hf/tiny-seg`` (3 classes),
copied into folders holding only ``model.safetensors``, only ``pytorch_model.bin`` or only ``tf_model.h5``,
plus a folder this library saved (``save_pretrained``); every folder carries a ``preprocessor_config.json``
with a 48 x 64 resize (so the rows also prove the folder's processor config is read). Images: two odd-sized
uint8 RGB images (37 x 53 and 50 x 29).

Reference (independent of the code under test past the processor): the PyTorch textbook path
(``use_fast_path = False``) on the processor's pixel values, its logits upsampled with
``torch.nn.functional.interpolate`` (bilinear, ``align_corners=False``) straight to the image size, argmax.
With ``resize="none"`` the pixel values are the image as it is.

Agreement: logits within ``LOGITS_ATOL``; labels equal on every pixel except float ties, the pixels whose
two largest reference logits differ by less than ``TIE = 2 * LOGITS_ATOL`` (two paths within the logit
tolerance may legitimately order those two classes differently). Quantized exports agree as they claim:
label agreement at least the floors of ``tests/test_export_quantize.py``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import fixture_path

torch = pytest.importorskip("torch")
F = torch.nn.functional

LOGITS_ATOL = 1e-4
TIE = 2 * LOGITS_ATOL
PROCESSOR_SIZE = (48, 64)
IMAGE_SIZES = [(37, 53), (50, 29)]
NAMES = ["odd_a", "odd_b"]


def _image(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth colour ramps plus noise: regions of several classes, not one class everywhere."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([255 * y / height, 255 * x / width, 128 + 100 * np.sin((x + y) / 6)], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Folders, images on disk and the reference label maps / logits (module scope: built once)."""
    from segformer import SegformerImageProcessor
    from segformer.pt import SegformerForSemanticSegmentation

    root = tmp_path_factory.mktemp("matrix")
    source = fixture_path("hf/tiny-seg")
    processor_config = {"do_resize": True, "size": {"height": PROCESSOR_SIZE[0], "width": PROCESSOR_SIZE[1]}}
    folders = {}
    for name, weights in [("safetensors", "model.safetensors"), ("bin", "pytorch_model.bin"), ("h5", "tf_model.h5")]:
        folder = root / name
        folder.mkdir()
        shutil.copy(source / "config.json", folder / "config.json")
        shutil.copy(source / weights, folder / weights)
        (folder / "preprocessor_config.json").write_text(json.dumps(processor_config))
        folders[name] = folder
    textbook = SegformerForSemanticSegmentation.from_pretrained(folders["safetensors"]).eval()
    textbook.use_fast_path = False
    folders["ours"] = root / "ours"
    textbook.save_pretrained(folders["ours"])
    (folders["ours"] / "preprocessor_config.json").write_text(json.dumps(processor_config))
    images_dir = root / "images"
    images_dir.mkdir()
    images = [_image(h, w, seed) for seed, (h, w) in enumerate(IMAGE_SIZES)]
    for name, image in zip(NAMES, images):
        Image.fromarray(image).save(images_dir / f"{name}.png")
    processor = SegformerImageProcessor.from_pretrained(folders["safetensors"])

    def reference(image, resize=True, size=PROCESSOR_SIZE):
        """(pixel values, model-resolution logits, full-resolution logits) of the textbook path."""
        options = {"size": {"height": size[0], "width": size[1]}} if resize else {"do_resize": False}
        pixels = np.asarray(processor(images=image, data_format="channels_first", **options)["pixel_values"], np.float32)
        with torch.inference_mode():
            low = textbook(torch.from_numpy(pixels)).logits
            full = F.interpolate(low, size=image.shape[:2], mode="bilinear", align_corners=False)
        return pixels, low.numpy(), full[0].numpy()

    return {"root": root, "folders": folders, "images": images, "images_dir": images_dir, "textbook": textbook,
            "processor": processor, "reference": reference}


@pytest.fixture(scope="module")
def keras_model(world):
    """The Keras model of the h5 folder, op by op (``run_eagerly``: same numbers; tracing a graph for every
    new input size would cost seconds per size on a small CPU)."""
    pytest.importorskip("tensorflow")
    from segformer.tf import TFSegformerForSemanticSegmentation

    model = TFSegformerForSemanticSegmentation.from_pretrained(world["folders"]["h5"])
    model.run_eagerly = True
    return model


@pytest.fixture
def eager_cli(monkeypatch):
    """``segformer predict`` / ``eval`` load Keras models op by op here (see ``keras_model``)."""
    import segformer.tf.backend as backend

    load = backend.load_pretrained

    def eager(source):
        model, report = load(source)
        model.run_eagerly = True
        return model, report

    monkeypatch.setattr(backend, "load_pretrained", eager)


def _ties(logits: np.ndarray) -> np.ndarray:
    top2 = np.sort(logits, axis=0)[-2:]
    return (top2[1] - top2[0]) < TIE


def _assert_labels(labels: np.ndarray, reference_logits: np.ndarray, what: str) -> None:
    expected = reference_logits.argmax(axis=0)
    labels = np.asarray(labels)
    assert labels.shape == expected.shape, f"{what}: shape {labels.shape} vs {expected.shape}"
    wrong = (labels != expected) & ~_ties(reference_logits)
    assert not wrong.any(), f"{what}: {int(wrong.sum())} of {wrong.size} pixels differ outside ties"
    assert len(np.unique(expected)) > 1, "reference label map has one class: the row would prove little"


def _references(world, **options):
    return [world["reference"](image, **options)[2] for image in world["images"]]


# ------------------------------------------------------------------------------------------- logits rows


def test_fast_path_and_tf_logits_agree_with_the_textbook_path(world, keras_model):
    from segformer.pt import SegformerForSemanticSegmentation
    from segformer.pt.backend import Backend
    from segformer.tf.backend import Backend as TFBackend

    fast = SegformerForSemanticSegmentation.from_pretrained(world["folders"]["safetensors"]).eval()
    assert fast.use_fast_path
    for image in world["images"]:
        pixels, low, full = world["reference"](image)
        for name, backend in [("PT fast", Backend(fast)), ("TF", TFBackend(keras_model))]:
            logits = backend.logits(pixels)
            assert np.abs(logits - low).max() < LOGITS_ATOL, name
            upsampled = backend.logits(pixels, full_resolution=True)
            assert upsampled.shape[2:] == pixels.shape[2:]
            with torch.inference_mode():
                expected = F.interpolate(torch.from_numpy(low), size=pixels.shape[2:], mode="bilinear",
                                         align_corners=False).numpy()
            assert np.abs(upsampled - expected).max() < LOGITS_ATOL, name


def test_tf_under_xla_agrees_with_the_textbook_path(world, xla_traces):
    """``model.jit_compile = True`` (what ``--xla`` sets): the Keras model's cached inference graph compiled by
    XLA gives the reference's logits and, through a Segmenter, its labels."""
    pytest.importorskip("tensorflow")
    from segformer import Segmenter

    seen = xla_traces
    segmenter = Segmenter.from_pretrained(world["folders"]["h5"], framework="tf")
    segmenter.model.jit_compile = True
    segmenter(world["images"][0])  # the first call runs op by op
    seen.clear()
    for image, reference in zip(world["images"], _references(world)):
        _assert_labels(segmenter(image).label_map, reference, "Segmenter tf, jit_compile")
        pixels, low, _ = world["reference"](image)
        assert np.abs(np.asarray(segmenter.model(pixels).logits) - low).max() < LOGITS_ATOL
    assert seen and all(seen)  # every trace was an XLA one


def test_tf_cached_graph_agrees_with_the_textbook_path(world):
    """The Keras cached inference graph (what eager inference calls run from the second one on, with its own
    LayerNorm formulation) gives the reference's logits and, through a Segmenter, its labels."""
    pytest.importorskip("tensorflow")
    from segformer import Segmenter

    segmenter = Segmenter.from_pretrained(world["folders"]["h5"], framework="tf")
    segmenter(world["images"][0])  # the first call runs op by op
    for image, reference in zip(world["images"], _references(world)):
        _assert_labels(segmenter(image).label_map, reference, "Segmenter tf, cached graph")
        pixels, low, _ = world["reference"](image)
        assert np.abs(np.asarray(segmenter.model(pixels).logits) - low).max() < LOGITS_ATOL
    assert len(segmenter.model._graphs.functions) == 1  # every call above ran the one cached graph


# ----------------------------------------------------------------------------------------- Segmenter rows


@pytest.mark.parametrize("framework, folder", [("pt", "safetensors"), ("pt", "bin"), ("pt", "ours"), ("tf", "h5"),
                                               pytest.param("tf", "ours", marks=pytest.mark.slow)])
def test_segmenter_and_to_pipeline(world, framework, folder):
    if framework == "tf":
        pytest.importorskip("tensorflow")
    from segformer import Segmenter

    segmenter = Segmenter.from_pretrained(world["folders"][folder], framework=framework)
    if framework == "tf":
        segmenter.model.run_eagerly = True  # see keras_model
    for image, reference in zip(world["images"], _references(world)):
        result = segmenter(image)
        _assert_labels(result.label_map, reference, f"Segmenter {framework} {folder}")
        rebuilt = np.full(image.shape[:2], -1)
        label2id = {name: index for index, name in segmenter.id2label.items()}
        for entry in result.to_pipeline():
            rebuilt[np.asarray(entry["mask"]) == 255] = label2id[entry["label"]]
        assert (rebuilt == result.label_map).all()


def test_whole_streaming_and_covering_slide_agree(world, keras_model):
    from segformer import Segmenter
    from segformer.pt.inference import predict_labels, predict_streaming
    from segformer.tf.inference import predict_streaming as tf_predict_streaming

    whole = Segmenter.from_pretrained(world["folders"]["safetensors"], resize="none")
    covering = Segmenter.from_pretrained(world["folders"]["safetensors"], resize="none", mode="slide",
                                         crop_size=64, stride=32)
    tf_covering = Segmenter(keras_model, world["processor"], resize="none", mode="slide", crop_size=64, stride=32)
    for image in world["images"]:
        pixels, _, reference = world["reference"](image, resize=False)
        _assert_labels(whole(image).label_map, reference, "Segmenter whole, resize none")
        _assert_labels(covering(image).label_map, reference, "Segmenter slide, one covering window")
        _assert_labels(tf_covering(image).label_map, reference, "Segmenter TF slide, one covering window")
        streamed = predict_streaming(world["textbook"], torch.from_numpy(pixels), band_rows=5)
        _assert_labels(streamed.labels, reference, "PT predict_streaming in 5-row bands")
        _assert_labels(predict_labels(world["textbook"], torch.from_numpy(pixels))[0].numpy(), reference,
                       "PT predict_labels")
        tf_streamed = tf_predict_streaming(keras_model, pixels, band_rows=7)
        _assert_labels(tf_streamed.labels, reference, "TF predict_streaming in 7-row bands")


def test_single_scale_equals_a_plain_resize_to_that_scale(world):
    from segformer import Segmenter
    from segformer.common.inference.rules import scaled_size

    folder = world["folders"]["safetensors"]
    half = scaled_size(PROCESSOR_SIZE, 0.75)
    scaled = Segmenter.from_pretrained(folder, scales=(0.75,))
    plain = Segmenter.from_pretrained(folder, resize=half)
    full = Segmenter.from_pretrained(folder)
    differs = 0
    for image, reference in zip(world["images"], _references(world, size=half)):
        labels = scaled(image).label_map
        assert (labels == plain(image).label_map).all()
        _assert_labels(labels, reference, "scales=(0.75,)")
        differs += int((labels != full(image).label_map).sum())
    assert differs > 0, "scales=(0.75,) gave the labels of scale 1.0: the single scale was ignored"


# ---------------------------------------------------------------------------------------------- CLI rows


def _read_masks(out: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(out / f"{name}.png")) for name in NAMES]


@pytest.mark.parametrize("framework, folder", [("pt", "safetensors"), ("pt", "bin"), ("pt", "ours"), ("tf", "h5")])
def test_cli_predict_equals_segmenter_from_pretrained(world, framework, folder, tmp_path, eager_cli):
    if framework == "tf":
        pytest.importorskip("tensorflow")
    from segformer.cli import main

    out = tmp_path / "out"
    code = main(["predict", "--model", str(world["folders"][folder]), str(world["images_dir"]), "--out", str(out),
                 "--framework", framework, "--no-overlay", "--no-progress", "--workers", "0"])
    assert code == 0
    for labels, reference in zip(_read_masks(out), _references(world)):
        _assert_labels(labels, reference, f"segformer predict --framework {framework} ({folder})")


@pytest.fixture(scope="module")
def label_folder(world):
    """Label PNGs = the reference labels at the image size (resize none), ties marked ignored (255)."""
    labels_dir = world["root"] / "labels"
    labels_dir.mkdir()
    for name, reference in zip(NAMES, _references(world, resize=False)):
        labels = reference.argmax(axis=0).astype(np.uint8)
        labels[_ties(reference)] = 255
        Image.fromarray(labels).save(labels_dir / f"{name}.png")
    return labels_dir


@pytest.mark.parametrize("framework, folder, extra", [
    ("pt", "safetensors", []), ("tf", "h5", []),
    ("pt", "bin", ["--mode", "slide", "--slide-crop", "64", "--slide-stride", "32"]),
])
def test_cli_eval_predictions_equal_the_reference(world, label_folder, framework, folder, extra, capsys, recwarn,
                                                 eager_cli):
    if framework == "tf":
        pytest.importorskip("tensorflow")
    from segformer.cli import main

    capsys.readouterr()
    code = main(["eval", "--model", str(world["folders"][folder]), "--images", str(world["images_dir"]),
                 "--labels", str(label_folder), "--framework", framework, "--no-progress", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "decode head is random" not in captured.err + " ".join(str(w.message) for w in recwarn)
    lines = captured.out.strip().splitlines()
    assert lines[-3] == "aAcc: 1.0000" and lines[-1] == "mIoU: 1.0000", "\n".join(lines[-6:])


def test_trainer_evaluation_also_after_a_fused_adamw_step(world, label_folder):
    """The PT trainer's ``evaluate`` (eval fast path, folded decode head) before and after one optimizer step
    (fused AdamW on the CPU): each time against the textbook path on the weights of that moment."""
    from segformer.common.training.recipe import TrainConfig
    from segformer.pt import SegformerForSemanticSegmentation
    from segformer.pt.training import Trainer

    torch.manual_seed(1)  # dropout / drop-path of the training step (this seed changes labels the stale fold keeps)
    model = SegformerForSemanticSegmentation.from_pretrained(world["folders"]["safetensors"])
    processor = world["processor"]

    def dataset(labels):
        return [{"pixel_values": torch.from_numpy(np.asarray(processor(images=image, do_resize=False,
                                                                        data_format="channels_first")["pixel_values"][0],
                                                             np.float32)),
                 "labels": torch.from_numpy(label.astype(np.int64))} for image, label in zip(world["images"], labels)]

    def reference_labels(weights_model):
        textbook = SegformerForSemanticSegmentation(weights_model.config).eval()
        textbook.load_state_dict(weights_model.state_dict())
        textbook.use_fast_path = False
        out = []
        for image in world["images"]:
            pixels = processor(images=image, do_resize=False, data_format="channels_first")["pixel_values"]
            with torch.inference_mode():
                low = textbook(torch.from_numpy(np.asarray(pixels, np.float32))).logits
                full = F.interpolate(low, size=image.shape[:2], mode="bilinear", align_corners=False)[0].numpy()
            labels = full.argmax(axis=0)
            labels[_ties(full)] = 255
            out.append(labels)
        return out

    train = dataset([np.asarray(Image.open(label_folder / f"{name}.png")) for name in NAMES])
    config = TrainConfig(batch_size=1, total_steps=1, warmup_steps=0, lr=1e-2)
    initial = reference_labels(model)
    trainer = Trainer(model, config, train, eval_dataset=dataset(initial), progress=False, echo=False)
    before = trainer.evaluate()
    assert before["overall_accuracy"] == 1.0
    crop = {"pixel_values": train[0]["pixel_values"][None, :, :32, :32], "labels": train[0]["labels"][None, :32, :32]}
    assert trainer.optimizer.defaults.get("fused"), "the optimizer is not the fused AdamW"
    trainer.train_step([crop])
    updated = reference_labels(trainer.inner)
    assert any((new != old).any() for new, old in zip(updated, initial)), \
        "the step did not change the label maps: the row would not see a stale evaluation"
    after = trainer.evaluate(dataset(updated))
    assert after["overall_accuracy"] == 1.0, "trainer evaluation after an optimizer step is not the updated model's"


# ------------------------------------------------------------------------------------------- export rows


def _export_floors():
    from test_export_quantize import FP16_MIN, INT8_MIN

    return FP16_MIN, INT8_MIN


def test_pt_dynamic_int8_within_its_agreement_floor(world):
    from segformer.common.inference.quantization import label_agreement
    from segformer.pt.backend import Backend
    from segformer.pt.quantize import quantize_dynamic

    _, int8_min = _export_floors()
    quantized = Backend(quantize_dynamic(world["textbook"]))
    for image in world["images"]:
        pixels, low, _ = world["reference"](image)
        assert label_agreement(low, quantized.logits(pixels)) >= int8_min


@pytest.mark.slow
def test_tflite_float32_logits_equal_the_reference(world, keras_model, tmp_path):
    from segformer.tf.export import TFLiteRunner, export_tflite

    runner = TFLiteRunner(export_tflite(keras_model, tmp_path / "fp32.tflite", input_size=PROCESSOR_SIZE))
    for image in world["images"]:
        pixels, low, _ = world["reference"](image)
        assert np.abs(np.asarray(runner(pixels)) - low).max() < LOGITS_ATOL


def _run_exported(fmt: str, path: Path, pixels: np.ndarray) -> np.ndarray:
    """Logits of an exported file, run by its own runtime (onnxruntime / the TFLite interpreter)."""
    if fmt == "onnx-int8":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: pixels})[0]
    from segformer.tf.export import TFLiteRunner

    return np.asarray(TFLiteRunner(path)(pixels))


@pytest.mark.parametrize("fmt", ["onnx-int8", pytest.param("tflite-int8", marks=pytest.mark.slow),
                                 pytest.param("tflite-int8-full", marks=pytest.mark.slow)])
def test_int8_exports_keep_the_agreement_they_claim(world, tmp_path, capsys, fmt):
    """``segformer export`` of an int8 format either writes a file whose label agreement with the float model, on
    the calibration images, is what it printed and at least the floor (99 %), or refuses (exit 1, nothing
    written) when it is below; written anyway (``--accept-low-agreement``), the file agrees as little as it said."""
    pytest.importorskip("onnxruntime" if fmt == "onnx-int8" else "tensorflow")
    from segformer.cli import main

    out = tmp_path / ("model.onnx" if fmt == "onnx-int8" else "model.tflite")
    argv = ["export", "--model", str(world["folders"]["ours"]), "--format", fmt, "--out", str(out),
            "--size", f"{PROCESSOR_SIZE[0]},{PROCESSOR_SIZE[1]}", "--calibration", str(world["images_dir"])]
    code = main(argv)
    captured = capsys.readouterr()
    if code == 1:
        assert not out.exists() and "is below the floor --min-agreement 99 %" in captured.err
        assert main(argv + ["--accept-low-agreement"]) == 0
        captured = capsys.readouterr()
    assert code in (0, 1) and out.exists(), captured.err
    printed = float(re.search(r"agreement with the float32 model on .*?: mean ([\d.]+) %", captured.out).group(1))
    agreements = []
    for image in world["images"]:
        pixels, low, _ = world["reference"](image)
        exported = _run_exported(fmt, out, pixels)
        agreements.append(float((exported.argmax(1) == low.argmax(1)).mean()))
    measured = 100 * float(np.mean(agreements))
    print(f"{fmt}: exit {code}, printed {printed:.2f} %, measured {measured:.2f} %")
    assert abs(measured - printed) <= 1.0  # the claim is the truth (ties between float paths aside)
    assert measured >= 98.0 if code == 0 else measured < 100.0
