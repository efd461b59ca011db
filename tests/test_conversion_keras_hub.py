"""keras-hub presets both ways through ``segformer convert``.

* Source: presets written by keras-hub 0.32 (``tests/fixtures/keras_hub``: non-default depths, widths, heads,
  reduction ratios, decoder width and class count; the larger shared one when present) convert to PT and TF
  and reproduce keras-hub's own outputs (its logits after its bilinear resize to the input size) within 1e-4.
* Target: ``--to keras-hub`` writes the files keras-hub writes, with the same datasets at the same paths as
  keras-hub's own file (compared with h5py, not through our reader), reads back bit for bit, and names what
  keras-hub cannot represent (exact GELU, LayerNorm epsilons: measured; Mix-FFN ratio: refused).
* Live (only where keras_hub imports): ``SegFormerImageSegmenter.from_preset`` loads what we wrote and gives our
  outputs; a fresh keras-hub model of another architecture converts and matches.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import fixture_path, shared_or_skip
from randomize import random_state, tiny_config
from segformer.cli import main as cli_main
from segformer.common.checkpoints.keras_hub_io import keras_hub_names, read_keras_hub_preset
from segformer.common.checkpoints.pretrained import save_pretrained_state
from segformer.conversion import ConversionError, convert
from segformer.conversion.report import SOURCE_FORMATS, TARGET_FORMATS

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")
h5py = pytest.importorskip("h5py")

TOLERANCE = 1e-4
KH_TINY = tiny_config(hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 2, 2, 4])  # keras-hub: distinct widths
PRESET_FILES = {"config.json", "model.weights.h5", "task.json", "task.weights.h5", "metadata.json"}


def _fixture(where: str):
    folder = fixture_path("keras_hub") if where == "local" else shared_or_skip("keras_hub")
    if where == "shared" and folder == fixture_path("keras_hub"):
        pytest.skip("shared fixture absent")
    return folder / "preset", np.load(folder / "expected.npz")


def _resized_nhwc(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (half-pixel, no antialias: keras Resizing = torch interpolate) resize to the input size, NHWC."""
    up = torch.nn.functional.interpolate(torch.from_numpy(np.array(logits)), size=(height, width), mode="bilinear", align_corners=False)
    return up.numpy().transpose(0, 2, 3, 1)


# One conversion checks both frameworks (the destination's from the written files, the other built from the tensors).
@pytest.mark.parametrize("where, to", [("local", "pt"), ("local", "tf"), ("shared", "tf")])
def test_keras_hub_preset_converts_and_reproduces_keras_hub(where, to, tmp_path):
    preset, expected = _fixture(where)
    pixels = expected["pixel_values_nhwc"]
    report = convert(preset, tmp_path / "out", to=to, inputs=[pixels.transpose(0, 3, 1, 2).copy()], keep_outputs=True)
    assert report.written and report.passed and report.source_kind == "keras-hub"
    config = report.config
    backbone = json.loads((preset / "config.json").read_text())["config"]["image_encoder"]["config"]
    assert config.depths == backbone["layerwise_depths"] and config.hidden_sizes == backbone["hidden_dims"]
    assert config.num_attention_heads == backbone["layerwise_num_heads"] and config.sr_ratios == backbone["layerwise_sr_ratios"]
    assert config.num_labels == json.loads((preset / "task.json").read_text())["config"]["num_classes"]
    assert (config.hidden_act, config.layer_norm_eps, config.patch_layer_norm_eps, config.stage_layer_norm_eps) == (
        "gelu_new", 1e-6, 1e-5, 1e-5)
    height, width = pixels.shape[1:3]
    for framework, out in report.outputs[0].items():  # `to` loaded from the written folder, the other built
        diff = float(np.max(np.abs(_resized_nhwc(out["logits"], height, width) - expected["outputs_nhwc"])))
        print(f"KERAS-HUB {where} -> {to}: {framework} vs keras-hub logits max|diff| {diff:.3e}")
        assert diff <= TOLERANCE, (framework, diff)
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["stage_layer_norm_eps"] == 1e-5 and written["hidden_act"] == "gelu_new"


@pytest.fixture(scope="module")
def local_pt_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("kh") / "pt"
    convert(_fixture("local")[0], out, to="pt", verify=False)
    return out


