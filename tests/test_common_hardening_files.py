"""Files and folders: folder-atomic save_pretrained, convert --overwrite without a
moment lacking the destination, stale temporaries, the umask left alone, environment faults as one line."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from conftest import fixture_path
from randomize import random_state, tiny_config
from segformer.common.base import atomic

TINY = fixture_path("original/tiny.pth")


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _siblings(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


class Killed(BaseException):
    pass


@pytest.fixture
def no_umask(monkeypatch):
    def refuse(mask):
        raise AssertionError("os.umask was called: other threads would create files with mode 0666 meanwhile")

    monkeypatch.setattr(os, "umask", refuse)


def test_atomic_folder_kill_between_weights_and_config_keeps_the_old_pair(tmp_path, no_umask):
    from segformer.common.model.config import SegformerConfig

    dst = tmp_path / "model"
    dst.mkdir()
    (dst / "model.safetensors").write_bytes(b"old weights")
    (dst / "config.json").write_text("old config")
    (dst / "train_log.jsonl").write_text("{}\n")
    (dst / "last").mkdir()
    (dst / "last" / "training_state.pt").write_bytes(b"state")
    before = _snapshot(dst)
    with pytest.raises(Killed):
        with atomic.atomic_folder(dst) as folder:
            (folder / "model.safetensors").write_bytes(b"new weights")
            raise Killed
    assert _snapshot(dst) == before and _siblings(dst) == []
    inode = dst.stat().st_ino
    with atomic.atomic_folder(dst) as folder:
        (folder / "model.safetensors").write_bytes(b"new weights")
        SegformerConfig(num_labels=3).save_pretrained(folder)
    after = _snapshot(dst)
    assert after["model.safetensors"] == b"new weights" and after["config.json"] != b"old config"
    assert after["train_log.jsonl"] == b"{}\n" and after["last/training_state.pt"] == b"state"  # carried over
    assert dst.stat().st_ino != inode and _siblings(dst) == []  # a new folder was swapped in
    mask = atomic.current_umask()
    assert (dst / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask


def test_replace_folder_exchanges_without_a_missing_moment(tmp_path, monkeypatch):
    dst, new = tmp_path / "dst", tmp_path / "new"
    dst.mkdir()
    new.mkdir()
    (dst / "a").write_text("old")
    (new / "a").write_text("new")
    renames = []
    real_rename = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: (renames.append((a, b)), real_rename(a, b))[1])
    atomic.replace_folder(new, dst)
    if sys.platform.startswith("linux"):
        assert renames == []  # one renameat2(RENAME_EXCHANGE), no rename that leaves dst missing
    assert (dst / "a").read_text() == "new" and not new.exists()


def test_fallback_without_exchange_and_stale_temporaries_of_dead_processes(tmp_path, monkeypatch):
    dst, new = tmp_path / "dst", tmp_path / "new"
    dst.mkdir()
    new.mkdir()
    (new / "a").write_text("new")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    atomic.replace_folder(new, dst)
    assert (dst / "a").read_text() == "new" and _siblings(dst) == []
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_tmp = tmp_path / f".dst.{dead.pid}.abcd1234.tmp"
    stale_tmp.mkdir()
    (stale_tmp / "x").write_text("partial")
    with pytest.warns(UserWarning, match="temporary folder left by a killed write"):
        with atomic.atomic_folder(dst) as folder:
            (folder / "b").write_text("b")
    assert not stale_tmp.exists() and (dst / "a").exists() and (dst / "b").exists()
    # a run killed between "move the old folder aside" and "rename the new one in": the next write restores it
    old = tmp_path / f".gone.{dead.pid}.abcd1234.old"
    old.mkdir()
    (old / "config.json").write_text("kept")
    with pytest.warns(UserWarning, match="restored"):
        with atomic.atomic_folder(tmp_path / "gone") as folder:
            (folder / "model.safetensors").write_bytes(b"w")
    assert (tmp_path / "gone" / "config.json").read_text() == "kept"


def test_pt_save_pretrained_is_folder_atomic(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from segformer.common.model import config as config_module
    from segformer.pt import SegformerForSemanticSegmentation

    config = tiny_config()
    model = SegformerForSemanticSegmentation(config)
    model.save_pretrained(tmp_path / "m")
    before = _snapshot(tmp_path / "m")
    model.load_state_dict_numpy(random_state(config, "seg", seed=3))

    def killed(*args, **kwargs):  # the weights are written, then the process dies before config.json
        raise Killed

    monkeypatch.setattr(config_module.SegformerConfig, "save_pretrained", killed)
    with pytest.raises(Killed):
        model.save_pretrained(tmp_path / "m")
    assert _snapshot(tmp_path / "m") == before and _siblings(tmp_path / "m") == []


def test_tf_save_pretrained_is_folder_atomic(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    from segformer.common.model import config as config_module
    from segformer.tf import TFSegformerForSemanticSegmentation

    model = TFSegformerForSemanticSegmentation(tiny_config())
    model.build()
    model.save_pretrained(tmp_path / "m")
    before = _snapshot(tmp_path / "m")
    monkeypatch.setattr(config_module.SegformerConfig, "save_pretrained", lambda *a, **k: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        model.save_pretrained(tmp_path / "m")
    assert _snapshot(tmp_path / "m") == before and _siblings(tmp_path / "m") == []


# ------------------------------------------------------------------------------------ environment faults


def _enospc(monkeypatch):
    def full(filename, data):  # every writer's bytes reach the disk here
        with open(filename, "wb") as handle:
            handle.write(data[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "_write_file", full)


def _readonly(monkeypatch, folder):
    real_mkdir = os.mkdir

    def mkdir(path, mode=0o777, *args, **kwargs):
        if os.path.dirname(os.path.abspath(path)) == str(folder):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_mkdir(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)


@pytest.mark.parametrize("fault", ["enospc", "readonly", "parent_is_file"])
def test_convert_environment_faults_are_one_error_line_and_keep_the_old_folder(tmp_path, monkeypatch, capsys, fault):
    pytest.importorskip("torch")
    from segformer.cli import main as cli_main

    dst = tmp_path / "out"
    assert cli_main(["convert", str(TINY), str(dst), "--to", "pt", "--quiet", "--no-verify"]) == 0
    before = _snapshot(dst)
    capsys.readouterr()
    if fault == "enospc":
        _enospc(monkeypatch)
    elif fault == "readonly":
        _readonly(monkeypatch, tmp_path)
    else:
        (tmp_path / "file").write_text("x")
        dst = tmp_path / "file" / "out"
    status = cli_main(["convert", str(TINY), str(dst), "--to", "pt", "--quiet", "--no-verify", "--overwrite"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: ") and str(tmp_path) in err[0], err
    reason = {"enospc": "No space left", "readonly": "Read-only file system", "parent_is_file": "is a file, not a folder"}
    assert reason[fault] in err[0], err
    assert _snapshot(tmp_path / "out") == before and _siblings(tmp_path / "out") == (["file"] if fault == "parent_is_file" else [])


@pytest.mark.parametrize("fault", ["enospc", "readonly", "parent_is_file"])
def test_save_pretrained_environment_faults_keep_the_old_folder(tmp_path, monkeypatch, fault):
    pytest.importorskip("torch")
    from segformer.pt import SegformerForSemanticSegmentation

    model = SegformerForSemanticSegmentation(tiny_config())
    dst = tmp_path / "m"
    model.save_pretrained(dst)
    before = _snapshot(dst)
    if fault == "enospc":
        _enospc(monkeypatch)
        target = dst
    elif fault == "readonly":
        _readonly(monkeypatch, tmp_path)
        target = dst
    else:
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "m"
    with pytest.raises(OSError) as info:
        model.save_pretrained(target)
    assert str(tmp_path) in str(info.value) or str(tmp_path) in str(info.value.filename)
    reason = {"enospc": "No space left", "readonly": "Read-only file system", "parent_is_file": "is a file, not a folder"}
    assert reason[fault] in str(info.value)
    assert _snapshot(dst) == before


def test_train_environment_fault_is_one_error_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    from segformer.cli import main as cli_main
    from segformer.common.training.datasets import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", num_train=4, num_val=0, size=(40, 40), num_labels=3)
    tiny_config(num_labels=3).save_pretrained(tmp_path / "cfg")
    _enospc(monkeypatch)
    status = cli_main(["train", "--model", str(tmp_path / "cfg" / "config.json"), "--data", str(data), "--out",
                       str(tmp_path / "run"), "--steps", "1", "--batch-size", "2", "--crop-size", "32",
                       "--img-scale", "40,40", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: cannot write") and "run" in err[0], err
    assert "No space left on device" in err[0]


def test_atomic_folder_on_the_working_directory_stays_usable(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("keep")
    monkeypatch.chdir(work)
    with atomic.atomic_folder(".") as folder:
        (folder / "config.json").write_text("{}")
    assert os.path.samefile(os.getcwd(), work) and (work / "config.json").read_text() == "{}"
    assert (work / "keep.txt").read_text() == "keep" and sorted(os.listdir(work)) == ["config.json", "keep.txt"]


def test_nested_processor_config_is_a_value_error_naming_the_file(tmp_path):
    from segformer import SegformerImageProcessor

    (tmp_path / "preprocessor_config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="preprocessor_config.json is not valid JSON"):
        SegformerImageProcessor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        SegformerImageProcessor.from_pretrained(tmp_path)


def test_one_error_boundary_for_every_command(monkeypatch, capsys):
    """cli.main prints documented errors, environment faults and NaN stops as one line with the documented
    status, whatever the command; SEGFORMER_TRACEBACK=1 shows the traceback instead; a bug is never hidden."""
    import errno
    import importlib

    from segformer.cli import main as cli_main

    presets = importlib.import_module("segformer.commands.presets")
    cases = [
        (ValueError("bad --thing: 3, allowed 1..2"), 2, "error: bad --thing: 3, allowed 1..2"),
        (KeyError("unknown key 'x'"), 2, "error: unknown key 'x'"),
        (OSError(errno.ENOSPC, "No space left on device"), 2, "error: cannot write 'the output': No space left on device"),
        (FloatingPointError("step 3: the loss is NaN"), 1, "error: step 3: the loss is NaN"),
    ]
    for error, status, line in cases:
        def fail(args, error=error):
            raise error

        monkeypatch.setattr(presets, "run", fail)
        capsys.readouterr()
        assert cli_main(["presets"]) == status
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(line), err
    monkeypatch.setenv("SEGFORMER_TRACEBACK", "1")
    with pytest.raises(ValueError, match="allowed 1..2"):
        monkeypatch.setattr(presets, "run", lambda args: (_ for _ in ()).throw(ValueError("bad --thing: 3, allowed 1..2")))
        cli_main(["presets"])
    monkeypatch.delenv("SEGFORMER_TRACEBACK")
    monkeypatch.setattr(presets, "run", lambda args: [][1])
    with pytest.raises(IndexError):  # a bug: a traceback, not an "error:" line
        cli_main(["presets"])
