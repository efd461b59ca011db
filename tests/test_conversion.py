"""Conversion library and ``segformer convert``: rename rules, architecture inference, errors, safety.

Numbers against the references live in ``test_conversion_original.py`` (original code's outputs),
``test_conversion_fixtures.py`` (Hugging Face fixtures) and ``test_conversion_parity.py`` (round trips).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import fixture_path
from randomize import random_state, tiny_config
from segformer.cli import main as cli_main
from segformer.common.checkpoints import CheckpointError, read_safetensors, save_safetensors
from segformer.common.checkpoints.pretrained import save_pretrained_state
from segformer.conversion import (
    ConversionError,
    VerificationError,
    convert,
    detect_task,
    map_original_state,
    read_original_checkpoint,
    read_source,
    rename_original_key,
)
from segformer.conversion.core import COUNTERS_ATTR
from segformer.conversion.original import heads_from_meta, known_variant_heads

torch = pytest.importorskip("torch")

TINY = fixture_path("original/tiny.pth")
TINY_ENCODER = fixture_path("original/tiny_encoder.pth")


def _tf_available() -> bool:
    try:
        import segformer.tf  # noqa: F401

        return hasattr(segformer.tf, "TFSegformerForSemanticSegmentation")
    except ImportError:
        return False


needs_tf = pytest.mark.skipif(not _tf_available(), reason="segformer.tf not importable")


def _hashes(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _save_original(path: Path, state: dict, meta: dict | None = None) -> Path:
    obj = {"state_dict": {k: torch.as_tensor(v) for k, v in state.items()}}
    if meta is not None:
        obj["meta"] = meta
    torch.save(obj, path)
    return path


def _tiny_original_state() -> dict[str, np.ndarray]:
    return read_original_checkpoint(TINY).state


# ---------------------------------------------------------------------------------------- rename rules
@pytest.mark.parametrize(
    "original, canonical",
    [
        ("encoder.patch_embed1.proj.weight", "encoder.patch_embeddings.0.proj.weight"),
        ("encoder.patch_embed4.norm.bias", "encoder.patch_embeddings.3.layer_norm.bias"),
        ("encoder.block1.0.norm1.weight", "encoder.block.0.0.layer_norm_1.weight"),
        ("encoder.block3.5.norm2.bias", "encoder.block.2.5.layer_norm_2.bias"),
        ("encoder.block2.1.attn.q.weight", "encoder.block.1.1.attention.self.query.weight"),
        ("encoder.block2.1.attn.kv.bias", "encoder.block.1.1.attention.self.kv.bias"),
        ("encoder.block1.0.attn.sr.weight", "encoder.block.0.0.attention.self.sr.weight"),
        ("encoder.block1.0.attn.norm.weight", "encoder.block.0.0.attention.self.layer_norm.weight"),
        ("encoder.block4.2.attn.proj.bias", "encoder.block.3.2.attention.output.dense.bias"),
        ("encoder.block1.0.mlp.fc1.weight", "encoder.block.0.0.mlp.dense1.weight"),
        ("encoder.block1.0.mlp.dwconv.dwconv.bias", "encoder.block.0.0.mlp.dwconv.dwconv.bias"),
        ("encoder.block1.0.mlp.fc2.weight", "encoder.block.0.0.mlp.dense2.weight"),
        ("encoder.norm3.weight", "encoder.layer_norm.2.weight"),
        ("decode_head.linear_c4.proj.weight", "decode_head.linear_c.3.proj.weight"),
        ("decode_head.linear_fuse.conv.weight", "decode_head.linear_fuse.weight"),
        ("decode_head.linear_fuse.bn.running_var", "decode_head.batch_norm.running_var"),
        ("decode_head.linear_fuse.bn.num_batches_tracked", "decode_head.batch_norm.num_batches_tracked"),
        ("decode_head.linear_pred.bias", "decode_head.classifier.bias"),
        ("head.weight", "classifier.weight"),
        ("decode_head.conv_seg.weight", None),
    ],
)
def test_rename_rules(original, canonical):
    assert rename_original_key(original) == canonical


@pytest.mark.parametrize("key", ["encoder.block1.0.attn.qkv.weight", "decode_head.linear_fuse.conv.bias", "neck.x", "encoder.block0.0.norm1.weight"])
def test_rename_unknown_keys_raise(key):
    with pytest.raises(KeyError):
        rename_original_key(key)


def test_map_original_consumes_every_key_and_splits_kv():
    checkpoint = read_original_checkpoint(TINY)
    source = dict(checkpoint.state)
    task, state, dropped = map_original_state(checkpoint)
    assert task == "semantic_segmentation"
    assert sorted(dropped) == ["decode_head.conv_seg.bias", "decode_head.conv_seg.weight"]
    # 2 tensors dropped, every kv pair (weight, bias) becomes 4 tensors
    n_kv = sum(1 for k in source if ".attn.kv." in k)
    assert len(state) == len(source) - 2 + n_kv
    kv = source["backbone.block2.0.attn.kv.weight"]
    c = kv.shape[1]
    np.testing.assert_array_equal(state["segformer.encoder.block.1.0.attention.self.key.weight"], kv[:c])
    np.testing.assert_array_equal(state["segformer.encoder.block.1.0.attention.self.value.weight"], kv[c:])
    kv_bias = source["backbone.block2.0.attn.kv.bias"]
    np.testing.assert_array_equal(state["segformer.encoder.block.1.0.attention.self.key.bias"], kv_bias[:c])
    np.testing.assert_array_equal(state["segformer.encoder.block.1.0.attention.self.value.bias"], kv_bias[c:])
    assert checkpoint.state.keys() == source.keys()  # the checkpoint object itself is not consumed


def test_infer_config_tiny_and_encoder():
    source = read_source(TINY)
    config = source.config
    meta = json.loads(fixture_path("original/tiny_meta.json").read_text())["architecture"]
    assert config.hidden_sizes == meta["embed_dims"]
    assert config.depths == meta["depths"]
    assert config.sr_ratios == meta["sr_ratios"]
    assert config.mlp_ratios == meta["mlp_ratios"]
    assert config.patch_sizes == meta["patch_sizes"]
    assert config.strides == meta["strides"]
    assert config.num_attention_heads == meta["num_heads"]  # from the mmseg config text in meta
    assert config.decoder_hidden_size == meta["decoder_dim"]
    assert config.num_labels == meta["num_classes"]
    assert config.id2label == {0: "class_0", 1: "class_1", 2: "class_2"}  # meta CLASSES
    assert (config.layer_norm_eps, config.patch_layer_norm_eps) == (1e-6, 1e-5)
    encoder = read_source(TINY_ENCODER, num_heads=[1, 1, 2, 2])
    assert encoder.kind == "original-encoder" and encoder.task == "image_classification"
    assert encoder.config.num_labels == 1000
    # tensors shared with tiny.pth are identical after mapping
    for name, array in encoder.state.items():
        if name.startswith("segformer.encoder."):
            np.testing.assert_array_equal(array, source.state[name])


def test_known_variant_heads_and_meta_heads():
    assert known_variant_heads([32, 64, 160, 256]) == ([1, 2, 5, 8], "b0")
    assert known_variant_heads([64, 128, 320, 512]) == ([1, 2, 5, 8], "b1..b5")
    assert known_variant_heads([8, 8, 16, 16]) is None
    assert heads_from_meta({"config": "backbone=dict(type='mit_b3')"})[0] == [1, 2, 5, 8]
    assert heads_from_meta({"config": "'num_heads': [1, 1, 2, 2],"})[0] == [1, 1, 2, 2]
    assert heads_from_meta({})[0] is None


def test_encoder_without_heads_of_unknown_dims_requires_num_heads():
    with pytest.raises(ValueError, match=r"hidden sizes \[8, 8, 16, 16\] match no known variant.*--num-heads"):
        read_source(TINY_ENCODER)


def test_detect_task():
    assert detect_task(["decode_head.classifier.weight", "segformer.encoder.x"]) == "semantic_segmentation"
    assert detect_task(["classifier.weight"]) == "image_classification"
    assert detect_task(["encoder.patch_embeddings.0.proj.weight"]) == "base"
    assert detect_task(["segformer/encoder/x", "decode_head/linear_fuse/kernel"]) == "semantic_segmentation"


# ---------------------------------------------------------------------------------------------- errors
def test_leftover_original_key_is_listed(tmp_path):
    state = _tiny_original_state()
    state["backbone.block1.0.attn.extra.weight"] = np.zeros(3, np.float32)
    state["neck.conv.weight"] = np.zeros(3, np.float32)
    path = _save_original(tmp_path / "extra.pth", state)
    with pytest.raises(CheckpointError, match=r"2 tensor\(s\) that no rename rule understands.*backbone.block1.0.attn.extra.weight, neck.conv.weight"):
        read_source(path)


def test_missing_original_key_is_listed(tmp_path):
    state = _tiny_original_state()
    del state["backbone.block2.0.mlp.fc2.bias"]
    del state["decode_head.linear_fuse.bn.running_mean"]
    path = _save_original(tmp_path / "missing.pth", state)
    with pytest.raises(ConversionError, match=r"missing from the source \(2\): segformer.encoder.block.1.0.mlp.dense2.bias, decode_head.batch_norm.running_mean"):
        read_source(path, num_heads=[1, 1, 2, 2])


def test_shape_mismatch_names_the_tensor(tmp_path):
    state = _tiny_original_state()
    state["backbone.block3.0.attn.proj.weight"] = np.zeros((16, 15), np.float32)
    path = _save_original(tmp_path / "shape.pth", state)
    with pytest.raises(ConversionError, match=r"block.2.0.attention.output.dense.weight.*\(16, 15\).*\(16, 16\)"):
        read_source(path, num_heads=[1, 1, 2, 2])


def test_bad_num_heads_lists_valid_choices(tmp_path):
    with pytest.raises(ValueError, match=r"stage 3 has hidden size 16, which 5 heads do not divide; valid head counts for it: \[1, 2, 4, 8, 16\]"):
        convert(TINY, tmp_path / "out", to="pt", num_heads="1,1,5,2", verify=False)
    with pytest.raises(ValueError, match="one head count per stage"):
        convert(TINY, tmp_path / "out", to="pt", num_heads=[1, 1], verify=False)
    assert not (tmp_path / "out").exists()


def test_not_a_checkpoint_and_truncated(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        convert(text, tmp_path / "a", to="pt", verify=False)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(TINY.read_bytes()[: TINY.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        convert(truncated, tmp_path / "b", to="pt", verify=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert(tmp_path / "nope.pth", tmp_path / "c", to="pt", verify=False)
    assert not any(p.name.startswith(("a", "b", "c")) for p in tmp_path.iterdir())


def test_weights_only_refusal_is_explained(tmp_path):
    state = _tiny_original_state()
    path = _save_original(tmp_path / "unsafe.pth", state, meta={"config": argparse.Namespace(a=1)})
    with pytest.raises(CheckpointError, match=r"refused to load(.|\n)*weights_only=True(.|\n)*does not load files unsafely"):
        convert(path, tmp_path / "out", to="pt", verify=False)


def test_wrong_label_count_and_options(tmp_path):
    with pytest.raises(ConversionError, match="classifier has 3 classes but 19 were asked for"):
        convert(TINY, tmp_path / "x", to="pt", labels="cityscapes", verify=False)
    with pytest.raises(ConversionError, match="classifier has 3 classes but 5 were asked for"):
        convert(TINY, tmp_path / "x", to="pt", num_labels=5, verify=False)
    with pytest.raises(ValueError, match="to must be one of"):
        convert(TINY, tmp_path / "x", to="jax")
    with pytest.raises(ValueError, match="tolerance must be a number >= 0"):
        convert(TINY, tmp_path / "x", to="pt", tolerance=-1.0)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"0": "sky", "1": "road", "2": "cat"}))
    report = convert(TINY, tmp_path / "x", to="pt", labels=labels, verify=False)
    config = json.loads((tmp_path / "x" / "config.json").read_text())
    assert config["id2label"] == {"0": "sky", "1": "road", "2": "cat"}
    assert report.written and report.config.num_labels == 3


# ------------------------------------------------------------------------------------ writing safety
def test_existing_destination_needs_overwrite_and_source_untouched(tmp_path):
    before = _hashes(TINY)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("old")
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        convert(TINY, dst, to="pt", verify=False)
    assert (dst / "keep.txt").read_text() == "old"
    report = convert(TINY, dst, to="pt", verify=False, overwrite=True)
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert sorted(Path(f).name for f in report.files) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind
    assert _hashes(TINY) == before
    mode = (dst / "model.safetensors").stat().st_mode & 0o777
    assert mode & 0o044 == 0o044 or mode & 0o600 == 0o600  # readable like any user file (umask applied)


def test_destination_overlapping_source_is_refused(tmp_path):
    folder = tmp_path / "pt"
    config = tiny_config()
    save_pretrained_state(folder, config, random_state(config, "seg"), "semantic_segmentation", "pt", "SegformerForSemanticSegmentation")
    before = _hashes(folder)
    for dst in (folder, folder / "inner", tmp_path):
        with pytest.raises(ValueError, match="overlaps it"):
            convert(folder, dst, to="pt", overwrite=True, verify=False)
    with pytest.raises(ValueError, match="overlaps it"):
        convert(folder / "model.safetensors", folder, to="pt", overwrite=True, verify=False)
    assert _hashes(folder) == before


def test_bare_weights_file_architecture_from_tensors(tmp_path):
    config = tiny_config(num_attention_heads=[1, 2, 2, 4], mlp_ratios=[4, 2, 4, 4])
    state = random_state(config, "cls", seed=3)
    weights = tmp_path / "weights.safetensors"
    save_safetensors(state, weights)
    source = read_source(weights, num_heads=[1, 2, 2, 4])
    assert source.task == "image_classification"
    assert source.config.mlp_ratios == [4, 2, 4, 4] and source.config.num_attention_heads == [1, 2, 2, 4]
    assert source.config.layer_norm_eps == 1e-5 and source.config.patch_layer_norm_eps == 1e-5
    report = convert(weights, tmp_path / "out", to="pt", num_heads=[1, 2, 2, 4], verify=False)
    written = read_safetensors(tmp_path / "out" / "model.safetensors")
    assert all(np.array_equal(written[k], state[k]) for k in state) and report.written


def test_base_model_from_task_prefix(tmp_path):
    config = tiny_config()
    state = {k: v for k, v in random_state(config, "cls", seed=4).items() if not k.startswith("classifier")}
    save_pretrained_state(tmp_path / "base", config, {k.removeprefix("segformer."): v for k, v in state.items()}, "base", "pt", "SegformerModel")
    source = read_source(tmp_path / "base")
    assert source.task == "base" and all(k.startswith("encoder.") for k in source.state)


def test_counter_survives_h5_without_pt_files(tmp_path):
    import h5py

    config = tiny_config()
    state = random_state(config, "seg", seed=5)
    convert_src = tmp_path / "pt"
    save_pretrained_state(convert_src, config, state, "semantic_segmentation", "pt", "SegformerForSemanticSegmentation")
    convert(convert_src, tmp_path / "tf", to="tf", verify=False)
    with h5py.File(tmp_path / "tf" / "tf_model.h5", "r") as handle:
        counters = json.loads(handle.attrs[COUNTERS_ATTR])
    assert counters == {"decode_head.batch_norm.num_batches_tracked": int(state["decode_head.batch_norm.num_batches_tracked"])}
    convert(tmp_path / "tf", tmp_path / "back", to="pt", verify=False)
    back = read_safetensors(tmp_path / "back" / "model.safetensors")
    assert back.keys() == state.keys()
    for name in state:
        assert back[name].dtype == state[name].dtype and back[name].tobytes() == state[name].tobytes(), name


# ------------------------------------------------------------------------------ verification (PT + TF)
@needs_tf
def test_verification_refuses_above_tolerance_and_cli_exit_codes(tmp_path, capsys):
    before = _hashes(TINY)
    with pytest.raises(VerificationError, match="above the tolerance 0; nothing was written") as info:
        convert(TINY, tmp_path / "strict", to="pt", tolerance=0.0)
    report = info.value.report
    assert not report.written and not report.passed and report.max_abs_diff > 0
    assert list(tmp_path.iterdir()) == []  # neither the destination nor a temporary folder
    assert cli_main(["convert", str(TINY), str(tmp_path / "ok"), "--to", "tf", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "64x64 logits" in out and "65x97 logits" in out and "wrote" in out
    assert cli_main(["convert", str(TINY), str(tmp_path / "ok"), "--to", "tf", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["convert", str(TINY), str(tmp_path / "h"), "--to", "pt", "--num-heads", "1,1,3,2", "--quiet"]) == 2
    assert "valid head counts" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]
    assert _hashes(TINY) == before


def test_cli_refusal_exit_code(tmp_path, capsys, monkeypatch):
    from segformer.conversion import core

    def failing(*args, **kwargs):
        return [core.Check("64x64 logits", 3e-3, kwargs.get("tolerance", 1e-4) if "tolerance" in kwargs else args[5])]

    monkeypatch.setattr(core, "verify_state", failing)
    monkeypatch.setattr(core, "load_model", lambda *a, **k: None)
    monkeypatch.setattr(core, "build_model", lambda *a, **k: None)
    monkeypatch.setattr(core, "_framework_available", lambda framework: True)
    assert cli_main(["convert", str(TINY), str(tmp_path / "x"), "--to", "pt", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "3.000e-03" in err and "nothing was written" in err
    assert list(tmp_path.iterdir()) == []


@needs_tf
def test_keras_archive_source(tmp_path):
    """Our .keras files (loaded through Keras in safe mode) convert to a PT folder, every tensor bit-exact."""
    from segformer.tf import TFSegformerForSemanticSegmentation

    config = tiny_config()
    state = random_state(config, "seg", seed=6)
    model = TFSegformerForSemanticSegmentation(config)
    model.build()
    model.load_state_dict_numpy(state)
    model.save(tmp_path / "tiny.keras")
    before = _hashes(tmp_path / "tiny.keras")
    report = convert(tmp_path / "tiny.keras", tmp_path / "pt", to="pt", verify=False)
    assert report.source_kind == "keras" and report.task == "semantic_segmentation"
    written = read_safetensors(tmp_path / "pt" / "model.safetensors")
    assert sorted(written) == sorted(state)
    assert all(written[k].tobytes() == state[k].tobytes() for k in state)
    assert _hashes(tmp_path / "tiny.keras") == before
