"""Drop-in for transformers: the SegformerConfig API (item 9), transformers as the oracle where installed."""

from __future__ import annotations

import json

import pytest

from segformer.common.model.config import SegformerConfig


def _hf():
    transformers = pytest.importorskip("transformers")
    return transformers.SegformerConfig


def test_to_dict_keeps_int_id2label_keys_and_the_file_matches_transformers_layout(tmp_path):
    id2label = {i: f"class_{i}" for i in range(12)}
    config = SegformerConfig(id2label=id2label)
    data = config.to_dict()
    assert list(data["id2label"]) == list(range(12)) and data["label2id"]["class_11"] == 11
    config.save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text()
    on_disk = json.loads(text)
    assert list(on_disk["id2label"]) == [str(i) for i in range(12)]  # numeric order, as transformers writes
    hf_config = _hf()(id2label=id2label, label2id={v: k for k, v in id2label.items()})
    assert hf_config.to_dict()["id2label"] == data["id2label"] and hf_config.to_dict()["label2id"] == data["label2id"]
    hf_config.save_pretrained(tmp_path / "hf")
    theirs = (tmp_path / "hf" / "config.json").read_text()
    for key in ('"id2label": ', '"label2id": '):  # the same bytes for the label maps
        assert text.split(key)[1].split("}")[0] == theirs.split(key)[1].split("}")[0]
    reread = _hf().from_pretrained(tmp_path)
    assert reread.id2label == id2label and reread.num_labels == 12


def test_to_diff_dict_and_to_json_file(tmp_path):
    config = SegformerConfig(num_channels=4, hidden_act="relu")
    diff = config.to_diff_dict()
    assert diff["num_channels"] == 4 and diff["hidden_act"] == "relu" and "output_attentions" not in diff
    hf_diff = _hf()(num_channels=4, hidden_act="relu").to_diff_dict()
    assert set(diff) - {"patch_layer_norm_eps", "segformer_version"} == set(hf_diff) - {"transformers_version"}
    assert "output_attentions" in SegformerConfig(output_attentions=True).to_diff_dict()
    config.to_json_file(tmp_path / "full.json")
    config.to_json_file(tmp_path / "diff.json", use_diff=True)
    assert SegformerConfig.from_json_file(tmp_path / "full.json") == config
    assert SegformerConfig.from_json_file(tmp_path / "diff.json") == config


def test_update_and_update_from_string_follow_transformers():
    ours, theirs = SegformerConfig(), _hf()()
    for config in (ours, theirs):
        config.update({"num_channels": 1, "decoder_hidden_size": 64})
        config.update_from_string("hidden_act=relu,output_hidden_states=true,drop_path_rate=0.2,semantic_loss_ignore_index=0")
    for name in ("num_channels", "decoder_hidden_size", "hidden_act", "output_hidden_states", "drop_path_rate",
                 "semantic_loss_ignore_index"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.output_hidden_states is True and ours.drop_path_rate == 0.2
    with pytest.raises(ValueError, match="no_such_field"):
        ours.update_from_string("no_such_field=1")
    with pytest.raises(ValueError, match="bool"):
        ours.update_from_string("reshape_last_stage=maybe")
    with pytest.raises(TypeError, match="depths"):
        ours.update_from_string("depths=3")
    with pytest.raises(ValueError, match="hidden_act"):
        ours.update({"hidden_act": "nope"})
    ours.update({"num_labels": 5})
    assert ours.num_labels == 5 and ours.id2label[4] == "LABEL_4"


def test_architectures_name_or_path_and_dtype(tmp_path):
    config = SegformerConfig()
    assert config.architectures is None and config.name_or_path == "" and config.dtype is None
    config.architectures = ["SegformerForSemanticSegmentation"]
    config.dtype = "bfloat16"
    assert config.torch_dtype == "bfloat16"
    config.save_pretrained(tmp_path)
    loaded = SegformerConfig.from_pretrained(tmp_path)
    assert loaded.architectures == ["SegformerForSemanticSegmentation"] and loaded.dtype == "bfloat16"
    assert loaded.name_or_path == str(tmp_path)
    assert "_name_or_path" not in json.loads((tmp_path / "config.json").read_text())
    hf_file = tmp_path / "hf"
    hf_file.mkdir()
    (hf_file / "config.json").write_text(json.dumps({"model_type": "segformer", "torch_dtype": "float32"}))
    assert SegformerConfig.from_pretrained(hf_file).dtype == "float32"
    with pytest.raises(ValueError, match="architectures"):
        config.architectures = "SegformerModel"
