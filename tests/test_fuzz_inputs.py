"""Fuzzing: random image shapes / dtypes / layouts into the processor and both models.

Only documented errors may escape (segformer.common.base.errors). Bounded in CI; for a long run:
``SEGFORMER_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz_inputs.py -s``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_counts import counted, new_outcomes, print_outcomes
from randomize import random_state, tiny_config
from segformer import SegformerImageProcessor

EXAMPLES = int(os.environ.get("SEGFORMER_FUZZ_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
OUTCOMES = new_outcomes()
OURS = ("ValueError", "TypeError", "CheckpointError", "FileNotFoundError", "ImportError")


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print_outcomes(OUTCOMES)


def _run(kind: str, func):
    return counted(OUTCOMES, kind, func, OURS)


_DTYPES = ["uint8", "uint16", "int32", "int64", "float16", "float32", "float64", "bool", "complex64", "object"]


@st.composite
def _images(draw):
    ndim = draw(st.sampled_from([1, 2, 3, 3, 3, 4, 5]))
    shape = []
    for axis in range(ndim):
        shape.append(draw(st.sampled_from([0, 1, 2, 3, 4, 5, 7, 16, 33])))
    dtype = draw(st.sampled_from(_DTYPES))
    special = draw(st.sampled_from([None, None, "nan", "inf", "big", "negative"]))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    if dtype == "object":
        return np.empty(shape, dtype=object)
    data = rng.uniform(0, 255, size=shape)
    if special == "nan" and data.size:
        data.flat[0] = np.nan
    elif special == "inf" and data.size:
        data.flat[0] = np.inf
    elif special == "big":
        data = data * 1000
    elif special == "negative":
        data = data - 300
    with np.errstate(invalid="ignore", over="ignore"):
        return data.astype(dtype) if dtype != "bool" else data > 128


@pytest.mark.filterwarnings("ignore::UserWarning")
@SETTINGS
@given(image=_images(), size=st.integers(1, 40), maps=st.booleans(), channels_last=st.sampled_from([None, "channels_first", "channels_last"]))
def test_processor_raises_only_documented_errors(image, size, maps, channels_last):
    processor = SegformerImageProcessor(size={"height": size, "width": size})
    before = image.copy()
    segmentation_maps = None
    if maps and image.ndim >= 2:
        segmentation_maps = np.zeros(image.shape[:2], dtype=np.int64)
    out = _run("processor", lambda: processor(image, segmentation_maps, input_data_format=channels_last, return_tensors="np"))
    if image.dtype != object:
        np.testing.assert_array_equal(image, before)  # never modified in place
    if out is not None:
        assert out["pixel_values"].dtype == np.float32 and out["pixel_values"].shape[-2:] == (size, size)
        assert np.isfinite(out["pixel_values"]).all() or not np.isfinite(image.astype(np.float64)).all()


@pytest.fixture(scope="module")
def pt_model():
    torch = pytest.importorskip("torch")
    from segformer.pt import SegformerForSemanticSegmentation

    config = tiny_config()
    model = SegformerForSemanticSegmentation(config).eval()
    model.load_state_dict_numpy(random_state(config, "seg"))
    return torch, model


@st.composite
def _model_inputs(draw):
    ndim = draw(st.sampled_from([3, 4, 4, 4, 5]))
    shape = [draw(st.sampled_from([0, 1, 2, 3]))] if ndim >= 4 else []
    shape.append(draw(st.sampled_from([1, 3, 3, 3, 4])))
    shape += [draw(st.sampled_from([0, 1, 7, 28, 29, 33, 40])) for _ in range(2)]
    if ndim == 5:
        shape.append(2)
    if ndim == 3:
        shape = shape[:3]
    dtype = draw(st.sampled_from(["float32", "float32", "float64", "float16", "int64", "uint8", "bool"]))
    labels = draw(st.sampled_from([None, "ok", "float", "out_of_range", "wrong_batch", "wrong_rank", "ignore"]))
    return shape, dtype, labels


@SETTINGS
@given(spec=_model_inputs(), seed=st.integers(0, 100))
def test_pt_model_raises_only_documented_errors(pt_model, spec, seed):
    torch, model = pt_model
    shape, dtype, labels_kind = spec
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=generator).to(getattr(torch, dtype))
    batch = shape[0] if len(shape) == 4 else 1
    h, w = (shape[-2], shape[-1]) if len(shape) >= 2 else (1, 1)
    labels = {
        None: None,
        "ok": torch.randint(0, 3, (batch, max(h, 1), max(w, 1))),
        "ignore": torch.full((batch, 8, 8), 255),
        "float": torch.rand(batch, 8, 8),
        "out_of_range": torch.full((batch, 8, 8), 7),
        "wrong_batch": torch.zeros(batch + 1, 8, 8, dtype=torch.long),
        "wrong_rank": torch.zeros(8, dtype=torch.long),
    }[labels_kind]
    with torch.no_grad():
        out = _run("pt_model", lambda: model(x, labels=labels))
    if out is not None:
        assert torch.isfinite(out.logits).all() or x.dtype == torch.float16


@pytest.fixture(scope="module")
def tf_model():
    tf = pytest.importorskip("tensorflow")
    from segformer.tf import TFSegformerForSemanticSegmentation

    config = tiny_config()
    model = TFSegformerForSemanticSegmentation(config)
    model.load_state_dict_numpy(random_state(config, "seg"))
    return tf, model


@SETTINGS
@given(spec=_model_inputs(), seed=st.integers(0, 100))
def test_tf_model_raises_only_documented_errors(tf_model, spec, seed):
    tf, model = tf_model
    shape, dtype, labels_kind = spec
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(dtype if dtype != "bool" else np.float32)
    if dtype == "bool":
        x = x > 0
    batch = shape[0] if len(shape) == 4 else 1
    h, w = (shape[-2], shape[-1]) if len(shape) >= 2 else (1, 1)
    labels = {
        None: None,
        "ok": rng.integers(0, 3, size=(batch, max(h, 1), max(w, 1))),
        "ignore": np.full((batch, 8, 8), 255),
        "float": rng.random((batch, 8, 8)).astype(np.float32),
        "out_of_range": np.full((batch, 8, 8), 7),
        "wrong_batch": np.zeros((batch + 1, 8, 8), np.int64),
        "wrong_rank": np.zeros(8, np.int64),
    }[labels_kind]
    out = _run("tf_model", lambda: model(x, labels=labels))
    if out is not None and dtype != "float16":
        assert np.isfinite(np.asarray(out.logits)).all()
