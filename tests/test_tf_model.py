"""Keras 3 model family against the Hugging Face fixtures, the canonical table and Keras workflows."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from conftest import fixture_path, shared_or_skip  # noqa: E402
from randomize import random_state, tiny_config  # noqa: E402
from segformer import SegformerConfig  # noqa: E402
from segformer.common.model.weights import TASKS, parameter_table  # noqa: E402
from segformer.tf import (  # noqa: E402
    TFSegformerDecodeHead,
    TFSegformerForImageClassification,
    TFSegformerForSemanticSegmentation,
    TFSegformerModel,
)

CLASSES = {
    "tiny-seg": TFSegformerForSemanticSegmentation,
    "small-seg": TFSegformerForSemanticSegmentation,
    "tiny-seg-binary": TFSegformerForSemanticSegmentation,
    "tiny-cls": TFSegformerForImageClassification,
    "tiny-base": TFSegformerModel,
}
TASK_CLASSES = {
    "base": TFSegformerModel,
    "semantic_segmentation": TFSegformerForSemanticSegmentation,
    "image_classification": TFSegformerForImageClassification,
}
TOL = 1e-5


def _compare(model, expected, inputs, use_fast_path=True):
    model.use_fast_path = use_fast_path
    diffs = {}
    for inp in inputs:
        if f"{inp}_pixel_values" not in expected.files:
            continue
        kwargs = {}
        if f"{inp}_labels" in expected.files:
            kwargs["labels"] = expected[f"{inp}_labels"]
        out = model(expected[f"{inp}_pixel_values"], output_hidden_states=True, output_attentions=True, **kwargs)
        for key in expected.files:
            if not key.startswith(f"{inp}_pt_"):
                continue
            what = key[len(inp) + 4 :]
            if what.startswith("attentions_"):
                got = out.attentions[int(what.rsplit("_", 1)[1])]
            elif what.startswith("hidden_states_"):
                got = out.hidden_states[int(what.rsplit("_", 1)[1])]
            else:
                got = getattr(out, what)
            got = np.asarray(got)
            if what == "loss":  # TF: (1,) / per-example (B,) as transformers' TF classes; its mean is PT's scalar
                assert got.shape == ((1,) if "Semantic" in type(model).__name__ else (len(expected[f"{inp}_pixel_values"]),))
                got = got.mean()
            assert got.shape == expected[key].shape, key
            diffs[f"{inp}_{what}"] = float(np.abs(got - expected[key]).max())
    return diffs


# every fixture folder x weight file, except tiny-seg-binary's tf_model.h5: the reference TF class has no
# binary path, so that fixture has none (our TF binary path is compared with PT in test_parity_pt_tf)
FIXTURE_FILES = [(name, weights) for name in sorted(CLASSES) for weights in ("tf_model.h5", "model.safetensors", "pytorch_model.bin")
                 if (name, weights) != ("tiny-seg-binary", "tf_model.h5")]


def test_binary_fixture_has_no_tf_weights():
    folder = fixture_path("hf/tiny-seg-binary")
    assert (folder / "model.safetensors").exists() and not (folder / "tf_model.h5").exists()


@pytest.mark.parametrize("name,weights", FIXTURE_FILES)
def test_hf_fixtures_reproduce_reference_outputs(name, weights):
    folder = fixture_path(f"hf/{name}")
    if weights == "pytorch_model.bin":
        pytest.importorskip("torch")
    model = CLASSES[name].from_pretrained(folder / weights)
    expected = np.load(folder / "expected.npz")
    for fast in (True, False):
        diffs = _compare(model, expected, ["a", "b"], fast)
        print(name, weights, "fast" if fast else "plain", {k: f"{v:.2e}" for k, v in diffs.items()})
        assert diffs and max(diffs.values()) <= TOL, diffs


def test_b0_ade_random_h5_on_the_cats_image():
    folder = shared_or_skip("hf/b0-ade-random")
    model = TFSegformerForSemanticSegmentation.from_pretrained(folder)
    diffs = _compare(model, np.load(folder / "expected.npz"), ["cats"])
    print("b0-ade-random tf", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert max(diffs.values()) <= TOL


@pytest.mark.parametrize("variant", ["b0", "b1", "b2", "b3", "b4", "b5", "b0-mmseg"])
@pytest.mark.parametrize("task", TASKS)
def test_variables_equal_the_canonical_table(variant, task):
    name, _, head = variant.partition("-")
    config = SegformerConfig.from_variant(name, num_labels=19, decode_head_type=head or "mlp")
    model = TASK_CLASSES[task](config)
    with keras.StatelessScope():  # variables are created but not initialized: no random numbers, no forward pass
        model.build()
    variables = model._variables_by_tf_name()
    table = parameter_table(config, task)
    assert set(variables) == {s.tf_name for s in table}
    assert all(tuple(variables[s.tf_name].shape) == s.tf_shape for s in table)
    assert {n for n, v in variables.items() if v.trainable} == {s.tf_name for s in table if s.trainable}


def _random_model(cls, config, task, seed=0, **kwargs):
    model = cls(config, **kwargs)
    model.load_state_dict_numpy(random_state(config, task, seed))
    return model


def test_state_dict_round_trip_is_exact():
    config = tiny_config()
    state = random_state(config, "seg", seed=4)
    model = _random_model(TFSegformerForSemanticSegmentation, config, "seg", seed=4)
    back = model.state_dict_numpy()
    assert back.keys() == state.keys()
    assert all(np.array_equal(back[k], state[k]) for k in state)


def test_nhwc_mode_equals_nchw_mode():
    config = tiny_config()
    nchw = _random_model(TFSegformerForSemanticSegmentation, config, "seg")
    nhwc = _random_model(TFSegformerForSemanticSegmentation, config, "seg", data_format="channels_last")
    x = np.random.default_rng(0).normal(size=(2, 3, 65, 71)).astype(np.float32)
    a = nchw(x, output_hidden_states=True)
    b = nhwc(x.transpose(0, 2, 3, 1), output_hidden_states=True)
    np.testing.assert_allclose(np.asarray(a.logits), np.asarray(b.logits).transpose(0, 3, 1, 2), atol=1e-6)
    assert tuple(b.hidden_states[0].shape) == (2, 17, 18, 8)
    with pytest.raises(ValueError, match=r"data_format must be one of \['channels_first', 'channels_last'\]"):
        TFSegformerForSemanticSegmentation(config, data_format="NCHW")


def test_losses_with_ignore_index_binary_and_bad_labels():
    config = tiny_config(num_labels=4)
    model = _random_model(TFSegformerForSemanticSegmentation, config, "seg")
    x = np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32)
    labels = np.random.default_rng(2).integers(0, 4, size=(2, 50, 70))
    labels[:, :20] = 255
    loss = float(model(x, labels=labels).loss[0])  # shape (1,), as transformers' TF model
    assert np.isfinite(loss) and loss > 0
    all_ignored = float(model(x, labels=np.full((2, 16, 16), 255)).loss[0])
    assert all_ignored == 0.0
    with pytest.raises(ValueError, match=r"labels contain values \[4, 9\] outside \[0, 4\)"):
        model(x, labels=np.array([4, 9, 0, 255]).reshape(1, 2, 2).repeat(2, 0))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        model(x, labels=np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="labels batch size 3 does not match pixel_values batch size 2"):
        model(x, labels=np.zeros((3, 8, 8), np.int64))
    binary = _random_model(TFSegformerForSemanticSegmentation, tiny_config(num_labels=1), "seg")
    assert np.isfinite(float(binary(x, labels=np.where(labels == 255, 255, labels % 2)).loss[0]))


def test_bad_pixel_values_raise_clear_errors():
    model = _random_model(TFSegformerForSemanticSegmentation, tiny_config(), "seg")
    with pytest.raises(TypeError, match="pixel_values must be floating point"):
        model(np.zeros((1, 3, 64, 64), np.uint8))
    with pytest.raises(ValueError, match="expects num_channels=3"):
        model(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="must have 4 dimensions"):
        model(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="too small"):
        model(np.zeros((1, 3, 20, 64), np.float32))
    model.check_finite = True
    bad = np.zeros((1, 3, 64, 64), np.float32)
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(bad)


def test_return_dict_false_and_flags():
    model = _random_model(TFSegformerForSemanticSegmentation, tiny_config(), "seg")
    x = np.zeros((1, 3, 64, 64), np.float32)
    tup = model(x, labels=np.zeros((1, 64, 64), np.int64), output_attentions=True, output_hidden_states=True, return_dict=False)
    assert len(tup) == 4 and tuple(tup[3][0].shape) == (1, 1, 256, 4)  # attentions keep (B, heads, N, N_kv)
    assert len(model(x, return_dict=False)) == 1


def _dataset(nhwc: bool, n=8, size=64, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, 3, size, size)).astype(np.float32)
    labels = (images[:, 0] > 0).astype(np.int64) + (images[:, 1] > 0.5).astype(np.int64)
    if nhwc:
        images = images.transpose(0, 2, 3, 1)
    return tf.data.Dataset.from_tensor_slices({"pixel_values": images, "labels": labels}).batch(4)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_fit_lowers_the_loss(data_format):
    keras.utils.set_random_seed(0)
    model = TFSegformerForSemanticSegmentation(tiny_config(num_labels=3), data_format=data_format)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    data = _dataset(data_format == "channels_last")
    history = model.fit(data, epochs=5, verbose=0)
    losses = history.history["loss"]
    print(data_format, "fit losses", [round(v, 4) for v in losses])
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.05
    preds = model.predict(data, verbose=0)
    assert preds.shape == ((8, 3, 16, 16) if data_format == "channels_first" else (8, 16, 16, 3))


def test_jit_compile_fit_and_mixed_precision():
    keras.utils.set_random_seed(0)
    model = TFSegformerForSemanticSegmentation(tiny_config(num_labels=3))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    history = model.fit(_dataset(False), epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = TFSegformerForSemanticSegmentation(tiny_config(num_labels=3))
        mixed.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = mixed.fit(_dataset(False), epochs=3, verbose=0)
        out = mixed(np.zeros((1, 3, 64, 64), np.float32), labels=np.zeros((1, 64, 64), np.int64))
        assert out.logits.dtype == tf.float32 and out.loss.dtype == tf.float32
        assert all(np.isfinite(history.history["loss"])), history.history
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_get_config_from_config_every_layer():
    model = _random_model(TFSegformerForSemanticSegmentation, tiny_config(), "seg")
    for layer in model._flatten_layers(include_self=False):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config(), type(layer).__name__
    clone = TFSegformerForSemanticSegmentation.from_config(model.get_config())
    assert clone.config == model.config


def test_keras_file_round_trip_is_bit_exact(tmp_path):
    model = _random_model(TFSegformerForSemanticSegmentation, tiny_config(), "seg", seed=7)
    x = np.random.default_rng(3).normal(size=(1, 3, 65, 71)).astype(np.float32)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")  # safe_mode=True by default
    assert type(loaded) is TFSegformerForSemanticSegmentation
    np.testing.assert_array_equal(np.asarray(loaded(x).logits), np.asarray(model(x).logits))
    state, back = model.state_dict_numpy(), loaded.state_dict_numpy()
    assert all(np.array_equal(state[k], back[k]) for k in state)


def test_saved_model_serves_any_batch_and_size(tmp_path):
    model = _random_model(TFSegformerForSemanticSegmentation, tiny_config(), "seg", seed=2)

    @tf.function(input_signature=[tf.TensorSpec([None, 3, None, None], tf.float32, name="pixel_values")])
    def serve(pixel_values):
        return {"logits": model(pixel_values, training=False).logits}

    tf.saved_model.save(model, str(tmp_path / "saved"), signatures={"serving_default": serve})
    restored = tf.saved_model.load(str(tmp_path / "saved"))
    for shape in [(1, 3, 64, 64), (2, 3, 65, 97)]:
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        got = restored.signatures["serving_default"](pixel_values=tf.constant(x))["logits"]
        np.testing.assert_allclose(np.asarray(got), np.asarray(model(x).logits), atol=1e-5)


def test_outputs_survive_tf_nest_tf_function_and_plain_saved_model_save(tmp_path):
    """Output objects rebuild from (key, value) pairs as tf.nest does, so a tf.function may return them and
    ``tf.saved_model.save(model, path)`` with Keras' default signature works after a call (it raised before)."""
    model = _random_model(TFSegformerForSemanticSegmentation, tiny_config(), "seg", seed=4)
    x = np.random.default_rng(1).normal(size=(1, 3, 64, 64)).astype(np.float32)
    want = np.asarray(model(x).logits)
    out = model(x, output_hidden_states=True)
    back = tf.nest.pack_sequence_as(out, tf.nest.flatten(out))
    assert type(back) is type(out) and list(back.keys()) == ["logits", "hidden_states"] and len(back.hidden_states) == 4
    traced = tf.function(lambda v: model(v, output_hidden_states=True))(tf.constant(x))
    assert type(traced) is type(out) and traced.loss is None
    np.testing.assert_allclose(np.asarray(traced.logits), want, atol=1e-5)
    tf.saved_model.save(model, str(tmp_path / "plain"))  # our default signature: any batch / height / width
    serve = tf.saved_model.load(str(tmp_path / "plain")).signatures["serving_default"]
    np.testing.assert_allclose(np.asarray(serve(pixel_values=tf.constant(x))["logits"]), want, atol=1e-5)
    odd = np.random.default_rng(2).normal(size=(2, 3, 65, 97)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(serve(pixel_values=tf.constant(odd))["logits"]), np.asarray(model(odd).logits), atol=1e-5)
    encoder = _random_model(TFSegformerModel, tiny_config(), "base", seed=4, data_format="channels_last")
    tf.saved_model.save(encoder, str(tmp_path / "encoder"))
    serve = tf.saved_model.load(str(tmp_path / "encoder")).signatures["serving_default"]
    nhwc = np.transpose(x, (0, 2, 3, 1))
    np.testing.assert_allclose(np.asarray(serve(pixel_values=tf.constant(nhwc))["last_hidden_state"]),
                               np.asarray(encoder(nhwc).last_hidden_state), atol=1e-5)


