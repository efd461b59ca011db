"""Drop-in for transformers: Hub arguments of from_pretrained / save_pretrained / push_to_hub (PT, config, processor).

The Hub is a local stand-in: ``huggingface_hub.snapshot_download`` / ``hf_hub_download`` / ``create_repo`` /
``upload_folder`` are monkeypatched to local functions that record their arguments; nothing touches the network.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from randomize import random_state, tiny_config
from segformer.common.model.config import SegformerConfig
from segformer.common.images.image_processing import SegformerImageProcessor

torch = pytest.importorskip("torch")
from segformer.pt import SegformerForImageClassification, SegformerForSemanticSegmentation, SegformerModel  # noqa: E402

SECRET = "hf_TOKEN_must_never_be_written_7f3a9c"


def _seg_model(**overrides) -> SegformerForSemanticSegmentation:
    model = SegformerForSemanticSegmentation(tiny_config(**overrides))
    model.load_state_dict_numpy(random_state(model.config, "semantic_segmentation", seed=3))
    return model.eval()


def _all_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A local stand-in for the huggingface_hub calls we make; records every call's arguments."""
    hub = pytest.importorskip("huggingface_hub")
    calls: dict[str, list] = {"snapshot": [], "file": [], "create": [], "upload": []}
    repos = tmp_path / "hub_repos"
    uploaded = tmp_path / "hub_uploaded"

    def snapshot_download(repo_id, **kwargs):
        calls["snapshot"].append({"repo_id": repo_id, **kwargs})
        return str(repos / repo_id)

    def hf_hub_download(repo_id, filename, **kwargs):
        calls["file"].append({"repo_id": repo_id, "filename": filename, **kwargs})
        return str(repos / repo_id / (kwargs.get("subfolder") or "") / filename)

    def create_repo(repo_id, **kwargs):
        calls["create"].append({"repo_id": repo_id, **kwargs})

    def upload_folder(*, repo_id, folder_path, **kwargs):
        calls["upload"].append({"repo_id": repo_id, "folder_path": folder_path, **kwargs})
        target = uploaded / repo_id / str(len(calls["upload"]))
        shutil.copytree(folder_path, target)
        return f"commit-{len(calls['upload'])}"

    for name, function in [("snapshot_download", snapshot_download), ("hf_hub_download", hf_hub_download),
                           ("create_repo", create_repo), ("upload_folder", upload_folder)]:
        monkeypatch.setattr(hub, name, function)
    return calls, repos, uploaded


# ------------------------------------------------------------------------------------- 1: download options
def test_download_options_reach_huggingface_hub_and_not_the_config(fake_hub, tmp_path):
    calls, repos, _ = fake_hub
    model = _seg_model()
    model.save_pretrained(repos / "user" / "seg" / "sub")
    loaded = SegformerForSemanticSegmentation.from_pretrained(
        "user/seg", revision="v1", token=SECRET, cache_dir=str(tmp_path / "cache"), local_files_only=True,
        force_download=False, subfolder="sub", num_labels=3,
    )
    call = calls["snapshot"][-1]
    assert call["repo_id"] == "user/seg" and call["revision"] == "v1" and call["token"] == SECRET
    assert call["cache_dir"] == str(tmp_path / "cache") and call["local_files_only"] is True
    assert all(p.startswith("sub/") for p in call["allow_patterns"])
    for name in ("revision", "token", "cache_dir", "local_files_only", "force_download", "subfolder"):
        assert name not in loaded.config.extra and name not in loaded.config.to_dict()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(loaded(x).logits, model(x).logits)


def test_subfolder_for_config_model_and_processor_in_a_local_folder(tmp_path):
    model = _seg_model(num_labels=4)
    model.save_pretrained(tmp_path / "sub")
    SegformerImageProcessor(size=64).save_pretrained(tmp_path / "sub")
    config = SegformerConfig.from_pretrained(tmp_path, subfolder="sub")
    assert config.num_labels == 4
    loaded = SegformerForSemanticSegmentation.from_pretrained(tmp_path, subfolder="sub")
    assert torch.equal(loaded.decode_head.classifier.weight, model.decode_head.classifier.weight)
    assert SegformerImageProcessor.from_pretrained(tmp_path, subfolder="sub").size == {"height": 64, "width": 64}
    with pytest.raises(FileNotFoundError, match="subfolder 'nope'"):
        SegformerForSemanticSegmentation.from_pretrained(tmp_path, subfolder="nope")
    with pytest.raises(ValueError, match="subfolder"):
        SegformerConfig.from_pretrained(tmp_path, subfolder="../escape")


