"""Drop-in for transformers, the last of its SegFormer test behaviours, each compared with transformers 4.57.6 (the
test oracle, never imported by the library): re-initialising only a mismatched head, reentrant gradient checkpointing,
config dtype / label round trips and generic ``PretrainedConfig`` attributes, the meta-device error."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from randomize import random_state, tiny_config
from segformer.common.model.config import SegformerConfig

torch = pytest.importorskip("torch")
from segformer.pt import SegformerForSemanticSegmentation  # noqa: E402


def _hf_config(transformers, config: SegformerConfig):
    """transformers' twin of ``config`` (our extra key left out)."""
    fields = {k: v for k, v in config.to_dict().items() if k not in ("patch_layer_norm_eps", "segformer_version")}
    return transformers.SegformerConfig(**fields)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A transformers-written folder: random weights, 5 labels."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    model = transformers.SegformerForSemanticSegmentation(_hf_config(transformers, tiny_config(num_labels=5)))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    model.save_pretrained(folder)
    return folder, {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------- mismatched head
def _changed(model_state: dict, saved: dict) -> list[str]:
    return sorted(k for k, v in saved.items() if tuple(model_state[k].shape) != tuple(v.shape)
                  or not np.array_equal(np.asarray(model_state[k]), v.numpy()))


def test_new_num_labels_reinitialises_only_the_classifier_as_transformers(hf_folder):
    transformers = pytest.importorskip("transformers")
    folder, saved = hf_folder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours, report = SegformerForSemanticSegmentation.from_pretrained(
            folder, num_labels=3, ignore_mismatched_sizes=True, output_loading_info=True)
    theirs, info = transformers.SegformerForSemanticSegmentation.from_pretrained(
        folder, num_labels=3, ignore_mismatched_sizes=True, output_loading_info=True)
    expected = ["decode_head.classifier.bias", "decode_head.classifier.weight"]
    assert _changed(theirs.state_dict(), saved) == expected
    assert _changed(ours.state_dict(), saved) == expected  # every other tensor (BN statistics too) kept
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert report[key] == info[key], key
    assert [(k, a) for k, a, _ in report.mismatched_keys] == [
        ("decode_head.classifier.weight", tuple(saved["decode_head.classifier.weight"].shape)),
        ("decode_head.classifier.bias", (5,))]
    message = " ".join(str(w.message) for w in caught)
    assert "newly initialized because the shapes did not match" in message and "decode_head.classifier.weight" in message
    assert ours.config.id2label == theirs.config.id2label and ours.config.num_labels == 3


def test_tf_new_num_labels_reinitialises_only_the_classifier(hf_folder):
    pytest.importorskip("tensorflow")
    from segformer.tf import TFSegformerForSemanticSegmentation

    folder, saved = hf_folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, report = TFSegformerForSemanticSegmentation.from_pretrained(
            folder, num_labels=3, ignore_mismatched_sizes=True, output_loading_info=True)
    state = model.state_dict_numpy() if hasattr(model, "state_dict_numpy") else None
    assert state is not None
    assert _changed(state, saved) == ["decode_head.classifier.bias", "decode_head.classifier.weight"]
    assert report["mismatched_keys"] == ["decode_head.classifier.bias", "decode_head.classifier.weight"]


# ---------------------------------------------------------------------------------- gradient checkpointing
@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_gives_every_weight_its_gradient(use_reentrant):
    """transformers makes the checkpointed segment's input require grad for reentrant checkpointing; without it the
    first stage (patch embedding included) gets no gradient at all."""
    model = SegformerForSemanticSegmentation(tiny_config(drop_path_rate=0.1, classifier_dropout_prob=0.1))
    model.load_state_dict_numpy(random_state(model.config, "semantic_segmentation", seed=1))
    model.train()
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (2, 32, 32), generator=torch.Generator().manual_seed(1))

    def grads() -> dict:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)  # same dropout / drop-path draws (checkpointing replays the RNG state)
        model(pixel_values=pixels, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    checkpointed = grads()
    assert sorted(checkpointed) == sorted(plain) == sorted(n for n, _ in model.named_parameters())
    assert "segformer.encoder.patch_embeddings.0.proj.weight" in checkpointed
    worst = max(float((plain[n] - checkpointed[n]).abs().max()) for n in plain)
    assert worst <= 1e-6, f"max |diff| checkpointed vs plain gradients: {worst}"
    assert not pixels.requires_grad  # the caller's tensor is left alone


# ------------------------------------------------------------------------------------------- meta device
def test_meta_device_message_is_transformers_one(hf_folder, tmp_path):
    transformers = pytest.importorskip("transformers")
    folder, _ = hf_folder
    with torch.device("meta"):
        with pytest.raises(RuntimeError) as theirs:
            transformers.SegformerForSemanticSegmentation.from_pretrained(folder)
        with pytest.raises(RuntimeError) as ours:
            SegformerForSemanticSegmentation.from_pretrained(folder)
        empty = SegformerForSemanticSegmentation(tiny_config())  # as transformers: building on meta works
    first_sentence = str(theirs.value).split("\n")[0]
    assert first_sentence.startswith("You are using `from_pretrained` with a meta device context manager")
    assert str(ours.value).split("\n")[0] == first_sentence
    assert empty.decode_head.classifier.weight.is_meta


# ------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("key", ["dtype", "torch_dtype"])
@pytest.mark.parametrize("value", ["float16", "torch.float16", "bfloat16"])
def test_config_dtype_round_trips_as_transformers(key, value):
    transformers = pytest.importorskip("transformers")
    given = getattr(torch, value.removeprefix("torch.")) if value.startswith("torch.") else value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.SegformerConfig(**{key: given})
    ours = SegformerConfig(**{key: given})
    theirs_dict, ours_dict = theirs.to_dict(), json.loads(ours.to_json_string())  # torch.float16 used to break JSON
    assert ours_dict["dtype"] == theirs_dict["dtype"] == value.removeprefix("torch.")
    assert "torch_dtype" not in ours_dict and theirs_dict.get("torch_dtype") is None
    assert str(theirs.dtype) == f"torch.{ours.dtype}" == f"torch.{ours.torch_dtype}"  # ours: the name (framework-free)
    assert SegformerConfig.from_dict(ours_dict).dtype == ours.dtype
    assert SegformerConfig.from_dict(theirs_dict).dtype == ours.dtype
    assert SegformerConfig(dtype=np.float16).dtype == "float16"
    with pytest.raises(ValueError, match="dtype must be a dtype name"):
        SegformerConfig(dtype=3.5)


def test_old_torch_dtype_key_is_written_as_dtype():
    ours = SegformerConfig.from_dict({"model_type": "segformer", "torch_dtype": "float32"})
    assert ours.dtype == "float32" and ours.to_dict()["dtype"] == "float32" and "torch_dtype" not in ours.to_dict()


@pytest.mark.parametrize("ids", [{"cat": 0, "dog": 1}, {"cat": "0", "dog": "1"}])
def test_config_label_maps_round_trip(ids):
    """String ids in ``label2id`` (a hand-written config.json) become ints: transformers keeps the strings, which then
    fail as indices (a deliberate fix, README "Coming from transformers"); everything else as transformers."""
    transformers = pytest.importorskip("transformers")
    id2label = {"0": "cat", "1": "dog"}
    theirs = transformers.SegformerConfig(id2label=id2label, label2id=ids)
    ours = SegformerConfig(id2label=id2label, label2id=ids)
    assert ours.id2label == theirs.id2label == {0: "cat", 1: "dog"}
    assert ours.label2id == {k: int(v) for k, v in theirs.label2id.items()} == {"cat": 0, "dog": 1}
    assert ours.num_labels == theirs.num_labels == 2
    back = SegformerConfig.from_dict(json.loads(ours.to_json_string()))
    assert back.id2label == ours.id2label and back.label2id == ours.label2id
    assert transformers.SegformerConfig.from_dict(json.loads(ours.to_json_string())).id2label == theirs.id2label


def test_to_dict_and_from_dict_agree_with_transformers():
    transformers = pytest.importorskip("transformers")
    ours = tiny_config(num_labels=4, output_hidden_states=True)
    theirs = _hf_config(transformers, ours)
    written = theirs.to_diff_dict()  # what transformers' save_pretrained writes
    mine = ours.to_dict()
    assert {k: mine[k] for k in written if k != "transformers_version"} == {
        k: v for k, v in written.items() if k != "transformers_version"}
    assert set(mine) - set(theirs.to_dict()) == {"num_labels", "patch_layer_norm_eps", "segformer_version"}
    back = SegformerConfig.from_dict(theirs.to_dict())
    assert back.to_diff_dict().items() >= {k: v for k, v in written.items() if k not in (
        "transformers_version", "layer_norm_eps")}.items()
    assert json.loads(theirs.to_json_string())["id2label"] == json.loads(ours.to_json_string())["id2label"]


def test_every_generic_pretrained_config_attribute_reads_as_transformers():
    transformers = pytest.importorskip("transformers")
    theirs, ours = transformers.SegformerConfig(), SegformerConfig()
    # transformers' config-object helpers: AutoConfig machinery and multi-modal constructors, not read from a config
    not_ours = {"dict_dtype_to_str", "from_text_audio_configs", "from_text_vision_configs", "get_config_dict",
                "register_for_auto_class"}
    missing, different = [], []
    for name in dir(theirs):
        if name.startswith("_") or name in not_ours:
            continue
        value = getattr(theirs, name)
        if not hasattr(ours, name):
            missing.append(name)
        elif not callable(value) and name != "dtype" and getattr(ours, name) != value:
            different.append((name, value, getattr(ours, name)))
    assert not missing and not different
    assert ours.get_text_config() is ours
    for name in ("is_encoder_decoder", "pruned_heads", "chunk_size_feed_forward", "tie_word_embeddings"):
        assert name not in ours.to_dict()  # defaults are never written (transformers leaves them out too)
    ours.pruned_heads = {"1": [0]}
    assert ours.pruned_heads == {1: [0]}
    assert SegformerConfig.from_dict(json.loads(ours.to_json_string())).pruned_heads == {1: [0]}
    ours.pruned_heads[2] = [1]  # a default or read value is a copy, as the JSON-written one
    assert SegformerConfig().pruned_heads == {}


# ------------------------------------------------------------------------------------------- processor
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("channels", [1, 2, 4])
def test_processor_keeps_channels_with_scalar_mean_and_std_as_transformers(layout, channels):
    transformers = pytest.importorskip("transformers")
    from segformer.common.images.image_processing import SegformerImageProcessor

    image = np.random.default_rng(channels).integers(0, 256, size=(20, 24, channels), dtype=np.uint8)
    if layout == "channels_first":
        image = image.transpose(2, 0, 1)
    kwargs = dict(size={"height": 16, "width": 16}, image_mean=0.5, image_std=0.25)
    theirs = transformers.SegformerImageProcessor(**kwargs)(image, return_tensors="np", input_data_format=layout)
    ours = SegformerImageProcessor(**kwargs)(image, return_tensors="np", input_data_format=layout)
    assert ours.pixel_values.shape == theirs.pixel_values.shape == (1, channels, 16, 16)
    np.testing.assert_allclose(ours.pixel_values, theirs.pixel_values, atol=1e-6)
    # the default 3-value ImageNet statistics cannot take 4 channels: transformers fails, ours drops alpha (RGB)
    if channels == 4:
        assert SegformerImageProcessor(size=16)(image, return_tensors="np", input_data_format=layout).pixel_values.shape == (1, 3, 16, 16)


# ------------------------------------------------------------------------------------------- Keras
# transformers' TF classes cannot be built beside Keras 3 (they need tf-keras), so these compare with the behaviour
# of transformers' TF code (modeling_tf_utils: input_processing, input_signature, serving, serving_output) through
# our PyTorch twin or numpy.
@pytest.fixture(scope="module")
def tf_models():
    pytest.importorskip("tensorflow")
    from segformer.tf import TFSegformerForImageClassification, TFSegformerForSemanticSegmentation, TFSegformerModel

    config = tiny_config(num_labels=4)
    models = {}
    for cls in (TFSegformerModel, TFSegformerForSemanticSegmentation, TFSegformerForImageClassification):
        model = cls(config)
        model.build()
        model.load_state_dict_numpy(random_state(config, model._task, seed=2))
        models[cls._task] = model
    pixels = np.random.default_rng(3).normal(size=(2, 3, 32, 32)).astype(np.float32)
    return models, pixels


def _main(output):
    return np.asarray(output["logits"] if "logits" in output else output["last_hidden_state"])


@pytest.mark.parametrize("task", ["base", "semantic_segmentation", "image_classification"])
def test_tf_inputs_packed_in_the_first_argument(tf_models, task):
    models, pixels = tf_models
    model = models[task]
    model.use_fast_path = False  # every call on the plain path: equal to the last bit
    try:
        expected = _main(model(pixels))
        for packed in ((pixels,), [pixels], {"pixel_values": pixels}):
            np.testing.assert_array_equal(_main(model(packed)), expected)
        with_hidden = model({"pixel_values": pixels, "output_hidden_states": True})
        assert len(with_hidden.hidden_states) == 4
        with pytest.raises(ValueError, match="pixel_values"):
            model({"pixel_values": pixels, "pixels": pixels})
        if task != "base":
            labels = (np.arange(2) % 4) if task == "image_classification" else np.random.default_rng(0).integers(0, 4, (2, 32, 32))
            loss = np.asarray(model(pixels, labels=labels).loss)
            np.testing.assert_array_equal(np.asarray(model((pixels, labels)).loss), loss)
            np.testing.assert_array_equal(np.asarray(model({"pixel_values": pixels, "labels": labels}).loss), loss)
    finally:
        model.use_fast_path = True


def test_tf_input_signature_serving_and_serving_output(tf_models, task="semantic_segmentation"):
    import tensorflow as tf

    models, pixels = tf_models
    model = models[task]
    spec = model.input_signature["pixel_values"]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, 3, None, None]  # transformers: (None, 3, 512, 512)
    served = model.serving({"pixel_values": tf.constant(pixels)})
    expected = model(pixels, output_hidden_states=True)
    key = "logits" if task != "base" else "last_hidden_state"
    assert list(served.keys()) == [key]  # hidden states dropped: the config does not ask for them
    np.testing.assert_allclose(np.asarray(served[key]), np.asarray(expected[key]), atol=1e-5)
    model.config.output_hidden_states = True
    try:
        kept = model.serving_output(expected)
    finally:
        model.config.output_hidden_states = False
    assert isinstance(kept.hidden_states, tuple) and len(kept.hidden_states) == 4  # stage sizes differ: not stacked
    assert model.serving_output((expected[key],))[0] is expected[key]  # not an output object: as it is


