"""``segformer demo``: PT model -> convert -> TF model on the sample image; parity table and PNGs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segformer.cli import main as cli_main

pytest.importorskip("torch")
pytest.importorskip("tensorflow")


def test_demo_seeded_b0(tmp_path, capsys):
    out = tmp_path / "demo"
    keep = tmp_path / "tf-model"
    assert cli_main(["demo", "--out", str(out), "--size", "128", "--tf-out", str(keep)]) == 0
    text = capsys.readouterr().out
    assert "logits max |diff| PT vs TF" in text and "argmax agreement" in text and "time per forward, TensorFlow" in text
    for framework in ("PyTorch", "TensorFlow"):  # warm median and the first calls, per framework
        warm_row = text.split(f"time per forward, {framework}")[1].splitlines()[0]
        assert "median of 3 warm calls" in warm_row
        first_row = text.split(f"first calls, {framework}")[1].splitlines()[0]
        first = [float(v) for v in first_row.split("ms")[0].split(",")]
        assert len(first) == 2 and min(first) > 0 and float(warm_row.split()[0]) > 0
    diff = float(text.split("logits max |diff| PT vs TF")[1].split()[0])
    print(f"DEMO b0 seeded, 128x128 input: logits max|diff| PT vs TF {diff:.3e}")
    assert diff <= 1e-4
    agreement = float(text.split("argmax agreement at H/4 x W/4")[1].split()[0])
    assert agreement >= 99.9
    with Image.open(out / "mask.png") as mask, Image.open(out / "overlay.png") as over, Image.open(out / "labels.png") as labels:
        assert mask.size == over.size == labels.size == (640, 480)
        assert labels.mode == "P"
        assert len(np.unique(np.asarray(labels))) > 1
    assert (keep / "tf_model.h5").is_file() and (keep / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "tf-model"]  # no temporary folders left


def test_demo_bad_model_folder(tmp_path, capsys):
    assert cli_main(["demo", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "error:" in capsys.readouterr().err


def test_time_calls_reports_first_calls_apart_from_the_warm_median():
    from segformer.commands.demo import time_calls

    # a clock that makes the five calls take 5, 9, 1, 3 and 2 seconds
    ticks = iter([0, 5, 10, 19, 20, 21, 30, 33, 40, 42])
    calls = []
    result, times = time_calls(lambda: calls.append(1) or len(calls), clock=lambda: next(ticks))
    assert result == 5 and len(calls) == 5
    assert times.first == [5, 9] and times.warm == [1, 3, 2] and times.warm_median == 2.0
