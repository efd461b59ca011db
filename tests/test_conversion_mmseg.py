"""mmsegmentation ``mit.py`` checkpoints (1.x and 0.x wrappers) convert to PyTorch and TensorFlow folders whose
``from_pretrained`` models reproduce mmsegmentation's own logits (``tests/fixtures/mmseg``, written by
mmsegmentation 1.2.2: non-default depths, widths, decoder width and class count, an odd input size). The live test
builds mmseg's model where mmsegmentation is installed and skips cleanly where it is not. Also: an unknown-format
checkpoint is refused in one readable line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import fixture_path, shared_or_skip
from mmseg_live import ARCH, CLASSES, PALETTE, mmseg_available
from segformer.common.checkpoints import CheckpointError
from segformer.conversion import ConversionError, convert, read_source

torch = pytest.importorskip("torch")

TOLERANCE = 1e-4
V1, V0, IO = "mmseg/tiny_mmseg1.pth", "mmseg/tiny_mmseg0.pth", "mmseg/tiny_io.npz"
WIDTHS = [ARCH["embed_dims"] * h for h in ARCH["num_heads"]]


@pytest.fixture(scope="module")
def io():
    return dict(np.load(fixture_path(IO)))


def _pt_logits(folder_or_state, config=None, x=None):
    from segformer.pt import SegformerForSemanticSegmentation

    if config is None:
        model = SegformerForSemanticSegmentation.from_pretrained(folder_or_state)
    else:
        model = SegformerForSemanticSegmentation(config)
        model.load_state_dict_numpy(folder_or_state)
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).logits.numpy()


@pytest.mark.parametrize("fixture", [V1, V0])
def test_mapping_reproduces_mmseg_logits(fixture, io):
    """1.x (``dataset_meta`` / ``cfg``) and 0.x (``module.`` prefixes, ``CLASSES`` / ``config``) wrappers: the
    architecture, heads (from the config text), labels and LayerNorm eps come out right and the mapped tensors give
    mmseg's logits."""
    source = read_source(fixture_path(fixture))
    config = source.config
    assert source.kind == "mmseg-mit" and source.task == "semantic_segmentation"
    assert (config.depths, config.hidden_sizes, config.num_attention_heads) == (ARCH["num_layers"], WIDTHS, ARCH["num_heads"])
    assert (config.decoder_hidden_size, config.num_labels, config.decode_head_type) == (ARCH["channels"], 5, "mmseg")
    assert config.layer_norm_eps == config.patch_layer_norm_eps == 1e-6
    assert [config.id2label[i] for i in range(5)] == list(CLASSES)
    assert any("from the mmseg config stored in the checkpoint's meta" in note for note in source.notes)
    diff = float(np.abs(_pt_logits(source.state, config, io["pixel_values"]) - io["logits"]).max())
    print(f"mmseg {fixture} mapped (PT) vs mmseg max|diff| {diff:.2e}")
    assert diff <= TOLERANCE


@pytest.mark.parametrize("fixture, to", [(V1, "pt"), (V0, "tf")])
def test_converted_folder_loads_with_from_pretrained_and_reproduces_mmseg(fixture, to, io, tmp_path):
    report = convert(fixture_path(fixture), tmp_path / "out", to=to, verify=False)
    assert report.written and report.source_kind == "mmseg-mit"
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["decode_head_type"] == "mmseg" and saved["id2label"]["4"] == "person" and saved["palette"] == PALETTE
    assert "decode head mmseg" in str(report)
    if to == "pt":
        logits = _pt_logits(tmp_path / "out", x=io["pixel_values"])
    else:
        from segformer.tf import TFSegformerForSemanticSegmentation

        logits = np.asarray(TFSegformerForSemanticSegmentation.from_pretrained(tmp_path / "out")(io["pixel_values"]).logits)
    diff = float(np.abs(logits - io["logits"]).max())
    print(f"mmseg {fixture} -> {to} from_pretrained vs mmseg max|diff| {diff:.2e}")
    assert diff <= TOLERANCE


