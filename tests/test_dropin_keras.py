"""Drop-in for transformers' TF classes: Hub / save keywords, Keras compile / fit / evaluate, loss shapes,
from_config, functional keras.Input models and .keras files (items 1-7 of the drop-in issue, Keras side)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from randomize import random_state, tiny_config
from segformer.common.model.config import SegformerConfig

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
from segformer.tf import TFSegformerForImageClassification, TFSegformerForSemanticSegmentation, TFSegformerModel  # noqa: E402
from segformer.tf.metrics import SegmentationMeanIoU  # noqa: E402

SECRET = "hf_TOKEN_must_never_be_written_tf_51c2"


def _model(cls=TFSegformerForSemanticSegmentation, task="semantic_segmentation", seed=3, **overrides):
    model = cls(tiny_config(**overrides))
    model.build()
    model.load_state_dict_numpy(random_state(model.config, task, seed=seed))
    return model


def _data(n=4, side=32, num_labels=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3, side, side)).astype(np.float32)
    y = rng.integers(0, num_labels, size=(n, side // 4, side // 4)).astype(np.int64)  # at the logits' size
    return x, y


def _weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


# ----------------------------------------------------------------------------------- 1-3: Hub and disk
def test_tf_from_pretrained_keywords_and_token(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    model = _model()
    model.save_pretrained(tmp_path / "repo" / "sub")
    calls = []
    monkeypatch.setattr(hub, "snapshot_download", lambda repo_id, **kw: calls.append(kw) or str(tmp_path / "repo"))
    loaded = TFSegformerForSemanticSegmentation.from_pretrained("user/seg", token=SECRET, revision="v2", subfolder="sub")
    assert calls[-1]["token"] == SECRET and calls[-1]["revision"] == "v2"
    np.testing.assert_array_equal(loaded.decode_head.classifier.kernel.numpy(), model.decode_head.classifier.kernel.numpy())
    with pytest.raises(TypeError, match="'num_label'"):
        TFSegformerForSemanticSegmentation.from_pretrained(tmp_path / "repo" / "sub", num_label=4)
    uploads = []

    def upload_folder(*, repo_id, folder_path, **kw):
        uploads.append(kw)
        shutil.copytree(folder_path, tmp_path / "uploaded" / str(len(uploads)))

    monkeypatch.setattr(hub, "create_repo", lambda repo_id, **kw: None)
    monkeypatch.setattr(hub, "upload_folder", upload_folder)
    loaded.save_pretrained(tmp_path / "out", push_to_hub=True, repo_id="user/tf", token=SECRET)
    loaded.push_to_hub("user/tf2", token=SECRET, safe_serialization=True)
    assert [u["token"] for u in uploads] == [SECRET, SECRET]
    assert sorted(os.listdir(tmp_path / "uploaded" / "2")) == ["config.json", "model.safetensors"]
    for path in list((tmp_path / "out").rglob("*")) + list((tmp_path / "uploaded").rglob("*")):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    with pytest.raises(TypeError, match="safe_serialisation"):
        loaded.save_pretrained(tmp_path / "x", safe_serialisation=True)


def test_tf_save_pretrained_safetensors(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "st", safe_serialization=True)
    assert sorted(os.listdir(tmp_path / "st")) == ["config.json", "model.safetensors"]
    from segformer.common.checkpoints import read_safetensors

    stored = read_safetensors(tmp_path / "st" / "model.safetensors")
    expected = random_state(model.config, "semantic_segmentation", seed=3)
    for name, value in expected.items():
        np.testing.assert_array_equal(stored[name], value, err_msg=name)
    reloaded = TFSegformerForSemanticSegmentation.from_pretrained(tmp_path / "st")
    x, _ = _data(n=1)
    np.testing.assert_array_equal(reloaded(x).logits.numpy(), model(x).logits.numpy())


@pytest.mark.slow
def test_tf_save_pretrained_saved_model(tmp_path):
    model = _model()
    x, _ = _data(n=1)
    model.save_pretrained(tmp_path / "sm", saved_model=True, version=3)
    assert (tmp_path / "sm" / "tf_model.h5").is_file()
    served = tf.saved_model.load(str(tmp_path / "sm" / "saved_model" / "3"))
    out = served.signatures["serving_default"](pixel_values=tf.constant(x))["logits"].numpy()
    diff = float(np.abs(out - model(x).logits.numpy()).max())
    assert diff < 1e-5, f"max |SavedModel - model| = {diff}"


def test_tf_num_parameters_matches_the_pt_twin():
    torch = pytest.importorskip("torch")
    from segformer.pt import SegformerForSemanticSegmentation

    config = tiny_config()
    ours = TFSegformerForSemanticSegmentation(config)
    twin = SegformerForSemanticSegmentation(config)
    assert ours.num_parameters(only_trainable=True) == twin.num_parameters() == sum(p.numel() for p in twin.parameters())
    buffers = sum(b.numel() for name, b in twin.named_buffers())
    assert ours.num_parameters() == twin.num_parameters() + buffers
    assert isinstance(torch.tensor(0), torch.Tensor)


# ------------------------------------------------------------------------------- 4: compiled metrics
def test_compiled_metrics_in_fit_and_evaluate_match_numpy():
    x, y = _data()
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(1e-3), metrics=[SegmentationMeanIoU(3), "accuracy"][:1])
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "mean_iou"}
    result = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    logits = model(x, training=False).logits.numpy()  # (B, K, h, w) = labels' size: no resize
    pred = logits.argmax(axis=1)
    confusion = np.zeros((3, 3), np.int64)
    np.add.at(confusion, (y.ravel(), pred.ravel()), 1)
    intersect = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - intersect
    expected_miou = float(np.mean(intersect[union > 0] / union[union > 0]))
    assert abs(result["mean_iou"] - expected_miou) < 1e-9
    z = logits.transpose(0, 2, 3, 1).reshape(-1, 3).astype(np.float64)
    ce = np.log(np.exp(z).sum(1)) - z[np.arange(len(z)), y.ravel()]
    assert abs(result["loss"] - ce.mean()) < 1e-5


def test_compiled_keras_metric_for_classification():
    x, _ = _data()
    labels = np.array([0, 1, 2, 1])
    model = _model(TFSegformerForImageClassification, "image_classification")
    model.compile(optimizer="sgd", metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")])
    result = model.evaluate(x, labels, batch_size=4, verbose=0, return_dict=True)
    logits = model(x).logits.numpy()
    assert abs(result["acc"] - float(np.mean(logits.argmax(1) == labels))) < 1e-7


# -------------------------------------------------------------------------------- 5: fit forms, weights
FIT_FORMS = {
    "dict_x_dict_y": lambda x, y: ({"pixel_values": x}, {"labels": y}),
    "dict_with_labels": lambda x, y: ({"pixel_values": x, "labels": y},),
    "x_y": lambda x, y: (x, y),
}


def _fit_changes_weights(model, args, dataset: bool) -> None:
    before = _weights(model)
    if dataset:
        tensors = args if len(args) > 1 else args[0]
        history = model.fit(tf.data.Dataset.from_tensor_slices(tensors).batch(2), epochs=1, verbose=0)
    else:
        history = model.fit(*args, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, _weights(model)))


def test_fit_forms_and_tf_data():
    x, y = _data()
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    _fit_changes_weights(model, FIT_FORMS["dict_x_dict_y"](x, y), dataset=False)
    _fit_changes_weights(model, FIT_FORMS["x_y"](x, y), dataset=True)
    with pytest.raises(ValueError, match="'labels'"):
        model.fit({"pixel_values": x}, {"label": y}, batch_size=2, verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", [False, True])
@pytest.mark.parametrize("form", sorted(FIT_FORMS))
def test_every_fit_form(form, dataset):
    x, y = _data()
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    _fit_changes_weights(model, FIT_FORMS[form](x, y), dataset)


def test_sample_weight_scales_the_loss_and_zero_weights_change_nothing():
    x, y = _data()
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = _weights(model)
    model.fit(x, y, sample_weight=np.zeros(4, np.float32), batch_size=2, epochs=1, verbose=0)
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)
    plain = model.evaluate(x[:2], y[:2], batch_size=2, verbose=0, return_dict=True)["loss"]
    weighted = model.evaluate(x[:2], y[:2], sample_weight=np.array([1.0, 0.0], np.float32), batch_size=2, verbose=0,
                              return_dict=True)["loss"]
    first = float(model(x[:1], labels=y[:1]).loss[0])
    assert abs(weighted - 0.5 * first) < 1e-5  # example 0's term over both examples' pixels
    doubled = model.evaluate(x[:2], y[:2], sample_weight=np.full(2, 2.0, np.float32), batch_size=2, verbose=0,
                             return_dict=True)["loss"]
    assert abs(doubled - 2 * plain) < 1e-5


# ------------------------------------------------------------------------------ 6: loss shapes and rule
def test_loss_shapes_and_label_rule_as_transformers_tf():
    x, y = _data()
    seg = _model()
    assert tuple(seg(x, labels=y).loss.shape) == (1,)
    cls = _model(TFSegformerForImageClassification, "image_classification")
    ids = np.array([0, 2, 1, 1])
    logits = cls(x).logits.numpy().astype(np.float64)
    per_example = np.log(np.exp(logits).sum(1)) - logits[np.arange(4), ids]
    for labels in (ids, ids.astype(np.float32)):  # float class ids are class ids, as transformers' TF
        loss = cls(x, labels=labels).loss.numpy()
        assert loss.shape == (4,)
        np.testing.assert_allclose(loss, per_example, atol=1e-5)
    multi = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]], np.float32)
    bce = np.maximum(logits, 0) - logits * multi + np.log1p(np.exp(-np.abs(logits)))
    np.testing.assert_allclose(cls(x, labels=multi).loss.numpy(), bce.mean(1), atol=1e-5)
    with pytest.raises(ValueError, match="whole-number class ids"):
        cls(x, labels=np.array([0.5, 1, 2, 0], np.float32))
    explicit = _model(TFSegformerForImageClassification, "image_classification", problem_type="regression")
    target = np.array([[0.5, 1, 2], [0, 0, 0], [1, 1, 1], [2, 2, 2]], np.float32)
    z = explicit(x).logits.numpy()
    np.testing.assert_allclose(explicit(x, labels=target).loss.numpy(), ((z - target) ** 2).mean(1), atol=1e-5)
    cls.compile(optimizer="sgd")
    fit_loss = cls.evaluate(x, ids.astype(np.float32), batch_size=4, verbose=0, return_dict=True)["loss"]
    assert abs(fit_loss - per_example.mean()) < 1e-5  # the reported loss stays the mean


def test_pt_classification_label_rule():
    torch = pytest.importorskip("torch")
    from segformer.pt import SegformerForImageClassification

    model = SegformerForImageClassification(tiny_config()).eval()
    x = torch.randn(4, 3, 32, 32)
    ids = torch.tensor([0, 2, 1, 1])
    with torch.no_grad():
        by_int = model(x, labels=ids).loss
        by_float = model(x, labels=ids.float()).loss
        logits = model(x).logits.double().numpy()
    expected = np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(4), ids.numpy()])
    assert abs(by_int.item() - expected) < 1e-5 and abs(by_float.item() - expected) < 1e-5
    with pytest.raises(ValueError, match="shape"):
        model(x, labels=torch.zeros(4, 5))


# ------------------------------------------------------------------ 7: from_config, functional, .keras
def test_from_config_forms():
    config = tiny_config(num_labels=5)
    for source in (config, config.to_dict(), TFSegformerModel(config).get_config()):
        model = TFSegformerForSemanticSegmentation.from_config(source)
        assert model.config == config
    hf_style = {k: v for k, v in config.to_dict().items() if k != "patch_layer_norm_eps"}
    assert TFSegformerForSemanticSegmentation.from_config(hf_style).config.patch_layer_norm_eps == 1e-5
    with pytest.raises(TypeError, match="SegformerConfig or a dict"):
        TFSegformerForSemanticSegmentation.from_config("b0")


def test_functional_model_on_keras_input_and_keras_file(tmp_path):
    model = _model()
    inputs = keras.Input((3, 32, 32), name="pixel_values")
    outputs = model(inputs)
    functional = keras.Model(inputs, outputs)
    x, _ = _data(n=2)
    direct = model(x).logits.numpy()
    got = functional(x)
    assert type(got).__name__ == "SemanticSegmenterOutput"
    diff = float(np.abs(got.logits.numpy() - direct).max())
    assert diff < 1e-5, f"max |functional - model| = {diff}"
    path = tmp_path / "functional.keras"
    functional.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(reloaded.weights, functional.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    diff = float(np.abs(reloaded(x)["logits"].numpy() - direct).max())
    assert diff < 1e-5, f"max |reloaded .keras - model| = {diff}"
    base_inputs = keras.Input((3, 32, 32))
    base = keras.Model(base_inputs, TFSegformerModel(tiny_config())(base_inputs))
    assert tuple(base(x)["last_hidden_state"].shape) == (2, 16, 1, 1)
    assert json.loads(json.dumps(functional.get_config(), default=str))  # JSON-serializable
    assert isinstance(SegformerConfig.from_dict(model.get_config()["config"]), SegformerConfig)


def test_dummy_inputs_framework_and_can_generate():
    model = TFSegformerForSemanticSegmentation(tiny_config())
    assert model.framework == "tf" and model.can_generate() is False
    dummy = model.dummy_inputs
    assert sorted(dummy) == ["pixel_values"] and tuple(dummy["pixel_values"].shape) == (1, 3, 32, 32)
    assert tuple(model(**dummy).logits.shape) == (1, 3, 8, 8)


def test_base_model_fit_says_which_models_train():
    x, y = _data(n=2)
    model = TFSegformerModel(tiny_config())
    model.compile(optimizer="sgd")
    with pytest.raises(TypeError, match="TFSegformerForSemanticSegmentation"):
        model.fit(x, y, batch_size=2, verbose=0)


def test_tf_from_pretrained_none_with_config_and_state_dict():
    config = tiny_config()
    state = random_state(config, "semantic_segmentation", seed=4)
    model = TFSegformerForSemanticSegmentation.from_pretrained(None, config=config, state_dict=state)
    for name, value in model.state_dict_numpy().items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