@pytest.mark.slow
def test_tf_serving_concrete_function_is_a_savedmodel_signature(tf_models, tmp_path):
    """transformers' ``save_pretrained(saved_model=True)`` exports ``serving.get_concrete_function(input_signature)``."""
    import tensorflow as tf

    models, pixels = tf_models
    model = models["semantic_segmentation"]
    concrete = model.serving.get_concrete_function(model.input_signature)
    tf.saved_model.save(model, str(tmp_path / "sm"), signatures=concrete)
    loaded = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    np.testing.assert_allclose(loaded(pixel_values=tf.constant(pixels))["logits"].numpy(), _main(model(pixels)), atol=1e-5)


def test_tf_base_model_compiles_and_predicts(tf_models):
    from segformer.tf import TFSegformerModel

    models, pixels = tf_models
    model = TFSegformerModel(models["base"].config)
    model.build()
    model.set_weights(models["base"].get_weights())
    model.compile(optimizer="adam")
    np.testing.assert_allclose(model.predict(pixels, verbose=0), _main(models["base"](pixels)), atol=1e-5)


def test_tf_classification_fit_with_float_labels_in_a_dict(tf_models):
    """transformers' TF classification loss is SparseCategoricalCrossentropy for any label dtype: float class ids
    1.0, 3.0 are classes 1 and 3."""
    import keras

    models, pixels = tf_models
    model = models["image_classification"]
    logits = np.asarray(model(pixels).logits, dtype=np.float64)
    labels = np.array([1.0, 3.0], np.float32)
    log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    expected = -np.mean(log_probs[np.arange(2), labels.astype(int)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), run_eagerly=True)  # no step: evaluate and fit see the same weights
    for data in ({"pixel_values": pixels, "labels": labels}, {"pixel_values": pixels, "labels": labels.astype(np.int64)}):
        np.testing.assert_allclose(model.evaluate(data, verbose=0), expected, rtol=1e-5)
    history = model.fit({"pixel_values": pixels, "labels": labels}, epochs=1, batch_size=2, verbose=0).history
    np.testing.assert_allclose(history["loss"][0], expected, rtol=1e-5)
