"""The mmseg decode head (``decode_head_type="mmseg"``): config field, eval fast path == plain path in both
frameworks (the fold stops at each stage's ReLU), the fold cache following weight edits, PT == TF, training.
Agreement with mmsegmentation's own numbers is in ``tests/test_conversion_mmseg.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from randomize import random_state, tiny_config
from segformer import SegformerConfig

FAST_TOLERANCE = 1e-5


def _mmseg_config(**overrides):
    return tiny_config(decode_head_type="mmseg", num_labels=5, decoder_hidden_size=24, **overrides)


def test_config_without_the_key_is_the_all_mlp_head_and_files_stay_as_they_were(tmp_path):
    default = SegformerConfig()
    assert default.decode_head_type == "mlp" and "decode_head_type" not in default.to_dict()
    mmseg = SegformerConfig(decode_head_type="mmseg")
    mmseg.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["decode_head_type"] == "mmseg"
    assert SegformerConfig.from_pretrained(tmp_path).decode_head_type == "mmseg"
    with pytest.raises(ValueError, match=r"decode_head_type must be one of \['mlp', 'mmseg'\], got 'upernet'"):
        SegformerConfig(decode_head_type="upernet")


@pytest.fixture(scope="module")
def pt_model():
    pytest.importorskip("torch")
    from segformer.pt import SegformerForSemanticSegmentation

    config = _mmseg_config()
    model = SegformerForSemanticSegmentation(config).eval()
    model.load_state_dict_numpy(random_state(config, "seg", seed=4))
    return model


def _pt_logits(model, x, fast):
    import torch

    model.use_fast_path = fast
    try:
        with torch.no_grad():
            return model(torch.from_numpy(x)).logits.numpy()
    finally:
        model.use_fast_path = True


def test_pt_fast_path_equals_plain_path(pt_model):
    x = np.random.default_rng(1).normal(size=(2, 3, 67, 93)).astype(np.float32)
    fast, plain = _pt_logits(pt_model, x, True), _pt_logits(pt_model, x, False)
    assert fast.shape == (2, 5, 17, 24)
    diff = float(np.abs(fast - plain).max())
    print(f"mmseg head PT fast vs plain max|diff| {diff:.2e}")
    assert diff <= FAST_TOLERANCE


def test_pt_fold_cache_follows_in_place_edits_of_the_stage_batch_norms(pt_model):
    import torch

    x = np.random.default_rng(2).normal(size=(1, 3, 64, 64)).astype(np.float32)
    before = _pt_logits(pt_model, x, True)  # fills the cache
    head = pt_model.decode_head
    saved = {k: v.clone() for k, v in head.state_dict().items()}
    try:
        with torch.no_grad():
            head.linear_c[1].batch_norm.running_var.mul_(3.0)
            head.linear_c[3].batch_norm.bias.add_(0.5)
        after, plain = _pt_logits(pt_model, x, True), _pt_logits(pt_model, x, False)
        assert float(np.abs(after - before).max()) > 1e-3  # the edit matters ...
        assert float(np.abs(after - plain).max()) <= FAST_TOLERANCE  # ... and the fast path saw it
    finally:
        head.load_state_dict(saved)


def test_pt_training_updates_each_stage_batch_norm_and_reaches_every_weight():
    import torch
    from segformer.pt import SegformerForSemanticSegmentation

    config = _mmseg_config()
    model = SegformerForSemanticSegmentation(config).train()
    labels = torch.randint(0, 5, (2, 64, 64))
    out = model(torch.randn(2, 3, 64, 64), labels=labels)
    out.loss.backward()
    head = model.decode_head
    assert int(head.linear_c[2].batch_norm.num_batches_tracked) == 1
    assert float(head.linear_c[2].batch_norm.running_mean.abs().sum()) > 0
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in head.parameters())
    assert isinstance(head.dropout, torch.nn.Dropout2d)  # mmseg drops whole channels


@pytest.fixture(scope="module")
def tf_model():
    pytest.importorskip("tensorflow")
    from segformer.tf import TFSegformerForSemanticSegmentation

    config = _mmseg_config()
    model = TFSegformerForSemanticSegmentation(config)
    model.load_state_dict_numpy(random_state(config, "seg", seed=4))
    return model


def test_tf_fast_path_equals_plain_path_and_pytorch(tf_model, pt_model):
    x = np.random.default_rng(1).normal(size=(2, 3, 67, 93)).astype(np.float32)
    fast = np.asarray(tf_model(x).logits)
    tf_model.use_fast_path = False
    try:
        plain = np.asarray(tf_model(x).logits)
    finally:
        tf_model.use_fast_path = True
    diffs = {"tf fast vs plain": float(np.abs(fast - plain).max()),
             "tf vs pt (plain)": float(np.abs(plain - _pt_logits(pt_model, x, False)).max())}
    print("mmseg head", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert diffs["tf fast vs plain"] <= FAST_TOLERANCE and diffs["tf vs pt (plain)"] <= 1e-4


def test_tf_state_round_trips_the_stage_batch_norms(tf_model, pt_model):
    ours = tf_model.state_dict_numpy()
    theirs = {k: v.numpy() for k, v in pt_model.state_dict().items()}
    assert set(ours) == set(theirs)
    for name in ("decode_head.linear_c.1.batch_norm.running_var", "decode_head.linear_c.3.batch_norm.num_batches_tracked",
                 "decode_head.linear_c.0.proj.weight"):
        np.testing.assert_array_equal(ours[name], theirs[name])


def test_tf_training_updates_each_stage_batch_norm_and_reaches_every_weight():
    tf = pytest.importorskip("tensorflow")
    from segformer.tf import TFSegformerForSemanticSegmentation

    config = _mmseg_config()
    model = TFSegformerForSemanticSegmentation(config)
    model.load_state_dict_numpy(random_state(config, "seg", seed=6))
    before = model.state_dict_numpy()
    x = np.random.default_rng(3).normal(size=(2, 3, 64, 64)).astype(np.float32)
    labels = np.random.default_rng(4).integers(0, 5, size=(2, 64, 64))
    head = model.decode_head
    with tf.GradientTape() as tape:
        loss = model(x, labels=labels, training=True).loss
    grads = tape.gradient(loss, head.trainable_variables)
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
    after = model.state_dict_numpy()
    assert int(after["decode_head.linear_c.2.batch_norm.num_batches_tracked"]) == int(before["decode_head.linear_c.2.batch_norm.num_batches_tracked"]) + 1
    assert not np.array_equal(after["decode_head.linear_c.2.batch_norm.running_mean"], before["decode_head.linear_c.2.batch_norm.running_mean"])
    import keras

    assert isinstance(head.dropout, keras.layers.SpatialDropout2D)  # mmseg drops whole channels
