"""Export: ONNX (dynamic sizes, one file, two sizes), torch.export, torch.compile, bf16 autocast (PT);
SavedModel, TFLite, mixed_float16 (TF). Each comparison is reported as a named max |diff|."""

from __future__ import annotations

import time

import numpy as np
import pytest

from randomize import random_state, tiny_config

TOL = 1e-4


def _pt_model():
    torch = pytest.importorskip("torch")
    from segformer.pt import SegformerForSemanticSegmentation

    config = tiny_config()
    model = SegformerForSemanticSegmentation(config)
    model.load_state_dict_numpy(random_state(config, "semantic_segmentation", seed=3))
    return torch, model.eval()


def _inputs(*shapes):
    rng = np.random.default_rng(11)
    return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]


# -------------------------------------------------------------------------------------------- PyTorch
def test_onnx_dynamic_sizes_match_pytorch(tmp_path):
    torch, model = _pt_model()
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from segformer.pt.export import export_onnx

    path = export_onnx(model, tmp_path / "model.onnx", opset=17, input_size=(64, 64))
    assert path.exists() and not list(tmp_path.glob(".*.tmp"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in _inputs((1, 3, 64, 64), (2, 3, 96, 160), (1, 3, 65, 67)):
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).logits.numpy()
        got = session.run(None, {"pixel_values": x})[0]
        assert got.shape == expected.shape
        diff = float(np.abs(got - expected).max())
        print(f"onnx vs pt {x.shape}: max|diff| {diff:.2e}")
        assert diff < TOL


def test_onnx_full_resolution_and_validation(tmp_path):
    torch, model = _pt_model()
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from segformer.pt.export import export_onnx

    with pytest.raises(ValueError, match="opset must be an int >= 17, got 13"):
        export_onnx(model, tmp_path / "x.onnx", opset=13)
    path = export_onnx(model, tmp_path / "full.onnx", input_size=64, full_resolution=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (x,) = _inputs((1, 3, 72, 88))
    with torch.no_grad():
        expected = torch.nn.functional.interpolate(
            model(torch.from_numpy(x)).logits, size=(72, 88), mode="bilinear", align_corners=False
        ).numpy()
    got = session.run(None, {"pixel_values": x})[0]
    assert got.shape == (1, 3, 72, 88)
    assert float(np.abs(got - expected).max()) < TOL
    assert model.training is False and model.use_fast_path  # the caller's model is untouched


def test_torch_export_dynamic_batch():
    torch, model = _pt_model()
    from segformer.pt.export import export_program

    program = export_program(model, input_size=(64, 96), batch=2, dynamic=True)
    for x in _inputs((1, 3, 64, 96), (3, 3, 64, 96)):
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).logits
            got = program.module()(torch.from_numpy(x))
        diff = float((got - expected).abs().max())
        print(f"torch.export vs eager {x.shape}: max|diff| {diff:.2e}")
        assert diff < TOL


@pytest.mark.parametrize(
    "backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)]  # inductor: ~60 s on 2 CPU cores
)
def test_torch_compile_tiny(backend):
    torch, model = _pt_model()
    from segformer.pt.export import compile_model

    compiled = compile_model(model, backend=backend)
    (x,) = _inputs((1, 3, 64, 64))
    start = time.perf_counter()
    try:
        with torch.no_grad():
            got = compiled(torch.from_numpy(x))
    except Exception as err:  # a CPU without a working C++ compiler for inductor
        if "compiler" in str(err).lower() or "cpp" in str(err).lower():
            pytest.skip(f"torch.compile backend unavailable here: {type(err).__name__}")
        raise
    print(f"torch.compile({backend}) first call {time.perf_counter() - start:.1f} s")
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).logits
    diff = float((got - expected).abs().max())
    print(f"torch.compile vs eager: max|diff| {diff:.2e}")
    assert diff < TOL


def test_bf16_autocast_error_is_small():
    torch, model = _pt_model()
    from segformer.pt.export import bf16_logits

    (x,) = _inputs((2, 3, 64, 64))
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).logits
    got = bf16_logits(model, torch.from_numpy(x))
    assert got.dtype == torch.float32
    error = float((got - reference).abs().max())
    scale = float(reference.std())
    print(f"bf16 autocast vs float32: max|diff| {error:.3e} (logit std {scale:.3f}, ratio {error / scale:.3f})")
    assert np.isfinite(error) and error < 0.1 * scale
    with pytest.raises(ValueError, match="training mode"):
        bf16_logits(model.train(), torch.from_numpy(x))


# ----------------------------------------------------------------------------------------- TensorFlow
def _tf_model():
    tf = pytest.importorskip("tensorflow")
    from segformer.tf import TFSegformerForSemanticSegmentation
    config = tiny_config()
    model = TFSegformerForSemanticSegmentation(config)
    model.load_state_dict_numpy(random_state(config, "semantic_segmentation", seed=3))
    return tf, model


def _keras_logits(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False).logits)


def test_saved_model_matches_keras(tmp_path):
    tf, model = _tf_model()
    from segformer.tf.export import export_saved_model, load_saved_model
    path = export_saved_model(model, tmp_path / "saved")
    serve = load_saved_model(path)
    for x in _inputs((1, 3, 64, 64), (2, 3, 96, 160)):
        got = np.asarray(serve(tf.constant(x)))
        expected = _keras_logits(model, x)
        assert got.shape == expected.shape
        diff = float(np.abs(got - expected).max())
        print(f"saved_model vs keras {x.shape}: max|diff| {diff:.2e}")
        assert diff < TOL


def test_tflite_matches_keras(tmp_path):
    tf, model = _tf_model()
    from segformer.tf.export import export_tflite, run_tflite
    path = export_tflite(model, tmp_path / "model.tflite", input_size=(64, 96))
    (x,) = _inputs((1, 3, 64, 96))
    got = run_tflite(path, x)
    expected = _keras_logits(model, x)
    assert got.shape == expected.shape
    diff = float(np.abs(got - expected).max())
    print(f"tflite vs keras {x.shape}: max|diff| {diff:.2e}")
    assert diff < TOL


@pytest.mark.parametrize("fast_path", [False, True])
def test_mixed_float16_error_is_small(fast_path):
    tf, model = _tf_model()
    from segformer.tf.export import mixed_float16_logits
    model.use_fast_path = fast_path
    (x,) = _inputs((2, 3, 64, 64))
    reference = _keras_logits(model, x)
    got = mixed_float16_logits(model, x)
    assert got.dtype == np.float32
    error = float(np.abs(got - reference).max())
    scale = float(reference.std())
    print(f"mixed_float16 (fast path {fast_path}) vs float32: max|diff| {error:.3e} (logit std {scale:.3f}, ratio {error / scale:.3f})")
    assert np.isfinite(error) and error < 0.1 * scale
