"""One specification for every model class of both frameworks: each case runs once per backend
(``pt`` / ``tf``) and once per task of the task table (``segformer.common.model.weights.TASK_CLASSES``).

Covered: the reference fixtures' logits (fast and plain path), tuple == dict outputs, fast path == plain path
on random weights, dropout / drop path only in training, save / load round trip, a new head on a base
checkpoint, bad labels, and every variant
name of ``segformer.common.model.variants.variant_names()`` building the architecture of its table entry.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import fixture_path
from randomize import random_state, tiny_config
from segformer.common.model.config import SegformerConfig
from segformer.common.model.variants import TINY, VARIANTS, variant_names
from segformer.common.model.weights import TASK_CLASSES, count_parameters

TOL = 1e-5
FIXTURES = {"base": "tiny-base", "semantic_segmentation": "tiny-seg", "image_classification": "tiny-cls"}
SHORT = {"base": "base", "semantic_segmentation": "seg", "image_classification": "cls"}


class _Torch:
    name = "pt"

    def __init__(self) -> None:
        import torch

        import segformer.pt as package

        self.torch, self.package = torch, package

    def model_class(self, task):
        return getattr(self.package, TASK_CLASSES[task].pt_class)

    def build(self, task, config, seed=0):
        model = self.model_class(task)(config)
        model.load_state_dict_numpy(random_state(config, SHORT[task], seed=seed))
        return model.eval()

    def call(self, model, pixel_values, **kwargs):
        if "labels" in kwargs:
            kwargs["labels"] = self.torch.from_numpy(kwargs["labels"])
        with self.torch.no_grad():
            return model(self.torch.from_numpy(pixel_values), **kwargs)

    def call_training(self, model, pixel_values):
        model.train()
        try:
            return self.call(model, pixel_values)
        finally:
            model.eval()

    def numpy(self, value):
        return value.detach().numpy()


class _Keras:
    name = "tf"

    def __init__(self) -> None:
        pytest.importorskip("tensorflow")
        import segformer.tf as package

        self.package = package

    def model_class(self, task):
        return getattr(self.package, TASK_CLASSES[task].tf_class)

    def build(self, task, config, seed=0):
        model = self.model_class(task)(config)
        model.build()
        model.load_state_dict_numpy(random_state(config, SHORT[task], seed=seed))
        return model

    def call(self, model, pixel_values, **kwargs):
        return model(pixel_values, **kwargs)

    def call_training(self, model, pixel_values):
        return model(pixel_values, training=True)

    def numpy(self, value):
        return np.asarray(value)


@pytest.fixture(params=["pt", "tf"], scope="module")
def backend(request):
    if request.param == "pt":
        pytest.importorskip("torch")
        return _Torch()
    return _Keras()


TASKS = sorted(TASK_CLASSES)


def _main_output(task, out):
    return out.last_hidden_state if task == "base" else out.logits


@pytest.mark.parametrize("task", TASKS)
def test_fixtures_reproduce_the_reference_outputs(backend, task):
    folder = fixture_path(f"hf/{FIXTURES[task]}")
    model = backend.model_class(task).from_pretrained(folder / "model.safetensors")
    expected = np.load(folder / "expected.npz")
    key = "last_hidden_state" if task == "base" else "logits"
    for fast in (True, False):
        model.use_fast_path = fast
        for inp in ("a", "b"):
            if f"{inp}_pt_{key}" not in expected.files:
                continue
            got = backend.numpy(_main_output(task, backend.call(model, expected[f"{inp}_pixel_values"])))
            assert got.shape == expected[f"{inp}_pt_{key}"].shape
            assert float(np.abs(got - expected[f"{inp}_pt_{key}"]).max()) <= TOL, (backend.name, task, inp, fast)


@pytest.mark.parametrize("task", TASKS)
def test_tuple_equals_dict_and_fast_equals_plain(backend, task):
    config = tiny_config(num_labels=3)
    model = backend.build(task, config, seed=1)
    pixel_values = np.random.default_rng(0).standard_normal((2, 3, 64, 48)).astype(np.float32)
    as_dict = backend.call(model, pixel_values, return_dict=True)
    as_tuple = backend.call(model, pixel_values, return_dict=False)
    assert isinstance(as_tuple, tuple)
    # TF runs its second eager call as a cached graph: equal within float rounding, not bit for bit
    np.testing.assert_allclose(backend.numpy(as_tuple[0]), backend.numpy(_main_output(task, as_dict)), atol=1e-6, rtol=0)
    model.use_fast_path = False
    plain = backend.numpy(_main_output(task, backend.call(model, pixel_values)))
    np.testing.assert_allclose(backend.numpy(_main_output(task, as_dict)), plain, atol=TOL, rtol=0)


@pytest.mark.parametrize("task", TASKS)
def test_dropout_and_drop_path_act_only_in_training(backend, task):
    """Every stochastic layer on (hidden / attention / classifier dropout, stochastic depth): inference equals the
    same weights with all of them off; training calls differ from each other, and not without them."""
    stochastic = dict(depths=[2, 1, 1, 1], hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5,
                      classifier_dropout_prob=0.5, drop_path_rate=0.5)
    plain = {key: 0.0 for key in stochastic if key != "depths"}
    pixel_values = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)
    model = backend.build(task, tiny_config(**stochastic), seed=6)
    reference = backend.build(task, tiny_config(**dict(stochastic, **plain)), seed=6)
    inference = [backend.numpy(_main_output(task, backend.call(model, pixel_values))) for _ in range(2)]
    expected = backend.numpy(_main_output(task, backend.call(reference, pixel_values)))
    for got in inference:
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    training = [backend.numpy(_main_output(task, backend.call_training(model, pixel_values))) for _ in range(2)]
    assert float(np.abs(training[0] - training[1]).max()) > 1e-3, (backend.name, task, "dropout inactive in training")
    steady = [backend.numpy(_main_output(task, backend.call_training(reference, pixel_values))) for _ in range(2)]
    np.testing.assert_allclose(steady[0], steady[1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("task", TASKS)
def test_save_load_round_trip(backend, task, tmp_path):
    config = tiny_config(num_labels=3)
    model = backend.build(task, config, seed=2)
    pixel_values = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    before = backend.numpy(_main_output(task, backend.call(model, pixel_values)))
    model.save_pretrained(tmp_path / "saved")
    loaded = backend.model_class(task).from_pretrained(tmp_path / "saved")
    after = backend.numpy(_main_output(task, backend.call(loaded, pixel_values)))
    np.testing.assert_allclose(after, before, atol=1e-6, rtol=0)


def test_new_head_on_a_base_checkpoint(backend, tmp_path):
    config = tiny_config(num_labels=3)
    backend.build("base", config, seed=3).save_pretrained(tmp_path / "base")
    model = backend.model_class("semantic_segmentation").from_pretrained(tmp_path / "base", num_labels=5)
    pixel_values = np.zeros((1, 3, 32, 32), np.float32)
    assert backend.numpy(backend.call(model, pixel_values).logits).shape == (1, 5, 8, 8)


def test_bad_labels_are_a_clear_error(backend):
    model = backend.build("semantic_segmentation", tiny_config(num_labels=3), seed=4)
    pixel_values = np.zeros((1, 3, 32, 32), np.float32)
    labels = np.array([[[0, 7], [1, 255]]], np.int64)
    with pytest.raises(ValueError, match=r"labels contain values \[7\] outside \[0, 3\) that are not the ignore index 255"):
        backend.call(model, pixel_values, labels=labels)


@pytest.mark.parametrize("name", [n for n in variant_names() if n in ("tiny", "b0")]
                         + [pytest.param(n, marks=pytest.mark.slow) for n in variant_names() if n not in ("tiny", "b0")])
def test_every_variant_builds_its_table_architecture(backend, name):
    config = SegformerConfig.from_variant(name, num_labels=4)
    entry = TINY if name == "tiny" else VARIANTS[name]
    assert config.hidden_sizes == entry["hidden_sizes"] and config.depths == entry["depths"]
    model = backend.model_class("semantic_segmentation")(config)
    if backend.name == "tf":
        model.build()
    assert model.num_parameters(only_trainable=True) == count_parameters(config, "semantic_segmentation")
