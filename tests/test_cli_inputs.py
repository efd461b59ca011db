"""``segformer predict`` inputs: output names unique per input, glob sub-folders, ``@list`` files that are not
text, images whose name starts with ``@``, and non-regular files (a FIFO must not hang the command)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import fixture_path
from segformer.cli import main

MODEL = fixture_path("hf/tiny-seg")


def _picture(path: Path, seed: int = 0, size: tuple[int, int] = (40, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_outputs_of_two_inputs_never_share_a_path(tmp_path, capsys, extra):
    first = _picture(tmp_path / "in" / "x.png", 0)
    second = _picture(tmp_path / "in" / "x_overlay.png", 1)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["predict", "--model", str(MODEL), str(first), str(second), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert str(first) in err and str(second) in err and "x_overlay.png" in err and "rename" in err
    assert not out.exists()  # refused before any work


def test_no_overlay_leaves_nothing_to_collide(tmp_path, capsys):
    first = _picture(tmp_path / "in" / "x.png", 0)
    second = _picture(tmp_path / "in" / "x_overlay.png", 1)
    out = tmp_path / "out"
    assert main(["predict", "--model", str(MODEL), str(first), str(second), "--out", str(out), "--no-overlay",
                 "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["legend.png", "x.png", "x_overlay.png"]


def test_glob_inputs_keep_sub_folders_like_folder_inputs(tmp_path, capsys):
    shots = tmp_path / "shots"
    for name in ("a/x.png", "b/x.png", "c/d/y.png"):
        _picture(shots / name, len(name))
    for inputs, out in (([str(shots / "**" / "*.png")], tmp_path / "by-glob"), ([str(shots)], tmp_path / "by-folder")):
        assert main(["predict", "--model", str(MODEL), *inputs, "--out", str(out), "--no-overlay", "--no-progress"]) == 0
        written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
        assert written == ["a/x.png", "b/x.png", "c/d/y.png", "legend.png"], inputs


def test_binary_list_file_is_one_clear_error(tmp_path, capsys):
    _picture(tmp_path / "photo.png")
    capsys.readouterr()
    assert main(["predict", "--model", str(MODEL), f"@{tmp_path / 'photo.png'}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "file list" in err and "is not a text file" in err and "photo.png" in err
    (tmp_path / "nul.txt").write_bytes(b"photo.png\x00\n")
    assert main(["predict", "--model", str(MODEL), f"@{tmp_path / 'nul.txt'}", "--out", str(tmp_path / "o")]) == 2
    assert "NUL bytes" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    assert main(["predict", "--model", str(MODEL), f"@{tmp_path / 'empty.txt'}", "--out", str(tmp_path / "o")]) == 2
    assert "names no files" in capsys.readouterr().err


def test_an_image_named_with_a_leading_at_sign(tmp_path, capsys, monkeypatch):
    _picture(tmp_path / "@weird.png")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["predict", "--model", str(MODEL), "@weird.png", "--out", "o"]) == 2  # read as a list: weird.png
    err = capsys.readouterr().err
    assert "'./@weird.png'" in err and err.count("\n") == 1
    assert main(["predict", "--model", str(MODEL), "./@weird.png", "--out", "o", "--no-progress"]) == 0
    assert (tmp_path / "o" / "@weird.png").is_file()


def test_predict_help_says_how_to_pass_an_at_name(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "./@name.png" in capsys.readouterr().out


def test_predict_refuses_a_fifo_without_hanging(tmp_path, capsys):
    import signal

    if not hasattr(os, "mkfifo") or not hasattr(signal, "SIGALRM"):
        pytest.skip("no named pipes / alarms on this platform")
    os.mkfifo(tmp_path / "pipe.png")
    _picture(tmp_path / "good.png")

    def hung(signum, frame):
        raise TimeoutError("predict blocked on the FIFO")  # fails the test instead of stalling the suite

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        code = main(["predict", "--model", str(MODEL), str(tmp_path / "pipe.png"), str(tmp_path / "good.png"),
                     "--out", str(tmp_path / "o"), "--no-progress"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert code == 1
    assert "pipe.png: is a FIFO (named pipe), not a regular image file" in capsys.readouterr().err
    assert (tmp_path / "o" / "good.png").is_file()