def test_cli_converts_an_mmseg_checkpoint_and_info_shows_its_head_and_every_source_format(tmp_path, capsys):
    from segformer.cli import main
    from segformer.conversion.report import SOURCE_FORMATS, TARGET_FORMATS

    assert main(["convert", str(fixture_path(V1)), str(tmp_path / "out"), "--to", "pt", "--no-verify", "--quiet"]) == 0
    assert "mmseg-mit" in capsys.readouterr().out
    assert "decode head: mmseg" in (tmp_path / "out" / "README.md").read_text()
    from segformer import Segmenter

    assert Segmenter.from_pretrained(tmp_path / "out").palette.tolist()[:5] == PALETTE  # the checkpoint's colours
    assert main(["info", "--model", str(tmp_path / "out"), "--size", "64"]) == 0
    text = capsys.readouterr().out
    assert "decode head mmseg, 5 labels" in text
    assert all(what in text and example in text for what, example in SOURCE_FORMATS + TARGET_FORMATS)
    assert "mmsegmentation 1.x / 0.x mit.py .pth" in text and "--to mmseg" in text


def test_bare_state_dict_needs_heads_when_neither_meta_nor_widths_tell(tmp_path, io):
    """A bare state dict (no meta) of widths no published variant has: ``--num-heads`` is asked for by name,
    then the conversion matches mmseg."""
    state = torch.load(fixture_path(V1), weights_only=True)["state_dict"]
    torch.save(state, tmp_path / "bare.pth")
    with pytest.raises(ValueError, match=r"match no known variant.*pass --num-heads"):
        read_source(tmp_path / "bare.pth")
    source = read_source(tmp_path / "bare.pth", num_heads=ARCH["num_heads"])
    assert source.config.id2label[0] == "LABEL_0"  # no meta: no class names
    assert float(np.abs(_pt_logits(source.state, source.config, io["pixel_values"]) - io["logits"]).max()) <= TOLERANCE


def test_backbone_only_state_dict_converts_to_the_base_model(tmp_path):
    state = torch.load(fixture_path(V1), weights_only=True)["state_dict"]
    torch.save({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}, tmp_path / "mit.pth")
    source = read_source(tmp_path / "mit.pth", num_heads=ARCH["num_heads"])
    assert source.task == "base" and source.config.hidden_sizes == WIDTHS
    np.testing.assert_array_equal(source.state["encoder.block.1.1.attention.self.value.bias"],
                                  state["backbone.layers.1.1.1.attn.attn.in_proj_bias"].numpy()[2 * WIDTHS[1]:])


def test_model_zoo_sized_fixture_reproduces_mmseg(io):
    """The b0-wide fixture (mit-b0 widths, heads from the published variants' table, 4 classes, 64x96 input)."""
    source = read_source(shared_or_skip("mmseg/segformer_mit-tiny_mmseg1.pth"))
    expected = np.load(shared_or_skip("mmseg/expected.npz"))
    assert any(note.startswith("ASSUMED attention heads [1, 2, 5, 8]") for note in source.notes)
    diff = float(np.abs(_pt_logits(source.state, source.config, expected["pixel_values"]) - expected["logits"]).max())
    assert diff <= TOLERANCE


@pytest.mark.skipif(not mmseg_available(), reason="mmsegmentation 1.2 (with mmcv-lite, mmengine) is not installed")
def test_live_mmseg_model_converts_to_both_frameworks(tmp_path):
    """mmseg's own model, built here with other random weights, saved as mmseg 1.x saves it, converted and run."""
    from mmseg_live import build_mmseg_segformer, config_text, mmseg_logits, state_dict_1x

    backbone, head = build_mmseg_segformer(seed=11)
    meta = {"dataset_meta": {"classes": CLASSES}, "cfg": config_text()}
    torch.save({"meta": meta, "state_dict": state_dict_1x(backbone, head)}, tmp_path / "live.pth")
    x = np.random.default_rng(5).standard_normal((2, 3, 75, 51)).astype(np.float32)
    expected = mmseg_logits(backbone, head, x)
    report = convert(tmp_path / "live.pth", tmp_path / "tf", to="tf", inputs=[x], keep_outputs=True)
    for framework, out in report.outputs[0].items():
        diff = float(np.abs(out["logits"] - expected).max())
        print(f"live mmseg -> {framework} max|diff| {diff:.2e}")
        assert diff <= TOLERANCE
    # and back: the TF folder written as an mmseg checkpoint that a fresh mmseg model loads strictly
    convert(tmp_path / "tf", tmp_path / "back.pth", to="mmseg")
    fresh_backbone, fresh_head = build_mmseg_segformer(seed=99)
    state = torch.load(tmp_path / "back.pth", weights_only=True)["state_dict"]
    fresh_backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
    fresh_head.load_state_dict({k.removeprefix("decode_head."): v for k, v in state.items() if k.startswith("decode_head.")})
    diff = float(np.abs(mmseg_logits(fresh_backbone, fresh_head, x) - expected).max())
    print(f"live mmseg -> tf -> mmseg, run by mmseg: max|diff| {diff:.2e}")
    assert diff <= TOLERANCE