def test_to_keras_hub_writes_what_keras_hub_writes(local_pt_folder, tmp_path):
    """keras-hub -> PT -> keras-hub: every dataset of keras-hub's own weights files is in ours, same path, same bits."""
    preset = _fixture("local")[0]
    report = convert(local_pt_folder, tmp_path / "kh", to="keras-hub")
    assert report.written and report.passed
    assert not [c for c in report.checks if c.kind == "measured"]  # keras-hub numerics both sides: checked, not measured
    names = {p.name for p in (tmp_path / "kh").iterdir()}
    assert PRESET_FILES | {"preprocessor.json", "image_converter.json"} <= names
    for name in ("model.weights.h5", "task.weights.h5"):
        theirs, ours = {}, {}
        for path, store in ((preset / name, theirs), (tmp_path / "kh" / name, ours)):
            with h5py.File(path, "r") as handle:
                handle.visititems(lambda n, o, store=store: store.__setitem__(n, np.asarray(o)) if isinstance(o, h5py.Dataset) else None)
        assert set(theirs) == set(ours), (name, sorted(set(theirs) ^ set(ours))[:5])
        for path in theirs:
            if not path.startswith("optimizer/"):
                assert theirs[path].shape == ours[path].shape and theirs[path].tobytes() == ours[path].tobytes(), path
    for name in ("config.json", "task.json"):
        theirs, ours = (json.loads((folder / name).read_text()) for folder in (preset, tmp_path / "kh"))
        ours["config"].pop("preprocessor", None), theirs["config"].pop("preprocessor", None)
        assert ours == theirs, name
    # and back: the image converter we wrote becomes the same preprocessor_config.json again
    convert(tmp_path / "kh", tmp_path / "back", to="pt", verify=False)
    before, after = (json.loads((folder / "preprocessor_config.json").read_text()) for folder in (local_pt_folder, tmp_path / "back"))
    assert after["size"] == before["size"] == {"height": 64, "width": 64}
    for key in ("image_mean", "image_std"):
        assert np.allclose(after[key], before[key], rtol=0, atol=1e-12), key


def test_to_keras_hub_names_what_it_cannot_represent(tmp_path):
    config = KH_TINY  # exact GELU, LayerNorm eps 1e-6 / 1e-5 / stage 1e-6: not keras-hub's
    save_pretrained_state(tmp_path / "src", config, random_state(config, "semantic_segmentation"), "semantic_segmentation",
                          "pt", "SegformerForSemanticSegmentation")
    report = convert(tmp_path / "src", tmp_path / "kh", to="keras-hub", image_size=64)
    assert report.written
    text = str(report)
    assert "hidden_act 'gelu'" in text and "tanh" in text and "stage_layer_norm_eps 1e-06" in text
    assert "square" in text and "class names not written" not in text
    measured = [c for c in report.checks if c.kind == "measured"]
    logits = [c.max_abs_diff for c in measured if "logits" in c.name]
    assert logits and all(0 < d < 1 for d in logits), measured
    print(f"KERAS-HUB exact GELU model -> keras-hub numerics: max |logit diff| {max(logits):.3e}")
    assert "measured" in report.table()
    preset = read_keras_hub_preset(tmp_path / "kh")
    assert preset.image_size == 64 and preset.config.hidden_act == "gelu_new"


@pytest.mark.parametrize("config, message", [
    (tiny_config(hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 2, 2, 4], mlp_ratios=[4, 4, 2, 4]), "Mix-FFN"),
    (tiny_config(), "two stages of one width"),  # hidden sizes 8, 8, 16, 16
])
def test_to_keras_hub_refuses_what_changes_the_weights(config, message, tmp_path):
    save_pretrained_state(tmp_path / "src", config, random_state(config, "semantic_segmentation"), "semantic_segmentation",
                          "pt", "SegformerForSemanticSegmentation")
    with pytest.raises(ConversionError, match=message):
        convert(tmp_path / "src", tmp_path / "kh", to="keras-hub", verify=False)
    assert not (tmp_path / "kh").exists()


def test_to_keras_hub_image_size_must_fit_the_strides(local_pt_folder, tmp_path):
    with pytest.raises(ConversionError, match="multiple of 32"):
        convert(local_pt_folder, tmp_path / "kh", to="keras-hub", image_size=100, verify=False)
    with pytest.raises(ValueError, match="keras-hub. only"):
        convert(local_pt_folder, tmp_path / "pt", to="pt", image_size=64)
    assert not (tmp_path / "kh").exists() and not (tmp_path / "pt").exists()


def test_keras_hub_names_follow_keras_counters():
    config = tiny_config(depths=[2, 1, 3, 1])
    table = {canonical: path for canonical, _, path in keras_hub_names(config)}
    enc = "layers/functional/layers/"
    assert table["segformer.encoder.block.0.0.attention.self.query.weight"] == enc + "hierarchical_transformer_encoder/attn/q/vars/0"
    assert table["segformer.encoder.block.2.1.mlp.dense1.bias"] == enc + "hierarchical_transformer_encoder_4/mlp/fc1/vars/1"
    assert table["decode_head.linear_c.3.proj.weight"] == "layers/dense/vars/0"
    assert table["decode_head.linear_c.0.proj.weight"] == "layers/dense_3/vars/0"
    assert "segformer.encoder.block.3.0.attention.self.sr.weight" not in table  # sr_ratio 1: no reduction conv


