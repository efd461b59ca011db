"""Interrupted writes leave the previous file intact and no temporary file behind."""

from __future__ import annotations

import os

import numpy as np
import pytest

from randomize import random_state, tiny_config
from segformer.common.base import atomic
from segformer.common.checkpoints import read_safetensors, read_tf_h5, save_safetensors, write_tf_h5


class Interrupted(RuntimeError):
    pass


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _assert_intact(folder, before):
    after = _snapshot(folder)
    assert after == before, "a previous file changed or a temporary file was left behind"


def test_atomic_path_interrupted_keeps_old_file(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old contents")
    before = _snapshot(tmp_path)
    with pytest.raises(Interrupted):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise Interrupted
    _assert_intact(tmp_path, before)
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        atomic.atomic_write_bytes(target, b"x", overwrite=False)
    atomic.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)  # not mkstemp's private 0600


def test_safetensors_write_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    state = random_state(tiny_config(), "seg", seed=0)
    save_safetensors(state, path)
    before = _snapshot(tmp_path)

    def half_then_crash(filename, data):  # the bytes reach the disk here
        with open(filename, "wb") as handle:
            handle.write(data[:20])
        raise Interrupted

    monkeypatch.setattr(atomic, "_write_file", half_then_crash)
    with pytest.raises(Interrupted):
        save_safetensors(random_state(tiny_config(), "seg", seed=1), path)
    _assert_intact(tmp_path, before)
    loaded = read_safetensors(path)
    assert all(np.array_equal(loaded[k], state[k]) for k in state)


def test_h5_write_interrupted(tmp_path, monkeypatch):
    import h5py

    path = tmp_path / "tf_model.h5"
    write_tf_h5(path, "m", {"segformer/a/kernel": np.ones((2, 3), np.float32)})
    before = _snapshot(tmp_path)
    calls = {"n": 0}
    real = h5py.Group.create_dataset

    def crash_on_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupted
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", crash_on_second)
    with pytest.raises(Interrupted):
        write_tf_h5(path, "m", {"segformer/a/kernel": np.zeros((2, 3), np.float32), "segformer/b/bias": np.zeros(3, np.float32)})
    _assert_intact(tmp_path, before)
    assert np.array_equal(read_tf_h5(path)[1]["segformer/a/kernel"], np.ones((2, 3)))


