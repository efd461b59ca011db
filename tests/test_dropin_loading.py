"""Loading / saving options shared by ``segformer.pt`` and ``segformer.tf`` models: which weights file is read
(one precedence rule), ``dtype=`` (the weights are cast, the config is not changed; saved ``config.json`` records
the saved weights' dtype as transformers does), ``state_dict=``, ``check_finite`` and ``from_preset``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from randomize import random_state, tiny_config

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
from segformer.pt import SegformerForSemanticSegmentation  # noqa: E402
from segformer.tf import TFSegformerForSemanticSegmentation  # noqa: E402

PROBE = "decode_head.classifier.weight"  # a tensor that tells the three saved states apart


@pytest.fixture(scope="module")
def three_formats(tmp_path_factory):
    """One folder holding model.safetensors, pytorch_model.bin and tf_model.h5, each with other weights."""
    folder = tmp_path_factory.mktemp("three")
    config = tiny_config()
    states = {name: random_state(config, "seg", seed=seed) for seed, name in enumerate(("safetensors", "torch", "h5"))}
    # each save leaves one set of weights in its folder: three saves, then the files put side by side (as a Hub
    # repository holds them)
    pt = SegformerForSemanticSegmentation(config)
    pt.load_state_dict_numpy(states["safetensors"])
    pt.save_pretrained(folder, safe_serialization=True)
    pt.load_state_dict_numpy(states["torch"])
    pt.save_pretrained(folder / "bin", safe_serialization=False)
    keras_model = TFSegformerForSemanticSegmentation(config)
    keras_model.load_state_dict_numpy(states["h5"])
    keras_model.save_pretrained(folder / "h5")
    for sub, name in (("bin", "pytorch_model.bin"), ("h5", "tf_model.h5")):
        shutil.move(folder / sub / name, folder / name)
        shutil.rmtree(folder / sub)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5"]
    return folder, states


def _which(model, states):
    probe = model.state_dict_numpy()[PROBE]
    found = [name for name, state in states.items() if np.allclose(probe, state[PROBE], atol=1e-6)]
    assert len(found) == 1
    return found[0]


# (use_safetensors, from_other) -> the file read; from_other is from_tf in PyTorch, from_pt in Keras.
# The flags combine and none overrides another; a combination that leaves no file is an error.
EXPECTED = {
    "pt": {(None, False): "safetensors", (True, False): "safetensors", (False, False): "torch",
           (None, True): "h5", (False, True): "h5", (True, True): ValueError},
    "tf": {(None, False): "h5", (True, False): "safetensors", (False, False): "h5",
           (None, True): "safetensors", (False, True): "torch", (True, True): "safetensors"},
}


@pytest.mark.parametrize("framework", ["pt", "tf"])
def test_format_flags_one_precedence_rule(three_formats, framework):
    folder, states = three_formats
    cls, flag = (SegformerForSemanticSegmentation, "from_tf") if framework == "pt" else (TFSegformerForSemanticSegmentation, "from_pt")
    for (use_safetensors, from_other), expected in EXPECTED[framework].items():
        kwargs = {"use_safetensors": use_safetensors, flag: from_other}
        if expected is ValueError:
            with pytest.raises(ValueError, match=r"from_tf=True reads only h5 files, which use_safetensors=True rules out"):
                cls.from_pretrained(folder, **kwargs)
        else:
            assert _which(cls.from_pretrained(folder, **kwargs), states) == expected, kwargs
    with pytest.raises(TypeError, match=r"use_safetensors must be True, False or None, got 'yes'"):
        cls.from_pretrained(folder, use_safetensors="yes")


@pytest.mark.parametrize("framework", ["pt", "tf"])
def test_dtype_casts_the_weights_and_never_enters_the_config(three_formats, tmp_path, framework):
    folder, states = three_formats
    cls = SegformerForSemanticSegmentation if framework == "pt" else TFSegformerForSemanticSegmentation
    plain = cls.from_pretrained(folder, use_safetensors=True)
    half = cls.from_pretrained(folder, use_safetensors=True, dtype="float16")
    assert half.config.to_dict() == plain.config.to_dict()
    if framework == "pt":
        assert {p.dtype for p in half.parameters()} == {torch.float16}
    else:
        kinds = {v.path.split("/")[-1]: v.dtype for v in half.weights if "classifier" not in v.path}
        assert set(kinds.values()) == {"float16", "int64"}, kinds  # num_batches_tracked stays int64
    expected = {k: v.astype(np.float16).astype(np.float32) for k, v in states["safetensors"].items() if v.dtype == np.float32}
    if framework == "tf":  # the Keras classifier keeps float32 variables (logits and loss in float32)
        expected.update({k: v for k, v in states["safetensors"].items() if k.startswith("decode_head.classifier.")})
    got = half.state_dict_numpy()
    assert all(np.array_equal(got[k], v) for k, v in expected.items())
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    if framework == "pt":
        with torch.no_grad():
            out_half = half(torch.from_numpy(x).half()).logits.float().numpy()
            out_plain = plain(torch.from_numpy(x)).logits.numpy()
    else:
        out_half, out_plain = np.asarray(half(x).logits, np.float32), np.asarray(plain(x).logits)
    assert np.abs(out_half - out_plain).max() <= 2e-2 * np.abs(out_plain).max()
    # saved: float32 weights, and config.json records them as transformers does ("dtype": "float32")
    half.save_pretrained(tmp_path / "saved", safe_serialization=True)
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["dtype"] == "float32" and "torch_dtype" not in saved
    from safetensors.numpy import load_file

    weights = load_file(tmp_path / "saved" / "model.safetensors")
    assert {a.dtype for a in weights.values()} <= {np.dtype(np.float32), np.dtype(np.int64)}
    assert np.array_equal(weights[PROBE], expected[PROBE])
    with pytest.raises(ValueError, match=r"dtype must be one of \['float32', 'float16', 'bfloat16', 'float64'\], 'auto'"):
        cls.from_pretrained(folder, dtype="float8")
    with pytest.raises(ValueError, match="disagree"):
        cls.from_pretrained(folder, dtype="float16", torch_dtype="bfloat16")


def test_saved_config_dtype_matches_transformers(tmp_path):
    """transformers' PyTorch save_pretrained records the saved weights' dtype as ``"dtype"``; so do both of ours."""
    transformers = pytest.importorskip("transformers")
    config = tiny_config()
    hf = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(**config.to_dict()))
    hf.save_pretrained(tmp_path / "hf")
    SegformerForSemanticSegmentation(config).save_pretrained(tmp_path / "pt")
    TFSegformerForSemanticSegmentation(config).save_pretrained(tmp_path / "tf")
    hf_json = json.loads((tmp_path / "hf" / "config.json").read_text())
    for ours in ("pt", "tf"):
        mine = json.loads((tmp_path / ours / "config.json").read_text())
        assert mine.get("dtype") == hf_json["dtype"] == "float32"
        assert "torch_dtype" not in mine


def test_auto_dtype_reads_config_json(three_formats, tmp_path):
    folder, _ = three_formats
    import shutil

    copy = tmp_path / "bf16"
    shutil.copytree(folder, copy)
    data = json.loads((copy / "config.json").read_text())
    data["dtype"] = "bfloat16"
    (copy / "config.json").write_text(json.dumps(data))
    pt = SegformerForSemanticSegmentation.from_pretrained(copy, dtype="auto")
    keras_model = TFSegformerForSemanticSegmentation.from_pretrained(copy, dtype="auto")
    assert pt.dtype == torch.bfloat16
    assert keras_model.segformer.encoder.weights[0].dtype == "bfloat16"


def test_state_dict_the_same_in_both(tmp_path):
    """``state_dict=`` takes numpy, torch (bfloat16 included) and TensorFlow values alike in both frameworks."""
    config = tiny_config()
    state = random_state(config, "seg", seed=7)
    torch_state = {k: torch.from_numpy(v).to(torch.bfloat16) if v.dtype == np.float32 else torch.from_numpy(v)
                   for k, v in state.items()}
    tf_state = {k: tf.constant(v) for k, v in state.items()}
    rounded = {k: v.astype(np.float32) if v.dtype != np.float32 else
               torch.from_numpy(v).to(torch.bfloat16).float().numpy() for k, v in state.items()}
    for cls in (SegformerForSemanticSegmentation, TFSegformerForSemanticSegmentation):
        from_torch = cls.from_pretrained(None, config=config, state_dict=torch_state).state_dict_numpy()
        from_tf = cls.from_pretrained(None, config=config, state_dict=tf_state).state_dict_numpy()
        from_numpy = cls.from_pretrained(None, config=config, state_dict=state).state_dict_numpy()
        assert all(np.array_equal(from_torch[k], rounded[k]) for k in state), cls.__name__
        assert all(np.array_equal(from_tf[k], state[k]) and np.array_equal(from_numpy[k], state[k]) for k in state)
        with pytest.raises(TypeError, match=r"state_dict must be a dict of name -> tensor, got list"):
            cls.from_pretrained(None, config=config, state_dict=list(state.items()))
    # save_pretrained(state_dict=) on both: the given tensors are written, not the model's
    for name, cls in (("pt", SegformerForSemanticSegmentation), ("tf", TFSegformerForSemanticSegmentation)):
        cls(config).save_pretrained(tmp_path / name, state_dict=torch_state, safe_serialization=True)
        loaded = SegformerForSemanticSegmentation.from_pretrained(tmp_path / name).state_dict_numpy()
        assert all(np.array_equal(loaded[k], rounded[k]) for k in state), name


def test_check_finite_the_same_in_both():
    config = tiny_config()
    x = np.zeros((1, 3, 64, 64), np.float32)
    x[0, 0, 3, 3] = np.nan
    for model, run in ((SegformerForSemanticSegmentation(config).eval(), lambda m: m(torch.from_numpy(x))),
                       (TFSegformerForSemanticSegmentation(config), lambda m: m(x))):
        assert model.check_finite is False
        run(model)  # off by default: no check
        model.check_finite = True
        assert model.check_finite is True
        with pytest.raises(ValueError, match="pixel_values contain NaN or Inf values"):
            run(model)
        with pytest.raises(TypeError, match=r"check_finite must be True or False, got 'no'"):
            model.check_finite = "no"
        assert model.check_finite is True


def test_from_preset_on_both(three_formats):
    folder, states = three_formats
    for cls in (SegformerForSemanticSegmentation, TFSegformerForSemanticSegmentation):
        model = cls.from_preset(str(folder), use_safetensors=True, dtype="float32")
        assert _which(model, states) == "safetensors"
