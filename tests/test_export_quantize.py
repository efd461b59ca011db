"""Quantized deployment: PT dynamic int8, ONNX Runtime int8 (static / dynamic), TFLite float16, int8 and full-integer
int8, calibration images, ``segformer export`` (errors, atomic writes, the agreement check).

Accuracy is label-map agreement with the float32 model on random images and the sample photo. The models are
tiny and random (3 classes, 16x16 logits at 64x64): their logits are close together, so a quantization error
of a few percent of the logit range flips a pixel now and then; one pixel is 0.4 % of a 16x16 map. Thresholds:
float16 weights >= 99 % (near exact: only weight rounding at 1e-3 relative), int8 >= 90 % (a broken
quantization, wrong scales or a transposed calibration input, gives about one third, chance for 3 classes).
On the trained b0 of ``benchmarks/README.md`` the agreement is measured at 512x512.

The ONNX Runtime int8 files are checked in the format written for this machine (``target_cpu="auto"``) and in
the ``avx2`` format, which is correct on every x86-64 CPU (AVX2-only as well as AVX-512); that it cannot
overflow is proved by arithmetic on its int8 weights. The ``vnni`` format is only correct on VNNI CPUs and is
run only where the CPU has VNNI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from randomize import random_state, tiny_config

ROOT = Path(__file__).resolve().parents[1]
SIZE = (64, 64)
INT8_MIN = 0.90
FP16_MIN = 0.99


def _pt_model():
    pytest.importorskip("torch")
    from segformer.pt import SegformerForSemanticSegmentation

    config = tiny_config()
    model = SegformerForSemanticSegmentation(config)
    model.load_state_dict_numpy(random_state(config, "semantic_segmentation", seed=3))
    return model.eval()


def _tf_model():
    pytest.importorskip("tensorflow")
    from segformer.tf import TFSegformerForSemanticSegmentation

    config = tiny_config()
    model = TFSegformerForSemanticSegmentation(config)
    model(np.zeros((1, 3, *SIZE), np.float32), training=False)
    model.load_state_dict_numpy(random_state(config, "semantic_segmentation", seed=3))
    return model


@pytest.fixture(scope="module")
def pixels():
    """(calibration, test) pixel values at 64x64: random images and the sample photo, disjoint."""
    from segformer.common.inference.quantization import calibration_pixel_values, random_pixel_values
    from segformer.common.images.sample import SAMPLE_IMAGE

    sample = calibration_pixel_values([SAMPLE_IMAGE], SIZE)
    return random_pixel_values(6, SIZE, seed=1) + sample, random_pixel_values(3, SIZE, seed=9) + sample


def _torch_logits(model, x):
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(x)).logits.numpy()


def _agreements(reference, run, inputs):
    from segformer.common.inference.quantization import label_agreement

    values = [label_agreement(reference(x), run(x)) for x in inputs]
    print("agreement per image:", [f"{100 * v:.1f} %" for v in values])
    return values


# ----------------------------------------------------------------------------------------- common
def test_label_agreement_against_hand_counted_maps():
    from segformer.common.inference.quantization import label_agreement

    a = np.zeros((1, 2, 2, 2), np.float32)
    a[0, 1, 0, 0] = 1.0  # argmax map [[1, 0], [0, 0]]
    b = np.zeros((1, 2, 2, 2), np.float32)
    b[0, 1, 0, :] = 1.0  # [[1, 1], [0, 0]]: 3 of 4 pixels agree
    assert label_agreement(a, b) == 0.75 and label_agreement(a, a) == 1.0
    with pytest.raises(ValueError, match=r"logits shapes differ: \(1, 2, 2, 2\) vs \(1, 2, 2, 1\)"):
        label_agreement(a, b[..., :1])


def test_calibration_pixel_values_from_files_folders_and_arrays(tmp_path):
    from segformer.common.inference.quantization import calibration_pixel_values, representative_batches

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (30 + 7 * i, 41, 3), dtype=np.uint8) for i in range(3)]
    (tmp_path / "set" / "sub").mkdir(parents=True)
    Image.fromarray(images[0]).save(tmp_path / "set" / "a.png")
    Image.fromarray(images[1]).save(tmp_path / "set" / "sub" / "b.png")
    got = calibration_pixel_values([tmp_path / "set", images[2]], (24, 32))
    assert len(got) == 3 and all(p.shape == (1, 3, 24, 32) and p.dtype == np.float32 for p in got)
    # independent: Pillow bilinear resize, /255, ImageNet mean / std
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    for image, value in zip(images, got):
        resized = np.asarray(Image.fromarray(image).resize((32, 24), Image.BILINEAR), np.float64) / 255.0
        expected = ((resized - mean) / std).transpose(2, 0, 1)[None]
        assert float(np.abs(value - expected).max()) < 1e-4
    assert len(calibration_pixel_values([tmp_path / "set"], (24, 32), limit=1)) == 1
    last = next(representative_batches(got[:1], "channels_last"))[0]
    assert last.shape == (1, 24, 32, 3) and np.array_equal(last, got[0].transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="--calibration: no calibration images given"):
        calibration_pixel_values([], (24, 32), what="--calibration")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="--calibration: folder .* holds no image files"):
        calibration_pixel_values([tmp_path / "empty"], (24, 32), what="--calibration")
    with pytest.raises(ValueError, match="limit must be None or a positive int, got 0"):
        calibration_pixel_values([images[0]], (24, 32), limit=0)


# ----------------------------------------------------------------------------------------- PyTorch
def test_pt_dynamic_int8_keeps_the_fast_path_and_agrees(pixels):
    import torch

    from segformer.pt.quantize import quantize_dynamic

    model = _pt_model()
    quantized = quantize_dynamic(model)
    assert type(model.segformer.encoder.block[0][0].attention.self.query) is torch.nn.Linear  # caller's model untouched
    assert "quantized" in type(quantized.segformer.encoder.block[0][0].attention.self.query).__module__
    assert type(quantized.decode_head.linear_c[0].proj) is torch.nn.Linear  # the head stays float32 (folded)
    _, test = pixels
    fast = _torch_logits(quantized, test[0])
    quantized.use_fast_path = False
    plain = _torch_logits(quantized, test[0])
    print(f"int8 fast vs int8 plain path: max|diff| {np.abs(fast - plain).max():.2e}")
    assert np.abs(fast - plain).max() < 1e-4  # both paths run on the quantized encoder, same numbers
    quantized.use_fast_path = True
    values = _agreements(lambda x: _torch_logits(model, x), lambda x: _torch_logits(quantized, x), test)
    assert min(values) >= INT8_MIN
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        quantize_dynamic("model")


def test_int8_target_from_cpu_flags_and_formats():
    from segformer.common.inference.quantization import cpu_int8_target, onnx_int8_format, resolve_int8_target

    assert cpu_int8_target("x86_64", ["fpu", "avx", "avx2", "fma"]) == "avx2"  # Haswell .. Zen 3
    assert cpu_int8_target("x86_64", ["avx2", "avx512f", "avx512bw"]) == "avx2"  # Skylake-SP: AVX-512 without VNNI
    assert cpu_int8_target("x86_64", ["avx2", "avx512f", "avx512_vnni"]) == "vnni"  # /proc/cpuinfo spelling
    assert cpu_int8_target("AMD64", ["AVX2", "AVX512VNNI"]) == "vnni"  # numpy's spelling
    assert cpu_int8_target("x86_64", ["sse4_2"]) == "avx2"  # older: the format that is safe everywhere
    assert cpu_int8_target("aarch64", ["asimd", "asimddp"]) == cpu_int8_target("arm64", []) == "arm"
    assert cpu_int8_target() in ("avx2", "vnni", "arm")
    assert resolve_int8_target("avx2") == "avx2" and resolve_int8_target("auto") == cpu_int8_target()
    # 7-bit weights only where the int16 pair sums need them
    assert [onnx_int8_format(t)["reduce_range"] for t in ("avx2", "vnni", "arm")] == [True, False, False]
    assert onnx_int8_format("arm")["activation_type"] == "QInt8" and onnx_int8_format("avx2")["activation_type"] == "QUInt8"
    with pytest.raises(ValueError, match=r"target_cpu must be one of \['auto', 'avx2', 'vnni', 'arm'\], got 'avx512'"):
        resolve_int8_target("avx512")


def test_rank_layer_losses_against_hand_computed_errors():
    from segformer.common.inference.quantization import rank_layer_losses

    r = [np.array([2.0, -2.0]), np.array([4.0, 0.0]), np.array([1.0, 1.0])]
    q = [np.array([2.0, -1.8]), np.array([4.0, 1.6]), np.array([1.0, 0.9])]
    # RMS error over max |r|: 0.2/sqrt(2)/2 = 0.0707, 1.6/sqrt(2)/4 = 0.2828, 0.1/sqrt(2)/1 = 0.0707;
    # growth over the worst before: 0.0707, 0.2121, -0.2121
    ranked = rank_layer_losses(["a", "b", "c"], r, q, top=2)
    assert [name for name, _ in ranked] == ["b", "a"]
    assert abs(ranked[0][1] - 1.6 / np.sqrt(2) / 4) < 1e-12 and abs(ranked[1][1] - 0.2 / np.sqrt(2) / 2) < 1e-12
    with pytest.raises(ValueError, match="differ in length: 2, 3, 3"):
        rank_layer_losses(["a", "b"], r, q)


def _int8_weights(path):
    """{name: int8 weight array} of the matrix products / convolutions of an ONNX file (2-D: (K, N), 4-D:
    (O, I, kh, kw)); zero points and biases (scalars, 1-D, int32) are left out."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer
            if t.data_type == onnx.TensorProto.INT8 and len(t.dims) in (2, 4)}