def test_processor_download_options_go_to_hf_hub_download(fake_hub):
    calls, repos, _ = fake_hub
    SegformerImageProcessor(size=32).save_pretrained(repos / "user" / "proc" / "pre")
    processor = SegformerImageProcessor.from_pretrained("user/proc", subfolder="pre", token=SECRET, revision="r2")
    assert processor.size == {"height": 32, "width": 32}
    call = calls["file"][-1]
    assert call["subfolder"] == "pre" and call["token"] == SECRET and call["revision"] == "r2"


@pytest.mark.parametrize("bad", [{"num_label": 4}, {"output_hidden_state": True}, {"tokenn": "x"}])
def test_unknown_keyword_is_a_type_error_naming_it(tmp_path, bad):
    _seg_model().save_pretrained(tmp_path)
    (name,) = bad
    with pytest.raises(TypeError, match=repr(name)):
        SegformerForSemanticSegmentation.from_pretrained(tmp_path, **bad)
    with pytest.raises(TypeError, match=repr(name)):
        SegformerConfig.from_pretrained(tmp_path, **bad)
    config, unused = SegformerConfig.from_pretrained(tmp_path, return_unused_kwargs=True, **bad)
    assert unused == bad and name not in config.to_dict()


def test_unsupported_transformers_keyword_is_a_type_error_with_the_reason(tmp_path):
    _seg_model().save_pretrained(tmp_path)
    for name, value in [("device_map", "auto"), ("trust_remote_code", True), ("variant", "fp16")]:
        with pytest.raises(TypeError, match=f"{name}="):
            SegformerForSemanticSegmentation.from_pretrained(tmp_path, **{name: value})


def test_config_fields_still_override(tmp_path):
    _seg_model().save_pretrained(tmp_path)
    model = SegformerForSemanticSegmentation.from_pretrained(
        tmp_path, num_labels=5, id2label={i: f"c{i}" for i in range(5)}, ignore_mismatched_sizes=True,
        semantic_loss_ignore_index=0,
    )
    assert model.config.num_labels == 5 and model.config.id2label[4] == "c4"
    assert model.config.semantic_loss_ignore_index == 0
    assert model.decode_head.classifier.weight.shape[0] == 5


def test_a_token_passed_anywhere_is_in_no_file_we_write(fake_hub, tmp_path):
    calls, repos, uploaded = fake_hub
    out = tmp_path / "written"
    model = _seg_model()
    model.save_pretrained(repos / "user" / "m")
    SegformerImageProcessor().save_pretrained(repos / "user" / "m")
    loaded = SegformerForSemanticSegmentation.from_pretrained("user/m", token=SECRET)
    loaded_legacy = SegformerForSemanticSegmentation.from_pretrained("user/m", use_auth_token=SECRET)
    config = SegformerConfig.from_pretrained("user/m", token=SECRET)
    processor = SegformerImageProcessor.from_pretrained("user/m", token=SECRET)
    loaded.save_pretrained(out / "pt", push_to_hub=True, repo_id="user/pushed", token=SECRET)
    loaded_legacy.save_pretrained(out / "pt_bin", safe_serialization=False)
    loaded.push_to_hub("user/pushed2", token=SECRET, commit_message="c")
    config.save_pretrained(out / "config")
    config.to_json_file(out / "config2.json", use_diff=True)
    processor.save_pretrained(out / "processor", push_to_hub=True, token=SECRET)
    processor.push_to_hub("user/proc", token=SECRET)
    assert all(c["token"] == SECRET for c in calls["upload"]) and len(calls["upload"]) == 4
    written = _all_bytes(out) + _all_bytes(uploaded)
    assert len(written) >= 10
    for path, data in written:
        assert SECRET.encode() not in data, path
    assert SECRET not in repr(config) and SECRET not in config.to_json_string()