@pytest.mark.parametrize("safe", [True, False])
def test_pt_save_pretrained_interrupted(tmp_path, monkeypatch, safe):
    torch = pytest.importorskip("torch")
    from segformer.pt import SegformerForSemanticSegmentation

    config = tiny_config()
    model = SegformerForSemanticSegmentation(config).eval()
    model.save_pretrained(tmp_path, safe_serialization=safe)
    before = _snapshot(tmp_path)
    model.load_state_dict_numpy(random_state(config, "seg", seed=5))
    def crash(filename, data):  # both formats are serialized in memory; the bytes reach the disk here
        open(filename, "wb").write(data[: len(data) // 2])
        raise Interrupted

    monkeypatch.setattr(atomic, "_write_file", crash)
    with pytest.raises(Interrupted):
        model.save_pretrained(tmp_path, safe_serialization=safe)
    _assert_intact(tmp_path, before)
    again = SegformerForSemanticSegmentation.from_pretrained(tmp_path)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in SegformerForSemanticSegmentation.from_pretrained(tmp_path).state_dict().items())


def test_config_and_processor_writes_interrupted(tmp_path, monkeypatch):
    from segformer import SegformerConfig, SegformerImageProcessor

    SegformerConfig(num_labels=4).save_pretrained(tmp_path)
    SegformerImageProcessor(size=128).save_pretrained(tmp_path)
    before = _snapshot(tmp_path)
    real = atomic._write_file

    def partial(path, data):
        real(path, data[: len(data) // 2])
        raise Interrupted

    monkeypatch.setattr(atomic, "_write_file", partial)
    with pytest.raises(Interrupted):
        SegformerConfig(num_labels=9).save_pretrained(tmp_path)
    with pytest.raises(Interrupted):
        SegformerImageProcessor(size=64).save_pretrained(tmp_path)
    monkeypatch.undo()
    _assert_intact(tmp_path, before)
    assert SegformerConfig.from_pretrained(tmp_path).num_labels == 4


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _exchange_supported(folder) -> bool:
    first, second = folder / "probe-a", folder / "probe-b"
    first.mkdir()
    second.mkdir()
    try:
        return atomic._exchange(first, second)
    finally:
        first.rmdir()
        second.rmdir()


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_saved_model_export_is_one_atomic_folder_write(tmp_path, monkeypatch):
    """The SavedModel export goes through atomic_folder: the destination never goes missing, an export that
    fails half-way leaves the old folder as it was, and temporaries of a killed export are cleaned up."""
    pytest.importorskip("tensorflow")
    import keras

    from segformer.tf import TFSegformerForSemanticSegmentation
    from segformer.tf.export import export_saved_model

    if not _exchange_supported(tmp_path):
        pytest.skip("this file system has no exchange-rename (the fallback has a moment without the folder)")
    model = TFSegformerForSemanticSegmentation(tiny_config())
    model.build()
    target = tmp_path / "saved"
    (target / "variables").mkdir(parents=True)  # an earlier export
    (target / "saved_model.pb").write_bytes(b"old graph")
    (target / "variables" / "variables.index").write_bytes(b"old index")
    before = _tree(target)
    archive_class = type(keras.export.ExportArchive())  # the backend's class (ExportArchive.__new__ picks it)
    real_write_out = archive_class.write_out
    seen = []

    def half_then_crash(self, filepath, *args, **kwargs):
        seen.append(os.path.basename(filepath))
        with open(os.path.join(filepath, "saved_model.pb"), "wb") as handle:
            handle.write(b"partial")
        raise Interrupted

    monkeypatch.setattr(archive_class, "write_out", half_then_crash)
    with pytest.raises(Interrupted):
        export_saved_model(model, target)
    assert _tree(target) == before and sorted(os.listdir(tmp_path)) == ["saved"]
    # written into a temporary the stale cleaner knows (.NAME.PID.RANDOM.tmp)
    assert len(seen) == 1 and seen[0].startswith(".saved.") and seen[0].endswith(".tmp"), seen
    pid = seen[0].split(".")[2]
    assert pid == str(os.getpid())

    # the destination exists after every rename of the export
    monkeypatch.setattr(archive_class, "write_out", real_write_out)
    for name in ("rename", "replace"):
        real = getattr(os, name)

        def checked(src, dst, *args, _real=real, **kwargs):
            _real(src, dst, *args, **kwargs)
            assert target.exists(), f"{target} was missing after os.{_real.__name__}({src}, {dst})"

        monkeypatch.setattr(os, name, checked)
    # a temporary left by a killed export (its process gone) is removed by the next export, with a warning
    leftover = tmp_path / f".saved.{_dead_pid()}.0badf00d.tmp"
    (leftover / "variables").mkdir(parents=True)
    (leftover / "saved_model.pb").write_bytes(b"half")
    with pytest.warns(UserWarning, match="a temporary folder left by a killed write"):
        export_saved_model(model, target)
    assert sorted(os.listdir(tmp_path)) == ["saved"]
    assert (target / "saved_model.pb").read_bytes() != b"old graph"
    assert (target / "variables" / "variables.index").read_bytes() != b"old index"


@pytest.mark.slow
def test_image_segmenter_saved_model_is_one_atomic_folder_write(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    from segformer.common.images.image_processing import SegformerImageProcessor
    from segformer.tf import TFSegformerForSemanticSegmentation, TFSegformerImageSegmenter

    segmenter = TFSegformerImageSegmenter.from_processor(
        TFSegformerForSemanticSegmentation(tiny_config()), SegformerImageProcessor(size=64)
    )
    target = tmp_path / "serving"
    target.mkdir()
    (target / "old.txt").write_text("old export")
    before = _tree(target)

    def crash(obj, export_dir, *args, **kwargs):
        (Path(export_dir) / "saved_model.pb").write_bytes(b"partial")
        raise Interrupted

    from pathlib import Path

    real_save = tf.saved_model.save
    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(Interrupted):
        segmenter.export_saved_model(str(target))
    assert _tree(target) == before and sorted(os.listdir(tmp_path)) == ["serving"]
    monkeypatch.setattr(tf.saved_model, "save", real_save)
    segmenter.export_saved_model(str(target))
    assert (target / "saved_model.pb").is_file() and not (target / "old.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["serving"]