def test_unknown_format_is_refused_in_one_line_naming_what_it_looks_like(tmp_path):
    state = {f"backbone.stem.{i}.conv.weight": torch.zeros(2) for i in range(190)}
    torch.save({"state_dict": state, "meta": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError) as caught:
        read_source(tmp_path / "other.pth")
    message = str(caught.value)
    assert "\n" not in message and len(message) < 500
    assert "look like an mmsegmentation / mmcv checkpoint of another backbone" in message
    assert "backbone.stem.0.conv.weight" in message and "and 185 more" in message


def test_unknown_keys_beside_mit_keys_are_named_in_one_line(tmp_path):
    checkpoint = torch.load(fixture_path(V1), weights_only=True)
    checkpoint["state_dict"]["auxiliary_head.conv_seg.weight"] = torch.zeros(5, 8, 1, 1)
    torch.save(checkpoint, tmp_path / "aux.pth")
    with pytest.raises(CheckpointError, match=r"^[^\n]*1 tensor\(s\) that no rename rule understands \(nothing was converted; "
                                              r"the keys look like an mmsegmentation mit.py checkpoint \(1.x / 0.x\)\): "
                                              r"auxiliary_head.conv_seg.weight$"):
        read_source(tmp_path / "aux.pth")


def test_to_mmseg_writes_back_the_mmseg_checkpoint_it_came_from(tmp_path):
    """mmseg -> PT folder -> ``--to mmseg``: the same keys, shapes and values as the file mmseg wrote, class names,
    palette and the config text (heads) in ``meta``."""
    from segformer.cli import main

    convert(fixture_path(V1), tmp_path / "pt", to="pt", verify=False)
    assert main(["convert", str(tmp_path / "pt"), str(tmp_path / "back.pth"), "--to", "mmseg", "--quiet"]) == 0
    original = torch.load(fixture_path(V1), weights_only=True)
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert sorted(back["state_dict"]) == sorted(original["state_dict"])
    for key, tensor in original["state_dict"].items():
        assert back["state_dict"][key].dtype == tensor.dtype and torch.equal(back["state_dict"][key], tensor), key
    assert back["meta"]["dataset_meta"] == {"classes": CLASSES, "palette": PALETTE}
    assert read_source(tmp_path / "back.pth").config.num_attention_heads == ARCH["num_heads"]  # from meta["cfg"]


def test_to_mmseg_names_what_mmseg_cannot_represent(tmp_path):
    with pytest.raises(ConversionError, match=r"--to mmseg: mmsegmentation cannot represent this model: decode_head_type "
                                              r"'mlp' .*patch_layer_norm_eps 1e-05"):
        convert(fixture_path("original/tiny.pth"), tmp_path / "x.pth", to="mmseg")
    assert not (tmp_path / "x.pth").exists() and list(tmp_path.iterdir()) == []


def test_pt_folder_of_the_mmseg_head_converts_to_tf_carrying_every_tensor(tmp_path, io):
    convert(fixture_path(V1), tmp_path / "pt", to="pt", verify=False)
    report = convert(tmp_path / "pt", tmp_path / "tf", to="tf", verify=False)
    assert report.source_kind == "hf-pt" and report.config.decode_head_type == "mmseg"
    assert report.checks[0].passed and "(162 tensors)" in report.checks[0].name  # the stage BatchNorms included
    from segformer.tf import TFSegformerForSemanticSegmentation

    model = TFSegformerForSemanticSegmentation.from_pretrained(tmp_path / "tf")
    assert float(np.abs(np.asarray(model(io["pixel_values"]).logits) - io["logits"]).max()) <= TOLERANCE
