"""``segformer train`` / ``eval`` / ``predict`` end to end on a tiny model and synthetic data (PyTorch;
the Keras path is covered in tests/test_tf_training.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segformer.cli import main
from segformer.common.training.recipe import read_jsonl
from tests.randomize import tiny_config

TRAIN = ["--steps", "6", "--batch-size", "4", "--crop-size", "32", "--img-scale", "48,48", "--ratio-range", "0.75,1.5",
         "--lr", "1e-3", "--log-every", "3", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from segformer.common.training.datasets import make_synthetic_dataset

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
    from segformer.common.inference import memory

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
    from segformer.common.model.config import SegformerConfig

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


# ------------------------------------------------------------------ recipes and the time estimate
def _folder_of_sizes(root, sizes):
    """images/training + annotations/training with one image per (height, width) in ``sizes``."""
    for split in ("images/training", "annotations/training"):
        (root / split).mkdir(parents=True)
    for index, (height, width) in enumerate(sizes):
        Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(root / "images" / "training" / f"im{index}.png")
        Image.fromarray(np.zeros((height, width), np.uint8)).save(root / "annotations" / "training" / f"im{index}.png")
    return root


def _train_args(*argv):
    import argparse

    from segformer.commands import train

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return parser.parse_args(["--model", "b0", "--out", "unused", *argv])


def test_quick_recipe_numbers_for_a_folder(tmp_path):
    from segformer.commands.shared import dataset_from_args
    from segformer.commands.train import recipe_from_args

    # smallest side 75 -> crop 64 (a multiple of 32), scale (4 x 64, 64); 3 images at 2 per step -> 2 steps an epoch, 5 epochs
    data = _folder_of_sizes(tmp_path / "data", [(100, 150), (75, 200), (300, 90)])
    args = _train_args("--data", str(data), "--recipe", "quick", "--batch-size", "2")
    dataset = dataset_from_args(args, "training", None)
    assert recipe_from_args(args, dataset) == {"total_steps": 10, "crop_size": (64, 64), "img_scale": (256, 64)}
    # grad accumulation counts in the images per step: 3 images at 1 x 3 per step -> 1 step an epoch
    args = _train_args("--data", str(data), "--recipe", "quick", "--batch-size", "1", "--grad-accum", "3")
    assert recipe_from_args(args, dataset)["total_steps"] == 5
    # options given on the command line win over the recipe's values
    args = _train_args("--data", str(data), "--recipe", "quick", "--steps", "7", "--img-scale", "100,50")
    assert recipe_from_args(args, dataset) == {"total_steps": 7, "crop_size": (64, 64), "img_scale": (100, 50)}
    # the default stays the original recipe
    assert recipe_from_args(_train_args("--data", str(data)), dataset) == {
        "total_steps": 160000, "crop_size": (512, 512), "img_scale": (2048, 512)}


def test_quick_recipe_rule_edges():
    from segformer.common.training.recipe import quick_recipe, recipe_settings

    # under 32 pixels the crop is the smallest side itself
    assert quick_recipe([(20, 40), (50, 50)], 2) == {"total_steps": 5, "crop_size": (20, 20), "img_scale": (80, 20)}
    # large images: the original's 512 crop and 2048,512 scale
    assert quick_recipe([(1000, 2000)] * 7, 2) == {"total_steps": 20, "crop_size": (512, 512), "img_scale": (2048, 512)}
    # a huge folder: never more steps than the original recipe
    assert quick_recipe([(64, 64)] * 100_000, 1)["total_steps"] == 160000
    with pytest.raises(ValueError, match=r"recipe must be one of \['original', 'quick'\], got 'fast'"):
        recipe_settings("fast")
    with pytest.raises(ValueError, match="at least one"):
        quick_recipe([], 2)
    with pytest.raises(ValueError, match="images_per_step"):
        quick_recipe([(64, 64)], 0)


def test_bad_recipe_lists_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", "b0", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--recipe", "fast"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--recipe" in err and "'fast'" in err and "'original'" in err and "'quick'" in err


def test_quick_run_prints_recipe_and_time_estimate(tmp_path, capsys):
    from segformer.common.training.datasets import make_synthetic_dataset

    # 4 images of 40x40 at 2 per step: crop 32 (40 rounded down to a multiple of 32), scale 128,32, 5 x 2 = 10 steps
    make_synthetic_dataset(tmp_path / "data", num_train=4, num_val=0, size=(40, 40), num_labels=4)
    tiny_config(num_labels=4).save_pretrained(tmp_path / "tiny")
    assert main(["train", "--model", str(tmp_path / "tiny" / "config.json"), "--data", str(tmp_path / "data"),
                 "--out", str(tmp_path / "run"), "--recipe", "quick", "--lr", "1e-3", "--log-every", "4",
                 "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("recipe quick: 10 steps of 2 image(s) per device") and "crop 32x32, img-scale 128,32" in line
               for line in lines)
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "train_log.jsonl")] == list(range(1, 11))
    log_lines = {int(line.split()[0][5:]): line for line in lines if line.startswith("step=")}
    assert sorted(log_lines) == [4, 8, 10]
    # the first two steps are not measured; the estimate comes after steps 3-5, once, before the log line of step 8
    estimates = [i for i, line in enumerate(lines) if line.startswith("time estimate:")]
    assert len(estimates) == 1
    estimate = lines[estimates[0]]
    assert "median of steps 3-5" in estimate and "10 steps take about" in estimate and "left" in estimate
    assert lines.index(log_lines[4]) < estimates[0] < lines.index(log_lines[8])
    assert "eta=" not in log_lines[4] and log_lines[8].split()[-1].startswith("eta=")
    assert log_lines[10].split()[-1] in ("eta=0.0s",)  # nothing left at the last step


def test_step_timer_uses_the_median_of_steady_steps():
    from segformer.common.training.recipe import StepTimer

    timer = StepTimer(total_steps=10, skip=2, first_after=3, window=4)
    # steps 1-2 (tracing, warm-up) are slow and not counted; steps 3-5 take 1, 3, 2 s: median 2 s
    assert [timer.add(step, s) for step, s in zip(range(1, 6), [10.0, 7.0, 1.0, 3.0, 2.0])] == [False] * 4 + [True]
    assert timer.seconds_per_step() == 2.0
    assert timer.remaining(5) == 10.0 and timer.note(5) == "eta=10s"
    summary = timer.summary(5)
    assert "2 s per step" in summary and "median of steps 3-5" in summary
    assert "10 steps take about 20 s in all, 10 s left" in summary
    # an evaluation-sized outlier moves the median only to the middle pair: (2 + 3) / 2
    assert timer.add(6, 100.0) is False and timer.seconds_per_step() == 2.5
    # the window keeps the last 4 measured steps: 3, 2, 100, 0.5 -> (2 + 3) / 2; then 2, 100, 0.5, 0.5 -> (0.5 + 2) / 2
    timer.add(7, 0.5)
    assert timer.seconds_per_step() == 2.5
    timer.add(8, 0.5)
    assert timer.seconds_per_step() == 1.25 and timer.remaining(8) == 2.5
    fresh = StepTimer(total_steps=10)
    assert fresh.note(1) == "" and fresh.summary(1) == "" and fresh.remaining(1) is None
    with pytest.raises(ValueError, match="window must be an integer >= 1, got 0"):
        StepTimer(10, window=0)


def test_format_duration():
    from segformer.common.training.recipe import format_duration

    assert [format_duration(s) for s in (0.25, 45, 89, 600, 5399, 5400, 12 * 3600, 3 * 86400)] == [
        "0.2 s", "45 s", "89 s", "10 min", "90 min", "1.5 h", "12.0 h", "3.0 days"]
    assert format_duration(5400, compact=True) == "1.5h"
