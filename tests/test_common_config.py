"""SegformerConfig: HF-compatible fields and defaults, round trips, the epsilon rule, validation."""

from __future__ import annotations

import json

import pytest

from conftest import fixture_path
from segformer import SegformerConfig
from segformer.common.model.config import HF_LAYER_NORM_EPS

# transformers 4.57.6 SegformerConfig defaults
HF_DEFAULTS = {
    "num_channels": 3,
    "num_encoder_blocks": 4,
    "depths": [2, 2, 2, 2],
    "sr_ratios": [8, 4, 2, 1],
    "hidden_sizes": [32, 64, 160, 256],
    "patch_sizes": [7, 3, 3, 3],
    "strides": [4, 2, 2, 2],
    "num_attention_heads": [1, 2, 5, 8],
    "mlp_ratios": [4, 4, 4, 4],
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "classifier_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "drop_path_rate": 0.1,
    "layer_norm_eps": 1e-6,
    "decoder_hidden_size": 256,
    "semantic_loss_ignore_index": 255,
    "reshape_last_stage": True,
    "num_labels": 2,
}


def test_defaults_match_hugging_face():
    config = SegformerConfig()
    for name, value in HF_DEFAULTS.items():
        assert getattr(config, name) == value, name
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1}
    assert config.patch_layer_norm_eps == 1e-5


def test_hf_config_json_loads_with_hf_numerics_and_keeps_unknown_keys():
    path = fixture_path("hf/small-seg/config.json")
    raw = json.loads(path.read_text())
    assert raw["layer_norm_eps"] == 1e-6  # what Hugging Face writes ...
    config = SegformerConfig.from_pretrained(path.parent)
    assert config.layer_norm_eps == HF_LAYER_NORM_EPS  # ... and what it computes with
    assert config.patch_layer_norm_eps == HF_LAYER_NORM_EPS
    assert config.mlp_ratios == [4, 4, 2, 4] and config.num_labels == 7
    assert config.extra["dtype"] == "float32"  # unknown keys kept, reachable as attributes
    assert config.dtype == "float32"
    assert config.id2label[6] == "class_6"


def test_round_trip_is_exact(tmp_path):
    config = SegformerConfig.from_variant("b2", num_labels=19, layer_norm_eps=1e-6, some_custom_key=[1, 2])
    config.save_pretrained(tmp_path)
    again = SegformerConfig.from_pretrained(tmp_path)
    assert again == config
    assert again.layer_norm_eps == 1e-6 and again.some_custom_key == [1, 2]
    assert SegformerConfig.from_dict(json.loads(config.to_json_string())) == config
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "segformer"


def test_from_variant_table():
    b3 = SegformerConfig.from_variant("b3")
    assert b3.depths == [3, 4, 18, 3] and b3.hidden_sizes == [64, 128, 320, 512] and b3.decoder_hidden_size == 768
    assert SegformerConfig.from_variant("mit-b0").hidden_sizes == [32, 64, 160, 256]
    with pytest.raises(ValueError, match=r"unknown variant 'b7'.*'b0', 'b1', 'b2', 'b3', 'b4', 'b5'"):
        SegformerConfig.from_variant("b7")


def test_num_labels_regenerates_labels():
    config = SegformerConfig(num_labels=3)
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    config.num_labels = 5
    assert len(config.id2label) == 5 and config.label2id["LABEL_4"] == 4
    named = SegformerConfig(id2label={"0": "road", "1": "sky"})
    assert named.num_labels == 2 and named.label2id == {"road": 0, "sky": 1}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"depths": [2, 2, 2]}, r"depths must have num_encoder_blocks=4 entries"),
        ({"hidden_sizes": [32, 64, 160, 250]}, r"hidden_sizes\[3\]=250 is not divisible by num_attention_heads\[3\]=8"),
        ({"hidden_sizes": [32, 0, 160, 256]}, r"hidden_sizes must hold positive"),
        ({"depths": [2, -1, 2, 2]}, r"depths must hold positive"),
        ({"decoder_hidden_size": 0}, r"decoder_hidden_size must be an integer in \[1, 65536\], got 0"),
        ({"num_labels": 0}, r"num_labels must be an integer in \[1, 1000000\], got 0"),
        ({"hidden_act": "mish"}, r"hidden_act must be one of \['gelu'"),
        ({"drop_path_rate": 1.5}, r"drop_path_rate must be a probability in \[0, 1\), got 1.5"),
        ({"layer_norm_eps": 0.0}, r"layer_norm_eps must be a positive number"),
        ({"problem_type": "ranking"}, r"problem_type must be one of"),
        ({"num_encoder_blocks": 0}, r"num_encoder_blocks must be an integer in \[1, 16\]"),
        ({"reshape_last_stage": "no"}, r"reshape_last_stage must be True or False"),
    ],
)
def test_invalid_configs_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SegformerConfig(**kwargs)


def test_stage_sizes_and_drop_path_schedule():
    config = SegformerConfig()
    assert config.stage_sizes(512, 512) == [(128, 128), (64, 64), (32, 32), (16, 16)]
    assert config.stage_sizes(513, 769)[0] == (129, 193)
    assert config.stage_sizes(97, 131) == [(25, 33), (13, 17), (7, 9), (4, 5)]
    flat = [r for stage in config.drop_path_rates() for r in stage]
    expected = [0, 0.014286, 0.028571, 0.042857, 0.057143, 0.071429, 0.085714, 0.1]  # transformers' drop-path schedule: linspace(0, 0.1, sum(depths))
    assert flat == pytest.approx(expected, abs=1e-6)


def test_bad_json_file_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        SegformerConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type must be 'segformer', got 'bert'"):
        SegformerConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("value", [1.5, 2.0**70])
def test_initializer_range_that_overflows_random_weights_is_refused(value):
    """An initializer std above 1 (2**70 gave inf logits from a freshly built model) is refused, naming it."""
    with pytest.raises(ValueError, match="initializer_range .* must be at most 1"):
        SegformerConfig(initializer_range=value)
    assert SegformerConfig(initializer_range=1.0).initializer_range == 1.0
