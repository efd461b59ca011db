"""``segformer train`` / ``eval`` / ``predict`` end to end on a tiny model and synthetic data (PyTorch;
the Keras path is covered in tests/test_tf_training.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segformer.cli import main
from segformer.common.training import read_jsonl
from tests.randomize import tiny_config

TRAIN = ["--steps", "6", "--batch-size", "4", "--crop-size", "32", "--img-scale", "48,48", "--ratio-range", "0.75,1.5",
         "--lr", "1e-3", "--log-every", "3", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from segformer.common.datasets import make_synthetic_dataset

    root = tmp_path_factory.mktemp("cli")
    make_synthetic_dataset(root / "data", num_train=8, num_val=3, size=(48, 48), num_labels=4)
    tiny_config(num_labels=4).save_pretrained(root / "tiny")
    code = main(["train", "--model", str(root / "tiny" / "config.json"), "--data", str(root / "data"),
                 "--out", str(root / "run"), "--eval-every", "3", *TRAIN])
    assert code == 0
    return root


def test_train_writes_hf_checkpoint_and_log(trained, capsys):
    run = trained / "run"
    assert (run / "config.json").is_file() and (run / "model.safetensors").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["id2label"]["1"] == "red_rectangle" and config["num_labels"] == 4
    log = read_jsonl(run / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert all({"loss", "lr", "lr_head"} <= set(r) for r in log)
    assert "mIoU" in log[2] and "mIoU" in log[5] and "mIoU" not in log[0]
    # a second run into the same folder must be explicit
    code = main(["train", "--model", str(trained / "tiny" / "config.json"), "--data", str(trained / "data"),
                 "--out", str(run), *TRAIN])
    assert code == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_finishes_a_longer_run(trained, tmp_path):
    import shutil

    shutil.copytree(trained / "run", tmp_path / "run")
    args = ["train", "--model", str(trained / "tiny" / "config.json"), "--data", str(trained / "data"),
            "--out", str(tmp_path / "run"), "--resume", *TRAIN]
    args[args.index("--steps") + 1] = "6"
    assert main(args) == 0  # already at step 6: nothing to do, state and model stay
    log = read_jsonl(tmp_path / "run" / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert main(["train", "--model", "b0", "--data", str(trained / "data"), "--out", str(tmp_path / "none"),
                 "--resume", *TRAIN]) == 2


def test_eval_prints_table_with_miou_last_and_matches_training(trained, capsys):
    capsys.readouterr()
    assert main(["eval", "--model", str(trained / "run"), "--data", str(trained / "data"), "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("mIoU: ")
    assert any(line.startswith("red_rectangle") for line in lines)
    final = read_jsonl(trained / "run" / "train_log.jsonl")[-1]["mIoU"]
    assert float(lines[-1].split()[1]) == pytest.approx(final, abs=5e-5)
    assert main(["eval", "--model", str(trained / "run"), "--data", str(trained / "data"), "--no-progress",
                 "--mode", "slide", "--slide-crop", "32", "--slide-stride", "16", "--tta", "--scales", "1.0"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("mIoU: ")


def test_predict_writes_palette_masks_and_overlays_and_refuses_overwrite(trained, tmp_path, capsys):
    images = sorted((trained / "data" / "images" / "validation").glob("*.png"))[:2]
    out = tmp_path / "pred"
    args = ["predict", "--model", str(trained / "run"), *map(str, images), "--out", str(out)]
    assert main(args) == 0
    for image in images:
        mask = Image.open(out / f"{image.stem}.png")
        assert mask.mode == "P" and mask.size == Image.open(image).size
        assert np.asarray(mask).max() < 4
        overlay = Image.open(out / f"{image.stem}_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == mask.size
    before = (out / f"{images[0].stem}.png").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / f"{images[0].stem}.png").read_bytes() == before
    assert main(args + ["--overwrite"]) == 0


def test_predict_refuses_huge_images_before_decoding(trained, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from segformer.commands import predict
    from segformer.common import memory

    image = sorted((trained / "data" / "images" / "validation").glob("*.png"))[0]
    capsys.readouterr()
    code = main(["predict", "--model", str(trained / "run"), str(image), "--out", str(tmp_path / "p"),
                 "--max-pixels", "1000"])
    assert code == 1  # skipped with its reason, listed at the end
    assert "48x48 = 2,304 pixels is above the limit of 1,000" in capsys.readouterr().err
    # a "huge" image at test scale: framework baseline left out of the estimate, on-disk labels above 1 MP
    monkeypatch.setitem(memory.FRAMEWORK_BASELINE, "pt", 0)
    monkeypatch.setattr(predict, "LARGE_IMAGE_PIXELS", 1_000_000)
    big = tmp_path / "big.png"
    Image.new("RGB", (1100, 1200), (90, 120, 60)).save(big)
    estimate = memory.estimate_memory
    from segformer.common.config import SegformerConfig

    config = SegformerConfig.from_pretrained(trained / "run")
    whole = estimate(config, (1200, 1100), "whole", labels_on_disk=True).total
    slide = estimate(config, (1200, 1100), "slide", labels_on_disk=True).total
    assert slide < whole
    limit = f"{(slide + whole) // 2 // 1024}KB"
    code = main(["predict", "--model", str(trained / "run"), str(big), "--out", str(tmp_path / "q"),
                 "--memory-limit", limit, "--eval-size", "none", "--no-progress"])  # the image as it is
    assert code == 2
    err = capsys.readouterr().err
    assert "1200x1100" in err and "whole mode" in err and "--mode slide would need about" in err and "which fits" in err
    assert not (tmp_path / "q").exists()
    code = main(["predict", "--model", str(trained / "run"), str(big), "--out", str(tmp_path / "q"),
                 "--memory-limit", limit, "--eval-size", "none", "--mode", "slide", "--no-progress", "--no-overlay"])
    assert code == 0
    with Image.open(tmp_path / "q" / "big.png") as mask:
        assert mask.size == (1100, 1200) and mask.mode == "P"
    assert not list((tmp_path / "q").glob(".*labels.npy"))  # the on-disk label map is gone
    # images below the on-disk size run workers x batch-size at a time: checked as that many next to one baseline
    monkeypatch.setattr(predict, "LARGE_IMAGE_PIXELS", 16_000_000)
    one = estimate(config, (1200, 1100), "whole").total
    limit = f"{(one * 3) // 1024}KB"  # one image fits, 2 workers x batch 2 = 4 in flight do not
    code = main(["predict", "--model", str(trained / "run"), str(big), "--out", str(tmp_path / "r"),
                 "--memory-limit", limit, "--eval-size", "none", "--workers", "2", "--batch-size", "2", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "4 images of its size in flight" in err and "--workers 1 --batch-size 1 would fit" in err
    assert not (tmp_path / "r").exists()
    code = main(["predict", "--model", str(trained / "run"), str(big), "--out", str(tmp_path / "r"),
                 "--memory-limit", limit, "--eval-size", "none", "--workers", "1", "--batch-size", "1", "--no-progress",
                 "--no-overlay"])
    assert code == 0


def test_predict_check_finite_flags_nan_logits(trained, tmp_path, capsys, monkeypatch):
    import torch

    import segformer.commands.predict as predict
    from segformer.pt import SegformerForSemanticSegmentation

    model = SegformerForSemanticSegmentation.from_pretrained(trained / "run")
    with torch.no_grad():
        model.decode_head.classifier.bias.fill_(float("nan"))  # checkpoints with NaN are refused at load time
    monkeypatch.setattr(predict, "load_model", lambda framework, path, **options: model)
    image = sorted((trained / "data" / "images" / "validation").glob("*.png"))[0]
    capsys.readouterr()
    args = ["predict", "--model", str(trained / "run"), str(image), "--out", str(tmp_path / "p")]
    assert main(args) == 1
    assert "non-finite logits" in capsys.readouterr().err
    assert not (tmp_path / "p" / f"{image.stem}.png").exists()
    assert main(args + ["--no-check-finite"]) == 0
