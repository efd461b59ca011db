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