# ----------------------------------------------------------------------------------------- 2: saving
def test_save_state_dict_instead_of_the_model_own(tmp_path):
    model = _seg_model()
    other = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.save_pretrained(tmp_path, state_dict=other)
    loaded = SegformerForSemanticSegmentation.from_pretrained(tmp_path)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, other[name]), name
    with pytest.raises(ValueError, match="lacks"):
        model.save_pretrained(tmp_path / "bad", state_dict={k: v for k, v in other.items() if "classifier" not in k})


@pytest.mark.parametrize("safe", [True, False])
def test_sharding_writes_an_index_that_both_loaders_read(tmp_path, safe):
    model = _seg_model(layer_norm_eps=1e-5)
    total = sum(v.nelement() * 4 for v in model.state_dict().values() if v.is_floating_point())
    model.save_pretrained(tmp_path, max_shard_size=total // 4, safe_serialization=safe)
    index_name = "model.safetensors.index.json" if safe else "pytorch_model.bin.index.json"
    index = json.loads((tmp_path / index_name).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 4 and all((tmp_path / s).is_file() for s in shards)
    assert set(index["weight_map"]) == set(model.state_dict())
    assert not (tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")).exists()
    x = torch.randn(2, 3, 64, 64)
    loaded = SegformerForSemanticSegmentation.from_pretrained(tmp_path)
    assert torch.equal(loaded(x).logits, model(x).logits)
    transformers = pytest.importorskip("transformers")
    reference = transformers.SegformerForSemanticSegmentation.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        diff = (reference(x).logits - model(x).logits).abs().max().item()
    assert diff < 1e-4, f"max |transformers(sharded) - ours| = {diff}"
    # a later unsharded save leaves no stale shard or index behind
    model.save_pretrained(tmp_path, safe_serialization=safe)
    assert not (tmp_path / index_name).exists() and not any((tmp_path / s).exists() for s in shards)


def test_max_shard_size_strings_and_errors(tmp_path):
    from segformer.common.checkpoints.pretrained import parse_shard_size

    assert parse_shard_size("5GB") == 5 * 10**9 and parse_shard_size("200MB") == 200 * 10**6
    assert parse_shard_size("1GiB") == 2**30 and parse_shard_size(123) == 123
    with pytest.raises(ValueError, match="max_shard_size"):
        _seg_model().save_pretrained(tmp_path, max_shard_size="lots")


def test_is_main_process_false_writes_no_config(tmp_path):
    _seg_model().save_pretrained(tmp_path, is_main_process=False)
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_unknown_save_keyword_is_a_type_error(tmp_path):
    model = _seg_model()
    for bad in ({"variant": "fp16"}, {"save_peft_format": True}, {"safe_serialisation": False}):
        with pytest.raises(TypeError, match=next(iter(bad))):
            model.save_pretrained(tmp_path, **bad)
    with pytest.raises(TypeError, match="commit_mesage"):
        model.push_to_hub("user/x", commit_mesage="typo")
    from segformer import SegformerImageProcessor

    with pytest.raises(TypeError, match=r"SegformerImageProcessor.save_pretrained .*'safe_serialization'.*accepted: push_to_hub"):
        SegformerImageProcessor().save_pretrained(tmp_path, safe_serialization=True)


def test_push_to_hub_uploads_the_saved_folder(fake_hub, tmp_path):
    calls, _, uploaded = fake_hub
    model = _seg_model()
    result = model.save_pretrained(tmp_path / "my-model", push_to_hub=True, private=True, commit_message="first")
    assert result == tmp_path / "my-model"
    assert calls["create"][-1]["repo_id"] == "my-model" and calls["create"][-1]["private"] is True
    assert calls["upload"][-1]["commit_message"] == "first"
    assert sorted(os.listdir(uploaded / "my-model" / "1")) == ["config.json", "model.safetensors"]
    assert model.push_to_hub("user/other", create_pr=True) == "commit-2"
    assert calls["upload"][-1]["create_pr"] is True
    reloaded = SegformerForSemanticSegmentation.from_pretrained(uploaded / "user" / "other" / "2")
    assert torch.equal(reloaded.decode_head.classifier.weight, model.decode_head.classifier.weight)


def test_push_to_hub_without_huggingface_hub_says_how_to_install(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if it were not installed
    with pytest.raises(ImportError, match=r"pip install huggingface_hub .*'\.\[hub\]'"):
        _seg_model().push_to_hub("user/x")


# --------------------------------------------------------------------------- 3: loading and model API
def test_from_pretrained_none_with_config_and_state_dict():
    model = _seg_model()
    loaded = SegformerForSemanticSegmentation.from_pretrained(None, config=model.config, state_dict=model.state_dict())
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name
    with pytest.raises(ValueError, match="config= and state_dict="):
        SegformerForSemanticSegmentation.from_pretrained(None, state_dict=model.state_dict())


def test_from_pretrained_under_meta_device_is_a_clear_error(tmp_path):
    _seg_model().save_pretrained(tmp_path)
    with torch.device("meta"):
        with pytest.raises(RuntimeError, match="meta device"):
            SegformerForSemanticSegmentation.from_pretrained(tmp_path)
        empty = SegformerForSemanticSegmentation(tiny_config())  # the documented way to an empty model
    assert empty.decode_head.classifier.weight.is_meta


def test_use_safetensors_true_and_false_choose_the_file(tmp_path):
    model = _seg_model()
    model.save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError):
        SegformerForSemanticSegmentation.from_pretrained(tmp_path, use_safetensors=False)
    (tmp_path / "model.safetensors").rename(tmp_path / "gone")
    model.save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(FileNotFoundError):
        SegformerForSemanticSegmentation.from_pretrained(tmp_path, use_safetensors=True)
    assert SegformerForSemanticSegmentation.from_pretrained(tmp_path, use_safetensors=False) is not None


def test_base_model_memory_footprint_and_gradient_checkpointing_against_transformers():
    transformers = pytest.importorskip("transformers")
    config = tiny_config()
    ours = SegformerForSemanticSegmentation(config)
    theirs = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(**{
        k: v for k, v in config.to_dict().items() if k not in ("patch_layer_norm_eps", "segformer_version")}))
    assert ours.get_memory_footprint() == theirs.get_memory_footprint()
    assert ours.get_memory_footprint(return_buffers=False) == theirs.get_memory_footprint(return_buffers=False)
    assert isinstance(ours.base_model, SegformerModel) and ours.base_model is ours.segformer
    base = SegformerModel(config)
    assert base.base_model is base
    assert ours.is_gradient_checkpointing is False
    ours.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert ours.is_gradient_checkpointing is True
    ours.train()
    x = torch.randn(2, 3, 64, 64)
    labels = torch.randint(0, 3, (2, 64, 64))
    ours(x, labels=labels).loss.backward()
    assert all(p.grad is not None for p in ours.parameters())
    ours.gradient_checkpointing_disable()
    assert ours.is_gradient_checkpointing is False
    with pytest.raises(TypeError, match="gradient_checkpointing_kwargs"):
        ours.gradient_checkpointing_enable(gradient_checkpointing_kwargs=["use_reentrant"])


def test_classification_and_base_models_take_the_same_keywords(tmp_path):
    model = SegformerForImageClassification(tiny_config())
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    loaded = SegformerForImageClassification.from_pretrained(tmp_path, token=SECRET, revision="main")
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)
    base = SegformerModel.from_pretrained(tmp_path, output_hidden_states=True)
    assert base.config.output_hidden_states is True
    assert SECRET.encode() not in b"".join(data for _, data in _all_bytes(tmp_path))
    np.testing.assert_array_equal(
        base.encoder.block[0][0].mlp.dense1.weight.detach().numpy(),
        model.segformer.encoder.block[0][0].mlp.dense1.weight.detach().numpy(),
    )


def test_framework_can_generate_and_input_require_grads():
    model = _seg_model()
    assert model.framework == "pt" and model.can_generate() is False
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    x = torch.randn(1, 3, 64, 64)
    assert not model(x).logits.requires_grad
    model.enable_input_require_grads()
    assert model(x).logits.requires_grad  # what reentrant checkpointing of frozen weights needs
    model.disable_input_require_grads()
    assert not model(x).logits.requires_grad


def test_config_push_to_hub(fake_hub):
    calls, _, uploaded = fake_hub
    SegformerConfig(num_labels=7).push_to_hub("user/cfg", token=SECRET)
    assert calls["upload"][-1]["token"] == SECRET
    assert SegformerConfig.from_pretrained(uploaded / "user" / "cfg" / "1").num_labels == 7
    assert SECRET.encode() not in (uploaded / "user" / "cfg" / "1" / "config.json").read_bytes()
