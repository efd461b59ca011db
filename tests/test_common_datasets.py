"""Folder datasets, the synthetic dataset generator and numpy batching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segformer.common.training.datasets import SegmentationFolderDataset, iter_batches, make_synthetic_dataset
from segformer.common.training.metrics import SegmentationMetric
from segformer.common.images.transforms import EvalTransform, TrainTransform


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_dataset(root, num_train=6, num_val=3, size=(24, 32), num_labels=5, seed=3)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_layout_and_content(synthetic):
    files = _files(synthetic)
    assert len([f for f in files if f.startswith("images/training/")]) == 6
    assert len([f for f in files if f.startswith("annotations/validation/")]) == 3
    assert not [f for f in files if f.endswith(".tmp")]
    id2label = json.loads(files["id2label.json"])
    assert list(id2label) == ["0", "1", "2", "3", "4"] and id2label["0"] == "background"
    dataset = SegmentationFolderDataset(synthetic, "training")
    assert len(dataset) == 6 and dataset.id2label == {int(k): v for k, v in id2label.items()}
    seen = set()
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["pixel_values"].shape == (24, 32, 3) and item["pixel_values"].dtype == np.uint8
        assert item["labels"].shape == (24, 32) and item["labels"].dtype == np.int64
        assert item["labels"].min() >= 0 and item["labels"].max() < 5
        seen |= set(np.unique(item["labels"]).tolist())
    assert 0 in seen and len(seen) >= 3


def test_synthetic_deterministic(tmp_path, synthetic):
    again = make_synthetic_dataset(tmp_path / "again", num_train=6, num_val=3, size=(24, 32), num_labels=5, seed=3)
    assert _files(again) == _files(synthetic)
    other = make_synthetic_dataset(tmp_path / "other", num_train=6, num_val=3, size=(24, 32), num_labels=5, seed=4)
    assert _files(other) != _files(synthetic)


def test_synthetic_is_learnable(tmp_path):
    """Nearest mean colour per pixel, fitted on training, already reaches mIoU >= 0.9 on validation."""
    num_labels = 13
    root = make_synthetic_dataset(tmp_path, num_train=30, num_val=8, size=(32, 32), num_labels=num_labels, seed=0)
    train = SegmentationFolderDataset(root, "training")
    pixels = np.concatenate([train[i]["pixel_values"].reshape(-1, 3) for i in range(len(train))]).astype(float)
    labels = np.concatenate([train[i]["labels"].ravel() for i in range(len(train))])
    present = np.unique(labels)
    assert len(present) == num_labels
    centres = np.stack([pixels[labels == c].mean(axis=0) for c in range(num_labels)])
    metric = SegmentationMetric(num_labels)
    val = SegmentationFolderDataset(root, "validation")
    for i in range(len(val)):
        item = val[i]
        distance = ((item["pixel_values"].reshape(-1, 1, 3).astype(float) - centres[None]) ** 2).sum(-1)
        metric.update(distance.argmin(axis=1).reshape(item["labels"].shape), item["labels"])
    assert metric.compute()["mean_iou"] >= 0.9


def test_reduce_labels_and_id2label(synthetic):
    raw = SegmentationFolderDataset(synthetic, "validation")[0]["labels"]
    reduced_ds = SegmentationFolderDataset(synthetic, "validation", reduce_labels=True)
    reduced = reduced_ds[0]["labels"]
    np.testing.assert_array_equal(reduced, np.where(raw == 0, 255, raw - 1))
    assert reduced_ds.id2label[0] == SegmentationFolderDataset(synthetic, "validation").id2label[1]
    assert 4 not in reduced_ds.id2label


def test_transform_items_and_seeded_augmentation(synthetic):
    transform = TrainTransform(crop_size=(16, 16), img_scale=(32, 24))
    dataset = SegmentationFolderDataset(synthetic, "training", transform=transform, seed=1)
    a = dataset[2]
    b = dataset[2]
    assert a["name"] == "training_00002"
    assert a["pixel_values"].shape == (3, 16, 16) and a["pixel_values"].dtype == np.float32
    assert a["labels"].shape == (16, 16) and a["labels"].dtype == np.int64
    np.testing.assert_array_equal(a["pixel_values"], b["pixel_values"])
    dataset.set_epoch(1)
    assert not np.array_equal(dataset[2]["pixel_values"], a["pixel_values"])
    assert dataset[-1]["name"] == dataset.names[-1]
    with pytest.raises(IndexError, match="out of range"):
        dataset[len(dataset)]


def test_iter_batches(synthetic):
    dataset = SegmentationFolderDataset(synthetic, "training", transform=EvalTransform())
    batches = list(iter_batches(dataset, batch_size=4))
    assert [len(b["name"]) for b in batches] == [4, 2]
    assert batches[0]["pixel_values"].shape == (4, 3, 24, 32) and batches[0]["labels"].shape == (4, 24, 32)
    assert [len(b["name"]) for b in iter_batches(dataset, 4, drop_last=True)] == [4]
    order_a = [n for b in iter_batches(dataset, 2, shuffle=True, rng=np.random.default_rng(0)) for n in b["name"]]
    order_b = [n for b in iter_batches(dataset, 2, shuffle=True, rng=np.random.default_rng(0)) for n in b["name"]]
    assert order_a == order_b and sorted(order_a) == dataset.names and order_a != dataset.names
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_batches(dataset, 0))


def test_iter_batches_refuses_ragged(tmp_path):
    images, labels = tmp_path / "img", tmp_path / "lab"
    images.mkdir()
    labels.mkdir()
    for name, size in (("a", (4, 5)), ("b", (6, 5))):
        Image.fromarray(np.zeros((*size, 3), np.uint8)).save(images / f"{name}.jpg")
        Image.fromarray(np.zeros(size, np.uint8)).save(labels / f"{name}.png")
    dataset = SegmentationFolderDataset.from_dirs(images, labels)
    with pytest.raises(ValueError, match="different shapes"):
        next(iter_batches(dataset, 2))
    assert len(list(iter_batches(dataset, 1))) == 2


def _write_pair(images: Path, labels: Path, stem: str, image_suffix=".jpg", label_suffix=".png", size=(4, 6)):
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 128, np.uint8)).save(images / f"{stem}{image_suffix}")
    Image.fromarray(np.ones(size, np.uint8)).save(labels / f"{stem}{label_suffix}")


def test_from_dirs_pairing_by_stem(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    _write_pair(images, labels, "b", ".png")
    _write_pair(images, labels, "a", ".JPG")
    Image.fromarray(np.ones((4, 6), np.uint8)).save(labels / "only_label.png")  # extra labels are ignored
    (images / "notes.txt").write_text("not an image")
    dataset = SegmentationFolderDataset.from_dirs(images, labels)
    assert dataset.names == ["a", "b"] and len(dataset) == 2
    item = dataset[0]
    assert item["pixel_values"].shape == (4, 6, 3) and item["labels"].dtype == np.int64
    assert dataset.id2label is None


def test_from_dirs_suffixes_recursive(tmp_path):
    images, labels = tmp_path / "leftImg8bit", tmp_path / "gtFine"
    _write_pair(images / "aachen", labels / "aachen", "aachen_000000", "_leftImg8bit.png", "_gtFine_labelTrainIds.png")
    _write_pair(images / "bremen", labels / "bremen", "bremen_000001", "_leftImg8bit.png", "_gtFine_labelTrainIds.png")
    dataset = SegmentationFolderDataset.from_dirs(
        images, labels, image_suffix="_leftImg8bit.png", label_suffix="_gtFine_labelTrainIds.png", recursive=True
    )
    assert dataset.names == ["aachen/aachen_000000", "bremen/bremen_000001"]


def test_errors(tmp_path, synthetic):
    with pytest.raises(ValueError, match=r"unknown split 'test'.*\['training', 'validation'\]"):
        SegmentationFolderDataset(synthetic, "test")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        SegmentationFolderDataset(tmp_path / "nope")
    empty_images, empty_labels = tmp_path / "empty_i", tmp_path / "empty_l"
    empty_images.mkdir()
    empty_labels.mkdir()
    with pytest.raises(ValueError, match="no images"):
        SegmentationFolderDataset.from_dirs(empty_images, empty_labels)
    with pytest.raises(FileNotFoundError, match="labels folder"):
        SegmentationFolderDataset.from_dirs(empty_images, tmp_path / "missing")

    images, labels = tmp_path / "i", tmp_path / "l"
    for k in range(8):
        _write_pair(images, tmp_path / "unused", f"img{k}")
    _write_pair(images, labels, "img_ok")
    with pytest.raises(ValueError, match=r"8 of 9 images.*\['img0', 'img1', 'img2', 'img3', 'img4'\]"):
        SegmentationFolderDataset.from_dirs(images, labels)

    dup_images, dup_labels = tmp_path / "di", tmp_path / "dl"
    _write_pair(dup_images, dup_labels, "x", ".jpg")
    _write_pair(dup_images, dup_labels, "x", ".png")
    with pytest.raises(ValueError, match="share the name 'x'"):
        SegmentationFolderDataset.from_dirs(dup_images, dup_labels)

    bad_images, bad_labels = tmp_path / "bi", tmp_path / "bl"
    _write_pair(bad_images, bad_labels, "x")
    Image.fromarray(np.ones((5, 6), np.uint8)).save(bad_labels / "x.png")
    with pytest.raises(ValueError, match=r"\(4, 6\).*\(5, 6\)"):
        SegmentationFolderDataset.from_dirs(bad_images, bad_labels)[0]
    Image.fromarray(np.ones((4, 6, 3), np.uint8)).save(bad_labels / "x.png")
    with pytest.raises(ValueError, match="mode 'RGB'"):
        SegmentationFolderDataset.from_dirs(bad_images, bad_labels)[0]

    with pytest.raises(ValueError, match=r"num_labels must be an integer in \[2, 255\]"):
        make_synthetic_dataset(tmp_path / "s", num_labels=1)
    with pytest.raises(ValueError, match="size"):
        make_synthetic_dataset(tmp_path / "s", size=(4, 4))


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims ``width x height`` grey pixels in its header (a decompression bomb's first bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_decompression_bomb_label_is_a_clear_error_naming_the_file(tmp_path, monkeypatch):
    from segformer.common.images.image_io import BadImageError
    from segformer.common.training.datasets import load_label

    _png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(BadImageError, match=r"bomb.png: .*decompression bomb") as info:
        load_label(tmp_path / "bomb.png")
    assert info.value.path == str(tmp_path / "bomb.png")
    Image.new("L", (50, 50)).save(tmp_path / "warn.png")  # between Pillow's limit and twice it: refused as well
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    with pytest.raises(BadImageError, match=r"warn.png: too many pixels.*decompression bomb"):
        load_label(tmp_path / "warn.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_label(tmp_path / "missing.png")


def test_eval_lists_a_bomb_label_before_any_work(tmp_path, capsys):
    from conftest import fixture_path
    from segformer.cli import main

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    _png_header_only(tmp_path / "labels" / "a.png", 100_000, 100_000)
    capsys.readouterr()
    code = main(["eval", "--model", str(fixture_path("hf/tiny-seg")), "--images", str(tmp_path / "images"),
                 "--labels", str(tmp_path / "labels"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{tmp_path / 'labels' / 'a.png'}: label map: too many pixels" in err and "decompression bomb" in err