def test_save_pretrained_writes_hf_layout_and_loads_back(tmp_path):
    import h5py

    model = _random_model(TFSegformerForSemanticSegmentation, tiny_config(), "seg", seed=9)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["TFSegformerForSemanticSegmentation"]
    reference = fixture_path("hf/tiny-seg/tf_model.h5")
    with h5py.File(tmp_path / "tf_model.h5") as ours, h5py.File(reference) as theirs:
        assert list(ours.attrs["layer_names"]) == list(theirs.attrs["layer_names"])
        strip = lambda names: sorted((n.decode() if isinstance(n, bytes) else n).split("/", 1)[1] for n in names)  # noqa: E731
        for layer in ("segformer", "decode_head"):
            assert strip(ours[layer].attrs["weight_names"]) == strip(theirs[layer].attrs["weight_names"])
    again = TFSegformerForSemanticSegmentation.from_pretrained(tmp_path)
    state, back = model.state_dict_numpy(), again.state_dict_numpy()
    # the BN counter has no twin in HF's h5 layout; everything else (BN statistics included) travels
    assert all(np.array_equal(state[k], back[k]) for k in state if not k.endswith("num_batches_tracked"))


def test_from_pretrained_new_head_and_base_prefix():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, report = TFSegformerForSemanticSegmentation.from_pretrained(
            fixture_path("hf/tiny-seg"), num_labels=19, ignore_mismatched_sizes=True, output_loading_info=True
        )
        base = TFSegformerModel.from_pretrained(fixture_path("hf/tiny-seg"))
    assert model.config.num_labels == 19 and [k for k, _, _ in report.mismatched_keys][0] == "decode_head.classifier.weight"
    enc = base.state_dict_numpy()
    full = model.state_dict_numpy()
    assert all(np.array_equal(enc[k], full["segformer." + k]) for k in enc)


