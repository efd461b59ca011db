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
    import safetensors.numpy

    path = tmp_path / "model.safetensors"
    state = random_state(tiny_config(), "seg", seed=0)
    save_safetensors(state, path)
    before = _snapshot(tmp_path)

    def half_then_crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"partial")
        raise Interrupted

    monkeypatch.setattr(safetensors.numpy, "save_file", half_then_crash)
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
    if safe:
        import safetensors.numpy

        def crash(tensors, filename, metadata=None):
            open(filename, "wb").write(b"partial")
            raise Interrupted

        monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    else:
        def crash(obj, f, *args, **kwargs):
            open(f, "wb").write(b"PK partial")
            raise Interrupted

        monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(Interrupted):
        model.save_pretrained(tmp_path, safe_serialization=safe)
    _assert_intact(tmp_path, before)
    again = SegformerForSemanticSegmentation.from_pretrained(tmp_path)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in SegformerForSemanticSegmentation.from_pretrained(tmp_path).state_dict().items())


def test_config_and_processor_writes_interrupted(tmp_path, monkeypatch):
    from pathlib import Path

    from segformer import SegformerConfig, SegformerImageProcessor

    SegformerConfig(num_labels=4).save_pretrained(tmp_path)
    SegformerImageProcessor(size=128).save_pretrained(tmp_path)
    before = _snapshot(tmp_path)
    real = Path.write_bytes

    def partial(self, data):
        real(self, data[: len(data) // 2])
        raise Interrupted

    monkeypatch.setattr(Path, "write_bytes", partial)
    with pytest.raises(Interrupted):
        SegformerConfig(num_labels=9).save_pretrained(tmp_path)
    with pytest.raises(Interrupted):
        SegformerImageProcessor(size=64).save_pretrained(tmp_path)
    monkeypatch.undo()
    _assert_intact(tmp_path, before)
    assert SegformerConfig.from_pretrained(tmp_path).num_labels == 4