def test_cli_convert_to_keras_hub_and_help_lists_every_format(local_pt_folder, tmp_path, capsys):
    assert cli_main(["convert", str(local_pt_folder), str(tmp_path / "kh"), "--to", "keras-hub", "--quiet"]) == 0
    assert "destination framework: keras-hub" in capsys.readouterr().out
    assert PRESET_FILES <= {p.name for p in (tmp_path / "kh").iterdir()}
    with pytest.raises(SystemExit):
        cli_main(["convert", "--help"])
    help_text = capsys.readouterr().out
    for what, example in SOURCE_FORMATS + TARGET_FORMATS:
        assert example in help_text and what.split(" (")[0] in help_text


# ------------------------------------------------------------------------------ live keras-hub (optional)
def _keras_hub():
    return pytest.importorskip("keras_hub")


def test_live_keras_hub_loads_what_we_write(tmp_path):
    keras_hub = _keras_hub()
    config = KH_TINY  # exact GELU: keras-hub computes tanh; compare with our model of the read-back preset
    save_pretrained_state(tmp_path / "src", config, random_state(config, "semantic_segmentation"), "semantic_segmentation",
                          "pt", "SegformerForSemanticSegmentation")
    convert(tmp_path / "src", tmp_path / "kh", to="keras-hub", image_size=64)
    model = keras_hub.models.SegFormerImageSegmenter.from_preset(str(tmp_path / "kh"))
    assert tuple(model.preprocessor.image_converter.image_size) == (64, 64)
    pixels = np.random.default_rng(1).standard_normal((1, 64, 64, 3)).astype(np.float32)
    theirs = np.asarray(model(pixels, training=False))
    report = convert(tmp_path / "kh", tmp_path / "back", to="pt", inputs=[pixels.transpose(0, 3, 1, 2).copy()],
                     keep_outputs=True)
    ours = _resized_nhwc(report.outputs[0]["pt"]["logits"], 64, 64)
    diff = float(np.max(np.abs(ours - theirs)))
    print(f"KERAS-HUB live: from_preset of our preset vs our model max|diff| {diff:.3e}")
    assert diff <= TOLERANCE


def test_live_fresh_keras_hub_model_converts(tmp_path):
    keras_hub = _keras_hub()
    import keras

    keras.utils.set_random_seed(3)
    encoder = keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 3, 1, 2], num_layers=4, layerwise_num_heads=[1, 1, 2, 4], layerwise_sr_ratios=[8, 4, 2, 1],
        max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3, 3, 3], layerwise_strides=[4, 2, 2, 2],
        image_shape=(96, 96, 3), hidden_dims=[8, 16, 24, 32])
    model = keras_hub.models.SegFormerImageSegmenter(
        backbone=keras_hub.models.SegFormerBackbone(image_encoder=encoder, projection_filters=16), num_classes=7)
    rng = np.random.default_rng(0)
    for variable in model.weights:
        low = 0.5 if "moving_variance" in variable.path else -0.3
        variable.assign(rng.uniform(low, low + 1.0 if low > 0 else 0.6, variable.shape).astype("float32"))
    model.save_to_preset(str(tmp_path / "preset"))
    pixels = rng.standard_normal((1, 96, 96, 3)).astype(np.float32)
    theirs = np.asarray(model(pixels, training=False))
    report = convert(tmp_path / "preset", tmp_path / "out", to="tf", inputs=[pixels.transpose(0, 3, 1, 2).copy()],
                     keep_outputs=True)
    for framework, out in report.outputs[0].items():
        diff = float(np.max(np.abs(_resized_nhwc(out["logits"], 96, 96) - theirs)))
        print(f"KERAS-HUB live fresh model -> {framework}: max|diff| {diff:.3e}")
        assert diff <= TOLERANCE, (framework, diff)


def test_info_lists_every_source_format(local_pt_folder, capsys):
    assert cli_main(["info", "--model", str(local_pt_folder), "--size", "64"]) == 0
    out = capsys.readouterr().out
    for what, example in SOURCE_FORMATS + TARGET_FORMATS:
        assert example in out and what in out


def test_from_pretrained_of_a_keras_hub_preset_says_convert_it():
    from segformer.common.base.errors import CheckpointError
    from segformer.pt import SegformerForSemanticSegmentation

    with pytest.raises(CheckpointError, match="keras-hub preset; convert it first: segformer convert"):
        SegformerForSemanticSegmentation.from_pretrained(_fixture("local")[0])
