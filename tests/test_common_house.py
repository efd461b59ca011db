"""Framework-free rules written once in ``segformer/common`` and used by both frameworks:
the data order, the variant names, the (h, w) size syntax, the host RNG state."""

from __future__ import annotations

import random

import numpy as np
import pytest

from segformer.common.training.batches import global_batches, rank_batches


# ---------------------------------------------------------------------------------------------- data order


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]


def test_global_batches_are_numpy_permutations_of_seed_and_epoch():
    batches = _take(global_batches(10, 4, seed=0), 5)  # 2 per epoch, the last 2 items of each epoch dropped
    for k, batch in enumerate(batches):
        epoch = k // 2
        order = np.random.default_rng([0, epoch]).permutation(10)  # independent: the documented rule
        assert batch == [(epoch, int(i)) for i in order[(k % 2) * 4 : (k % 2 + 1) * 4]]


def test_rank_batches_cut_rows_of_the_global_batch():
    full = _take(global_batches(20, 4, seed=3), 12)
    ranks = [_take(rank_batches(20, 2, seed=3, rank=r, world_size=2), 12) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == full
    assert _take(rank_batches(20, 4, seed=3, start=7), 5) == full[7:12]
    with pytest.raises(ValueError, match="rank"):
        next(rank_batches(20, 2, seed=3, rank=2, world_size=2))


def test_pt_and_tf_draw_the_same_batches_for_the_same_seed():
    pytest.importorskip("torch")
    tf_data = pytest.importorskip("segformer.tf.data")
    from segformer.pt.data import TrainBatchSampler

    for seed in (0, 7):
        pt = _take(iter(TrainBatchSampler(10, 2, seed=seed)), 11)
        tf = _take(tf_data.global_batches(10, 2, seed=seed), 11)
        assert pt == tf
        pt_ranks = [_take(iter(TrainBatchSampler(10, 1, seed=seed, rank=r, world_size=2)), 11) for r in range(2)]
        assert [a + b for a, b in zip(*pt_ranks)] == tf


# ---------------------------------------------------------------------------------------------- variant names


def test_one_variant_parser_serves_config_and_both_build_models():
    from segformer.common.model.config import SegformerConfig
    from segformer.common.model.variants import TINY, VARIANTS, parse_variant, variant_names

    assert variant_names() == [*VARIANTS, "tiny"]
    for name in variant_names():
        for spelled in (name, name.upper(), f"mit-{name}", f"mit_{name}", f"segformer-{name}"):
            assert parse_variant(spelled) == name
    for other in ("b6", "mit-", "nvidia/mit-b0", "b0-ade", "", None, 3):
        assert parse_variant(other) is None
    config = SegformerConfig.from_variant("tiny", num_labels=5)
    assert (config.depths, config.hidden_sizes, config.num_attention_heads) == (
        TINY["depths"], TINY["hidden_sizes"], TINY["num_attention_heads"])
    with pytest.raises(ValueError, match=r"unknown variant 'b9'.*'tiny'"):
        SegformerConfig.from_variant("b9")

    pytest.importorskip("torch")
    from segformer.pt.training import build_model

    model = build_model("mit_b0", num_labels=3)
    assert model.config.hidden_sizes == VARIANTS["b0"]["hidden_sizes"] and model.config.num_labels == 3
    assert build_model("tiny", num_labels=2).config.hidden_sizes == TINY["hidden_sizes"]
    with pytest.raises(ValueError, match="neither a variant.*tiny"):
        build_model("b9")


def test_tf_build_model_reads_the_same_variant_names():
    pytest.importorskip("tensorflow")
    from segformer.common.model.variants import TINY
    from segformer.tf.training import build_model

    model = build_model("segformer_tiny", num_labels=2, crop_size=(32, 32))
    assert model.config.hidden_sizes == TINY["hidden_sizes"] and model.config.num_labels == 2


# ---------------------------------------------------------------------------------------------- sizes


def test_one_size_syntax():
    from segformer.common.base.sizes import parse_size, parse_sizes

    for text in ("64x32", "64X32", "64,32", " 64 , 32 ", (64, 32)):
        assert parse_size(text) == (64, 32)
    assert parse_size("48") == (48, 48)
    for bad in ("0x4", "4x", "axb", "1,2,3", "-4"):
        with pytest.raises(ValueError, match="--img-scale"):
            parse_size(bad, "--img-scale")
    assert parse_sizes("512x512, 64X32") == [(512, 512), (64, 32)]
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        parse_sizes("512")


def test_bench_pairs_use_the_size_parser():
    from segformer.commands.bench import _pairs

    assert _pairs("b0@64x32,tiny@16") == [("b0", (64, 32)), ("tiny", (16, 16))]
    with pytest.raises(ValueError, match="b0@0x4"):
        _pairs("b0@0x4")


# ---------------------------------------------------------------------------------------------- host RNG state


def test_host_rng_state_round_trip():
    import json

    from segformer.common.base.random_state import host_rng_state, set_host_rng_state

    np.random.seed(11)
    random.seed(11)
    np.random.standard_normal()  # a cached gaussian in the state
    saved = json.loads(json.dumps(host_rng_state()))  # plain values only
    expected = (np.random.standard_normal(4).tolist(), random.random())
    np.random.seed(0)
    random.seed(0)
    set_host_rng_state(saved)
    assert (np.random.standard_normal(4).tolist(), random.random()) == expected


# ---------------------------------------------------------------------------------------------- shared rules


def test_head_fold_equals_the_plain_head_in_numpy():
    from segformer.common.model.head_fold import fold_decode_head

    rng = np.random.default_rng(0)
    d, channels = 4, [3, 5, 6, 2]
    n = len(channels)
    fuse = rng.standard_normal((d, n * d))
    proj = [rng.standard_normal((d, c)) for c in channels]
    bias = [rng.standard_normal(d) for _ in channels]
    gamma, beta, mean = rng.standard_normal(d), rng.standard_normal(d), rng.standard_normal(d)
    var = rng.uniform(0.5, 2.0, d)
    xs = [rng.standard_normal(c) for c in channels]  # one position, upsampling is the identity here
    concat = np.concatenate([proj[i] @ xs[i] + bias[i] for i in reversed(range(n))])  # stage n..1
    plain = (fuse @ concat - mean) / np.sqrt(var + 1e-5) * gamma + beta
    weights, shift = fold_decode_head(fuse, proj, bias, gamma, beta, mean, var, 1e-5)
    np.testing.assert_allclose(sum(w @ x for w, x in zip(weights, xs)) + shift, plain, rtol=1e-12, atol=1e-12)


def test_label_range_rule():
    from segformer.common.model.losses import invalid_labels, label_range_message, segmentation_label_bound

    labels = np.array([0, 2, 3, 255, -1, 7])
    assert invalid_labels(labels, 3, 255).tolist() == [False, False, True, False, True, True]
    assert segmentation_label_bound(1) == 2 and segmentation_label_bound(5) == 5
    assert label_range_message(3, 255, [3, 7]) == (
        "labels contain values [3, 7] outside [0, 3) that are not the ignore index 255")


def test_pixel_shape_rules():
    from segformer.common.model.config import SegformerConfig
    from segformer.common.model.pixel_values import check_pixel_shape

    config = SegformerConfig.from_variant("tiny")
    check_pixel_shape((1, 3, 64, 64), config)
    check_pixel_shape((None, 64, 64, 3), config, "channels_last")
    with pytest.raises(ValueError, match=r"4 dimensions \(batch, height, width, channels\)"):
        check_pixel_shape((3, 64, 64), config, "channels_last")
    with pytest.raises(ValueError, match="has 4 channels in dimension 1"):
        check_pixel_shape((1, 4, 64, 64), config)
    with pytest.raises(ValueError, match="must not be empty"):
        check_pixel_shape((0, 3, 64, 64), config)
    with pytest.raises(ValueError, match="too small"):
        check_pixel_shape((1, 3, 8, 8), config)


def test_state_key_rule():
    from segformer.common.model.weights import check_state_keys

    check_state_keys(["a"], ["a", "b"], strict=False)
    with pytest.raises(KeyError, match=r"unknown keys \['c'\], missing keys \['b'\]"):
        check_state_keys(["a", "c"], ["a", "b"])


def test_tf_model_refuses_a_config_that_is_no_config():
    pytest.importorskip("tensorflow")
    from segformer.tf import TFSegformerModel

    with pytest.raises(TypeError, match="TFSegformerModel: config must be a SegformerConfig or a config dict, got int"):
        TFSegformerModel(5)