def test_decode_head_is_a_layer():
    head = TFSegformerDecodeHead(tiny_config())
    assert isinstance(head, keras.layers.Layer) and not isinstance(head, keras.Model)
    maps = [tf.zeros((1, 16 // 2**i, 16 // 2**i, c)) for i, c in enumerate(tiny_config().hidden_sizes)]
    assert tuple(head(maps).shape) == (1, 16, 16, 3)


def test_batch_norm_training_updates_follow_pytorch():
    torch = pytest.importorskip("torch")
    from segformer.tf.decode_head import TFSegformerBatchNorm

    x = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype(np.float32) * 2 + 1
    tf_bn = TFSegformerBatchNorm()
    tf_out = tf_bn(x, training=True)
    pt_bn = torch.nn.BatchNorm2d(4)
    pt_out = pt_bn(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(np.asarray(tf_out), pt_out.detach().numpy().transpose(0, 2, 3, 1), atol=1e-5)
    np.testing.assert_allclose(tf_bn.moving_variance.numpy(), pt_bn.running_var.numpy(), atol=1e-6)  # unbiased update
    np.testing.assert_allclose(tf_bn.moving_mean.numpy(), pt_bn.running_mean.numpy(), atol=1e-6)
    assert int(tf_bn.num_batches_tracked.numpy()) == int(pt_bn.num_batches_tracked) == 1


def test_bad_labels_fail_inside_tf_function():
    """Graph mode: a tf.debugging assertion with the eager error's message fails the step."""
    model = _random_model(TFSegformerForSemanticSegmentation, tiny_config(num_labels=3), "seg")
    classifier = _random_model(TFSegformerForImageClassification, tiny_config(num_labels=3), "cls")
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32))

    @tf.function
    def seg_loss(labels):
        return model(x, labels=labels).loss

    @tf.function
    def cls_loss(labels):
        return classifier(x, labels=labels).loss

    good = np.full((2, 32, 32), 255, np.int64)
    good[:, :16] = 2
    assert np.isfinite(float(seg_loss(tf.constant(good))[0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels contain values outside \[0, 3\) that are not the ignore index 255"):
        seg_loss(tf.constant(np.where(good == 2, 7, good)))
    assert np.all(np.isfinite(cls_loss(tf.constant([0, 2]))))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels contain values outside \[0, 3\)"):
        cls_loss(tf.constant([0, 3]))
