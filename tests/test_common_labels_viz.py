"""Label sets (ADE20K, Cityscapes), colourized masks, overlays and PNG output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import ROOT
from segformer.common.images.labels import (
    LABEL_SETS,
    get_label_set,
    get_palette,
    id2label_to_label2id,
    load_id2label,
    make_palette,
)
from segformer.common.images.viz import colorize, load_mask_png, overlay, save_mask_png, save_png

CITYSCAPES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
]


def test_ade20k_label_set() -> None:
    id2label, palette = get_label_set("ade20k")
    assert len(id2label) == 150 and sorted(id2label) == list(range(150))
    assert [id2label[i] for i in range(5)] == ["wall", "building", "sky", "floor", "tree"]
    assert id2label[7] == "bed " and id2label[12] == "person" and id2label[149] == "flag"
    assert palette.dtype == np.uint8 and palette.shape == (150, 3)
    assert palette[:3].tolist() == [[120, 120, 120], [180, 120, 120], [6, 230, 230]]
    assert palette[-1].tolist() == [92, 0, 255]


def test_cityscapes_label_set() -> None:
    id2label, palette = get_label_set("Cityscapes")
    assert [id2label[i] for i in range(19)] == CITYSCAPES
    assert palette.shape == (19, 3)
    assert palette[:3].tolist() == [[128, 64, 128], [244, 35, 232], [70, 70, 70]]
    assert palette[-1].tolist() == [119, 11, 32]


def test_label_sets_are_fresh_copies_and_package_data() -> None:
    id2label, palette = get_label_set("ade20k")
    id2label[0] = "changed"
    palette[0] = 0
    again, palette_again = get_label_set("ade20k")
    assert again[0] == "wall" and palette_again[0].tolist() == [120, 120, 120]
    for name in LABEL_SETS:
        assert (ROOT / "segformer" / "common" / "data" / f"{name}.json").is_file()
    assert np.array_equal(get_palette("city"), get_label_set("cityscapes")[1])
    assert id2label_to_label2id(get_label_set("cityscapes")[0])["rider"] == 12


def test_unknown_label_set_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown label set 'coco'; valid names: ade20k, cityscapes"):
        get_label_set("coco")


def test_load_id2label_from_files(tmp_path: Path) -> None:
    hf_style = tmp_path / "id2label.json"
    hf_style.write_text(json.dumps({"0": "a", "1": "b"}))
    assert load_id2label(hf_style) == {0: "a", 1: "b"}
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "segformer", "id2label": {"0": "x", "2": "z"}}))
    assert load_id2label(str(config)) == {0: "x", 2: "z"}
    assert load_id2label("cityscapes")[18] == "bicycle"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"zero": "a"}))
    with pytest.raises(ValueError, match="keys must be integers, got 'zero'"):
        load_id2label(bad)
    with pytest.raises(FileNotFoundError, match="neither a JSON file nor a built-in label set"):
        load_id2label(tmp_path / "missing.json")


def test_colorize_and_overlay() -> None:
    palette = get_palette("cityscapes")
    labels = np.array([[0, 1], [255, 18]])
    rgb = colorize(labels, palette)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [128, 64, 128] and rgb[1, 0].tolist() == [0, 0, 0]
    assert np.array_equal(colorize(labels, "cityscapes"), rgb)
    image = np.full((2, 2, 3), 200, dtype=np.uint8)
    assert np.array_equal(overlay(image, labels, palette, alpha=0.0), image)
    full = overlay(image, labels, palette, alpha=1.0)
    assert np.array_equal(full[0], rgb[0]) and full[1, 0].tolist() == [200, 200, 200]
    half = overlay(Image.fromarray(image), labels, palette)
    assert half[0, 0].tolist() == [164, 132, 164]
    with pytest.raises(ValueError, match=r"values must be in \[0, 18\].*got values in \[0, 40\]"):
        colorize(np.array([[0, 40]]), palette)
    with pytest.raises(ValueError, match=r"image is \(3, 2\).*label_map is \(2, 2\)"):
        overlay(np.zeros((3, 2, 3), np.uint8), labels, palette)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        overlay(image, labels, palette, alpha=2)
    with pytest.raises(ValueError, match=r"palette must have shape \(num_classes, 3\)"):
        colorize(labels, np.zeros((4, 4)))


@settings(max_examples=30, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    num_classes=st.sampled_from([2, 19, 150, 256, 300, 4000]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_mask_png_round_trip(tmp_path_factory, height, width, num_classes, seed) -> None:
    folder = tmp_path_factory.mktemp("png")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=(height, width))
    before = labels.copy()
    palette = make_palette(num_classes, seed=1)
    path = folder / "mask.png"
    save_mask_png(path, labels, palette)
    assert np.array_equal(load_mask_png(path), labels) and np.array_equal(labels, before)
    with Image.open(path) as picture:
        if labels.max() <= 255 and num_classes <= 256:
            assert picture.mode == "P"
            table = np.array(picture.getpalette()[: 3 * num_classes]).reshape(-1, 3)
            assert np.array_equal(table, palette)
        else:
            assert picture.mode.startswith("I")
    assert sorted(p.name for p in folder.iterdir()) == ["mask.png"]


def test_png_writers(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    save_png(tmp_path / "a.png", rgb)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), rgb)
    with pytest.raises(FileExistsError):
        save_png(tmp_path / "a.png", rgb, overwrite=False)
    labels = np.array([[0, 1, 255]])
    save_mask_png(tmp_path / "m.png", labels, "ade20k")
    with Image.open(tmp_path / "m.png") as picture:
        assert picture.mode == "P" and picture.getpalette()[3 * 255 : 3 * 256] == [0, 0, 0]
    save_mask_png(tmp_path / "gray.png", labels)
    assert np.array_equal(load_mask_png(tmp_path / "gray.png"), labels)
    with pytest.raises(ValueError, match=r"label values must be in \[0, 65535\]"):
        save_mask_png(tmp_path / "bad.png", np.array([[70000]]))
    with pytest.raises(TypeError, match="save_png: rgb must be uint8"):
        save_png(tmp_path / "f.png", rgb.astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "gray.png", "m.png"]


def test_one_palette_rule_for_every_caller():
    """resolve_palette: named set > matching names > class count (150 ADE20K, 19 Cityscapes) > generated; the
    Segmenter, `segformer predict --palette` and `segformer demo` all use it."""
    from segformer.common.images.labels import get_label_set, make_palette, resolve_palette
    from segformer.commands.predict import palette_for
    from segformer.segmenter import default_palette

    ade_names, ade = get_label_set("ade20k")
    city_names, city = get_label_set("cityscapes")
    assert resolve_palette(150)[1] == "ade20k" and np.array_equal(resolve_palette(150)[0], ade)
    assert resolve_palette(19)[1] == "cityscapes" and np.array_equal(resolve_palette(19)[0], city)
    assert resolve_palette(7)[1] == "generated" and np.array_equal(resolve_palette(7)[0], make_palette(7))
    assert resolve_palette(5, "city")[1] == "cityscapes"  # a named set wins over the count
    assert resolve_palette(19, id2label=city_names)[1] == "cityscapes"
    assert resolve_palette(150, "auto", ade_names)[1] == "ade20k"
    with pytest.raises(ValueError, match="--palette 'cityscapes' has 19 colours but the model has 150 classes"):
        palette_for(150, "cityscapes")
    with pytest.raises(ValueError, match="unknown label set 'nope'; valid names: ade20k, cityscapes"):
        resolve_palette(3, "nope")
    with pytest.raises(ValueError, match="num_labels must be a positive int, got 0"):
        resolve_palette(0)
    for n in (3, 19, 150):
        assert np.array_equal(default_palette(n), resolve_palette(n)[0])
        assert np.array_equal(palette_for(n), resolve_palette(n)[0])


def test_resolve_palette_uses_the_checkpoints_own_colours_when_usable():
    from segformer.common.images.labels import resolve_palette

    own = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    colours, name = resolve_palette(3, palette=own)
    assert name == "checkpoint" and colours.dtype == np.uint8 and colours.tolist() == own
    assert resolve_palette(3, "cityscapes", palette=own)[1] == "cityscapes"  # a named set still wins
    for unusable in (own[:2], [[1, 2, 300]] * 3, [[1.5, 2, 3]] * 3, "red", [[1, 2]] * 3):
        assert resolve_palette(3, palette=unusable)[1] == "generated", unusable