def _largest_pair_sums(weight):
    """The largest and the smallest sum ``a0 * w0 + a1 * w1`` that two uint8 activations (0..255) times two
    int8 weights of one output channel can give (VPMADDUBSW pairs neighbours along the reduction axis; the
    bound takes any two weights of the channel, so it holds for every packing)."""
    w = np.asarray(weight, np.int64)
    channels = w.reshape(w.shape[0], -1) if w.ndim == 4 else w.T  # one row per output channel
    top = np.sort(channels, axis=1)
    largest = 255 * (np.maximum(top[:, -1], 0) + np.maximum(top[:, -2], 0))
    smallest = 255 * (np.minimum(top[:, 0], 0) + np.minimum(top[:, 1], 0))
    return int(largest.max()), int(smallest.min())


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory, pixels):
    """{(mode, target): path} int8 files of the tiny model."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from segformer.pt.quantize import export_onnx_int8

    model, root = _pt_model(), tmp_path_factory.mktemp("int8")
    calibration, _ = pixels
    files = {}
    for mode in ("static", "dynamic"):
        for target in ("avx2", "vnni", "auto"):
            files[mode, target] = export_onnx_int8(model, root / f"{mode}-{target}.onnx", mode=mode, input_size=SIZE,
                                                   calibration=calibration if mode == "static" else None,
                                                   target_cpu=target)
    return files


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_onnx_int8_avx2_format_cannot_overflow_int16(onnx_files, mode):
    import onnx

    graph = onnx.load(str(onnx_files[mode, "avx2"])).graph
    assert {p.key: p.value for p in onnx.load(str(onnx_files[mode, "avx2"])).metadata_props}["segformer_int8_target"] == "avx2"
    weights = _int8_weights(onnx_files[mode, "avx2"])
    assert len(weights) >= 8, sorted(weights)
    for name, weight in weights.items():
        largest, smallest = _largest_pair_sums(weight)
        assert -32768 <= smallest and largest <= 32767, (name, smallest, largest)  # int16, no saturation
    if mode == "static":  # the activations multiplied are uint8 (0..255), as the bound assumes
        zero_points = {node.input[2] for node in graph.node if node.op_type == "QuantizeLinear" and len(node.input) > 2}
        kinds = {t.data_type for t in graph.initializer if t.name in zero_points}
        assert kinds == {onnx.TensorProto.UINT8}, kinds
    else:
        assert "DynamicQuantizeLinear" in {node.op_type for node in graph.node}  # uint8 by definition
    # the control: full 8-bit weights (the vnni format) can overflow int16 on a CPU without VNNI
    worst = max(_largest_pair_sums(w)[0] for w in _int8_weights(onnx_files[mode, "vnni"]).values())
    assert worst > 32767


@pytest.mark.parametrize("mode", ["static", "dynamic"])
@pytest.mark.parametrize("target", ["auto", "avx2", "vnni"])
def test_onnx_int8_loads_runs_at_two_sizes_and_agrees(onnx_files, pixels, mode, target):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from segformer.common.inference.quantization import cpu_int8_target, random_pixel_values

    here = cpu_int8_target()
    if target == "vnni" and here != "vnni":
        pytest.skip(f"the vnni format is only correct on a CPU with VNNI; this one is {here}")
    model = _pt_model()
    _, test = pixels
    path = onnx_files[mode, target]
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}["segformer_int8_target"] == \
        (here if target == "auto" else target)
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    int8_weights = [t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8_weights, "no int8 weights in the file"
    assert ("QuantizeLinear" in ops and "DequantizeLinear" in ops) if mode == "static" else ("DynamicQuantizeLinear" in ops or "MatMulInteger" in ops)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    run = lambda x: session.run(None, {"pixel_values": x})[0]  # noqa: E731
    other = random_pixel_values(1, (96, 128), seed=4)  # dynamic height / width survive quantization
    values = _agreements(lambda x: _torch_logits(model, x), run, test + other)
    assert run(other[0]).shape == (1, 3, 24, 32) and min(values) >= INT8_MIN


def test_onnx_static_int8_keeps_the_first_convolution_float(onnx_files, pixels, tmp_path):
    """The patch embedding that reads the pixels stays float (its weight and its input are not dequantized
    int8); every other convolution is int8. ``float_stem=False`` quantizes it too."""
    import onnx

    from segformer.common.inference.quantization import quantize_onnx
    from segformer.pt.export import export_onnx

    def int8_convs(path):
        graph = onnx.load(str(path)).graph
        producers = {output: node.op_type for node in graph.node for output in node.output}
        return [producers.get(node.input[0]) == "DequantizeLinear" and producers.get(node.input[1]) == "DequantizeLinear"
                for node in graph.node if node.op_type == "Conv"]

    for target in ("avx2", "vnni"):
        convs = int8_convs(onnx_files["static", target])
        assert len(convs) >= 4 and convs[0] is False and all(convs[1:]), convs
    source = export_onnx(_pt_model(), tmp_path / "fp32.onnx", input_size=SIZE)
    calibration, _ = pixels
    whole = quantize_onnx(source, tmp_path / "whole.onnx", calibration=calibration, target_cpu="avx2", float_stem=False)
    assert all(int8_convs(whole))


def test_onnx_layer_losses_names_quantized_layers(onnx_files, pixels, tmp_path):
    from segformer.common.inference.quantization import onnx_layer_losses
    from segformer.pt.export import export_onnx

    float_path = export_onnx(_pt_model(), tmp_path / "float32.onnx", input_size=SIZE)
    losses = onnx_layer_losses(float_path, onnx_files["static", "avx2"], pixels[1][0], top=3)
    assert len(losses) == 3 and all(isinstance(name, str) and 0.0 < error < 1.0 for name, error in losses)
    assert [error for _, error in onnx_layer_losses(float_path, float_path, pixels[1][0])] == [0.0, 0.0, 0.0]


def test_onnx_int8_static_needs_calibration_and_keeps_an_old_file_on_failure(tmp_path, monkeypatch, pixels):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import onnxruntime.quantization as oq

    from segformer.pt.quantize import export_onnx_int8

    model = _pt_model()
    with pytest.raises(ValueError, match="static int8 needs calibration images"):
        export_onnx_int8(model, tmp_path / "m.onnx", calibration=[], input_size=SIZE)
    old = tmp_path / "m.onnx"
    old.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise RuntimeError("calibration failed half way")

    monkeypatch.setattr(oq, "quantize_static", broken)
    with pytest.raises(RuntimeError, match="half way"):
        export_onnx_int8(model, old, calibration=pixels[0][:1], input_size=SIZE)
    assert old.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    with pytest.raises(FileExistsError, match="already exists"):
        export_onnx_int8(model, old, calibration=pixels[0][:1], input_size=SIZE, overwrite=False)


# ----------------------------------------------------------------------------------------- TFLite
def _tflite_weight_dtypes(path) -> list[tuple[str, str]]:
    """(op name, dtype of its weight input) of every convolution / matrix product of a TFLite file, in order."""
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [(op["op_name"], tensors[op["inputs"][1]]["dtype"].__name__) for op in interpreter._get_ops_details()
            if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]


def test_tflite_float16_int8_and_full_integer_int8(tmp_path, pixels):
    from segformer.tf.export import TFLiteRunner, export_tflite

    model = _tf_model()
    torch_free_reference = lambda x: np.asarray(model(x, training=False).logits)  # noqa: E731
    calibration, test = pixels
    fp32 = export_tflite(model, tmp_path / "fp32.tflite", input_size=SIZE)
    fp16 = export_tflite(model, tmp_path / "fp16.tflite", input_size=SIZE, quantization="float16")
    int8 = export_tflite(model, tmp_path / "int8.tflite", input_size=SIZE, quantization="int8", representative_data=calibration)
    full = export_tflite(model, tmp_path / "full.tflite", input_size=SIZE, quantization="int8-full",
                         representative_data=calibration)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp16.tflite", "fp32.tflite", "full.tflite", "int8.tflite"]
    runner16, runner8, runner_full = TFLiteRunner(fp16), TFLiteRunner(int8), TFLiteRunner(full)
    diff = max(float(np.abs(runner16(x) - torch_free_reference(x)).max()) for x in test)
    print(f"tflite float16 weights vs keras float32: max|diff| {diff:.2e}")
    assert diff < 2e-2
    assert min(_agreements(torch_free_reference, runner16, test)) >= FP16_MIN
    # int8: float32 interface; the first convolution (the patch embedding of the pixels) float, the others int8
    assert runner8.input["dtype"] == np.float32 and runner8.output["dtype"] == np.float32
    weights = _tflite_weight_dtypes(int8)
    assert weights[0] == ("CONV_2D", "float32") and len(weights) > 10
    assert all(dtype == "int8" for _, dtype in weights[1:]), weights
    assert min(_agreements(torch_free_reference, runner8, test)) >= INT8_MIN
    # int8-full: every op int8, int8 interface
    assert runner_full.input["dtype"] == np.int8 and runner_full.output["dtype"] == np.int8
    assert all(dtype == "int8" for _, dtype in _tflite_weight_dtypes(full))
    assert min(_agreements(torch_free_reference, runner_full, test)) >= INT8_MIN
    assert full.stat().st_size < fp16.stat().st_size < fp32.stat().st_size
    assert int8.stat().st_size < fp16.stat().st_size
    for quantization in ("int8", "int8-full"):
        with pytest.raises(ValueError, match=f"quantization='{quantization}' needs representative_data"):
            export_tflite(model, tmp_path / "x.tflite", input_size=SIZE, quantization=quantization)
    with pytest.raises(ValueError, match=r"shape \(1, 3, 32, 32\) do not fit the export's input \(batch, C, H, W\) = \(1, 3, 64, 64\)"):
        export_tflite(model, tmp_path / "x.tflite", input_size=SIZE, quantization="int8",
                      representative_data=[np.zeros((1, 3, 32, 32), np.float32)])
    with pytest.raises(ValueError, match=r"quantization must be one of \[None, 'float16', 'int8', 'int8-full'\], got 'int4'"):
        export_tflite(model, tmp_path / "x.tflite", input_size=SIZE, quantization="int4")
    assert not (tmp_path / "x.tflite").exists()


# ----------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = _pt_model()
    root = tmp_path_factory.mktemp("export")
    model.save_pretrained(root / "seg")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 60, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    return root


def test_export_help_imports_no_framework():
    code = ("import sys\nfrom segformer.cli import main\ntry:\n    main(['export', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('FRAMEWORKS', 'torch' in sys.modules, 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "--calibration" in result.stdout and "tflite-int8" in result.stdout
    assert "FRAMEWORKS False False" in result.stdout


def test_export_cli_errors(checkpoint, tmp_path, capsys, monkeypatch):
    from segformer.cli import main

    seg = str(checkpoint / "seg")
    for fmt in ("onnx-int8", "tflite-int8"):
        assert main(["export", "--model", seg, "--format", fmt, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --format {fmt} is calibrated int8: pass --calibration IMAGES") and err.count("\n") == 1
    (tmp_path / "old.onnx").write_bytes(b"old")
    assert main(["export", "--model", seg, "--format", "onnx", "--out", str(tmp_path / "old.onnx")]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err and (tmp_path / "old.onnx").read_bytes() == b"old"
    assert main(["export", "--model", seg, "--format", "tflite", "--size", "0,5", "--out", str(tmp_path / "y")]) == 2
    assert "--size must be HxW, H,W or S (positive integers), got '0,5'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["export", "--model", seg, "--format", "onnx", "--out", str(tmp_path / "z.onnx")]) == 2
    err = capsys.readouterr().err
    assert "segformer export --format onnx needs PyTorch" in err and "pip install torch" in err and "tflite" in err
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    assert main(["export", "--model", seg, "--format", "tflite-fp16", "--out", str(tmp_path / "z.tflite")]) == 2
    err = capsys.readouterr().err
    assert "segformer export --format tflite-fp16 needs TensorFlow" in err and "pip install tensorflow keras" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.onnx"]


@pytest.mark.parametrize("fmt", ["onnx-int8", "tflite-int8"])
def test_export_cli_writes_prints_size_and_agreement(checkpoint, tmp_path, capsys, fmt):
    if fmt == "onnx-int8":
        pytest.importorskip("onnxruntime")
    else:
        pytest.importorskip("tensorflow")
    from segformer.cli import main

    out = tmp_path / "model.bin"
    out.write_bytes(b"old")
    # the tiny random model's margins are thin (module docstring): its floor is INT8_MIN, not the default 99 %
    argv = ["export", "--model", str(checkpoint / "seg"), "--format", fmt, "--out", str(out), "--size", "64,64",
            "--calibration", str(checkpoint / "photos"), "--overwrite", "--min-agreement", str(100 * INT8_MIN)]
    assert main(argv + (["--target-cpu", "avx2"] if fmt == "onnx-int8" else [])) == 0
    text = capsys.readouterr().out
    print(text)
    assert f"wrote {out}" in text and "calibrated on 3 image(s)" in text
    assert f"{out.stat().st_size / 1e6:.2f} MB on disk" in text
    line = next(line for line in text.splitlines() if line.startswith("label-map agreement"))
    assert "on 3 calibration image(s): mean" in line and "floor 90 %" in line
    assert float(line.split("min ")[1].split(" %")[0]) >= 100 * INT8_MIN
    if fmt == "onnx-int8":
        import onnx

        assert "for --target-cpu avx2: uint8 activations x 7-bit weights" in text
        assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["segformer_int8_target"] == "avx2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


@pytest.mark.parametrize("fmt", ["onnx-int8", pytest.param("tflite-int8", marks=pytest.mark.slow)])
def test_export_cli_refuses_below_the_agreement_floor(checkpoint, tmp_path, capsys, monkeypatch, fmt):
    pytest.importorskip("onnxruntime" if fmt == "onnx-int8" else "tensorflow")
    import segformer.common.inference.quantization as quantization
    from segformer.cli import main

    out = tmp_path / "model.bin"
    out.write_bytes(b"old")
    monkeypatch.setattr(quantization, "label_agreement", lambda a, b, axis=1: 0.5)  # every check image: 50 %
    argv = ["export", "--model", str(checkpoint / "seg"), "--format", fmt, "--out", str(out), "--size", "64,64",
            "--calibration", str(checkpoint / "photos"), "--overwrite"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "mean 50.00 %" in captured.out and "floor 99 %" in captured.out
    err = captured.err
    assert err.startswith("error: label-map agreement 50.00 % with the float32 model on 3 calibration image(s) is "
                          "below the floor --min-agreement 99 %; the layers that lose most") and err.count("\n") == 1
    names = err.split("where it grows): ")[1].split(f"; {out} was not written")[0].split(", ")
    assert len(names) == 3 and all(re.fullmatch(r"\S+ \d+\.\d{3}", name) for name in names), names  # "layer error" x 3
    assert "Pass --accept-low-agreement" in err
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]
    assert main(argv + ["--accept-low-agreement"]) == 0
    text = capsys.readouterr().out
    assert "below the floor, accepted (--accept-low-agreement)" in text and f"wrote {out}" in text
    assert out.read_bytes() != b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_export_cli_agreement_and_target_errors(checkpoint, tmp_path, capsys):
    from segformer.cli import main

    base = ["export", "--model", str(checkpoint / "seg"), "--out", str(tmp_path / "x"), "--size", "64"]
    assert main(base + ["--format", "onnx", "--min-agreement", "150"]) == 2
    assert "--min-agreement is a percentage of pixels, 0 to 100, got 150" in capsys.readouterr().err
    assert main(base + ["--format", "tflite-int8", "--target-cpu", "vnni", "--calibration", str(checkpoint / "photos")]) == 2
    assert "--target-cpu vnni applies to --format onnx-int8 only, got --format tflite-int8" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("fmt,name,what", [
    ("onnx", "m.onnx", "ONNX float32"),
    ("onnx-int8", "d.onnx", "ONNX Runtime dynamic int8 (weights only)"),
    ("saved-model", "sm", "TensorFlow SavedModel folder"),
    ("tflite", "m.tflite", "TFLite float32"),
    ("tflite-fp16", "h.tflite", "TFLite with float16 weights"),
])
def test_export_cli_every_other_format(checkpoint, tmp_path, capsys, fmt, name, what):
    pytest.importorskip("onnxruntime" if fmt.startswith("onnx") else "tensorflow")
    from segformer.cli import main

    argv = ["export", "--model", str(checkpoint / "seg"), "--format", fmt, "--out", str(tmp_path / name), "--size", "64"]
    assert main(argv + (["--int8-mode", "dynamic", "--min-agreement", str(100 * INT8_MIN)] if fmt == "onnx-int8" else [])) == 0
    text = capsys.readouterr().out
    assert f"({what}" in text and "on the sample photo: mean" in text
    line = next(line for line in text.splitlines() if line.startswith("label-map agreement"))
    assert float(line.split("min ")[1].split(" %")[0]) >= 100 * (INT8_MIN if "int8" in fmt else FP16_MIN)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
