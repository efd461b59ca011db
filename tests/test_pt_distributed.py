"""Training beyond one process: ``torchrun`` (DDP + synchronized BatchNorm, gloo on CPU) against one process
on the same global batch; per-step losses must agree within 1e-5 (dropout and drop path off)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from segformer.common.training.recipe import read_jsonl
from tests.randomize import tiny_config

TRAIN_ARGS = ["--steps", "5", "--crop-size", "32", "--img-scale", "48,48", "--ratio-range", "1,1", "--lr", "1e-3",
              "--warmup-steps", "1", "--log-every", "1", "--no-progress", "--seed", "3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from segformer.common.training.datasets import make_synthetic_dataset

    root = tmp_path_factory.mktemp("dist")
    make_synthetic_dataset(root / "data", num_train=12, num_val=2, size=(48, 48), num_labels=4)
    tiny_config(num_labels=4).save_pretrained(root / "tiny")
    return root


def _env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def _segformer(*args):
    return [sys.executable, "-m", "segformer.cli", *args]


def _run(command, cwd):
    done = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_torchrun_ddp_matches_single_process_loss(setup):
    root = setup
    common = ["train", "--framework", "pt", "--model", str(root / "tiny" / "config.json"), "--data", str(root / "data")]
    _run(_segformer(*common, "--out", str(root / "single"), "--batch-size", "4", *TRAIN_ARGS), root)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    _run(torchrun + ["-m", "segformer.cli", *common, "--out", str(root / "ddp"), "--batch-size", "2", *TRAIN_ARGS], root)
    single = [r["loss"] for r in read_jsonl(root / "single" / "train_log.jsonl")]
    ddp = [r["loss"] for r in read_jsonl(root / "ddp" / "train_log.jsonl")]
    assert len(single) == len(ddp) == 5
    diffs = np.abs(np.asarray(single) - np.asarray(ddp))
    print(f"max |loss_ddp - loss_single| over 5 steps: {diffs.max():.3g}")
    assert diffs.max() < 1e-5, (single, ddp)
    from segformer.pt import SegformerForSemanticSegmentation

    a = SegformerForSemanticSegmentation.from_pretrained(root / "single").state_dict_numpy()
    b = SegformerForSemanticSegmentation.from_pretrained(root / "ddp").state_dict_numpy()
    # Tensors whose true gradient is 0 are excluded: a per-channel constant added before BatchNorm (the
    # linear_c biases; the stage-4 LayerNorm bias when stage 4 is 1x1) is removed by it, so their gradient is
    # float noise that Adam turns into +-lr steps of random sign (and running_mean follows them).
    zero_grad = tuple(f"decode_head.linear_c.{i}.proj.bias" for i in range(4)) + (
        "decode_head.batch_norm.running_mean", "segformer.encoder.layer_norm.3.bias")
    diffs_w = {k: float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a if not k.endswith(zero_grad)}
    weight_diff = max(diffs_w.values())
    print(f"max |weights_ddp - weights_single| after 5 steps: {weight_diff:.3g} ({max(diffs_w, key=diffs_w.get)})")
    assert weight_diff < 1e-5
    # without synchronized BatchNorm the decode head normalizes each half batch on its own: the loss changes
    _run(torchrun + ["-m", "segformer.cli", *common, "--out", str(root / "ddp_nosync"), "--batch-size", "2",
                     "--no-sync-bn", *TRAIN_ARGS], root)
    nosync = [r["loss"] for r in read_jsonl(root / "ddp_nosync" / "train_log.jsonl")]
    assert np.abs(np.asarray(single) - np.asarray(nosync)).max() > 1e-4


def test_torchrun_predict_and_eval_shard_by_rank(setup, tmp_path):
    """2 processes: every image written once, the same files as one process; eval sums the confusion
    matrices, so the mIoU is exactly one process's."""
    import torch

    from segformer.pt import SegformerForSemanticSegmentation

    root = setup
    torch.manual_seed(0)
    model = tmp_path / "model"
    SegformerForSemanticSegmentation(tiny_config(num_labels=4)).save_pretrained(model)
    images = root / "data" / "images" / "validation"
    extra = root / "data" / "images" / "training"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    inputs = [str(images), str(extra)]
    common = ["predict", "--model", str(model), *inputs, "--allow-random-head", "--no-progress"]
    _run(_segformer(*common, "--out", str(tmp_path / "one")), root)
    _run(torchrun + ["-m", "segformer.cli", *common, "--out", str(tmp_path / "two")], root)
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png"))
    two = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.png"))
    assert one == two and len(one) == 2 * 14 + 1
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    evaluate = ["eval", "--model", str(model), "--data", str(root / "data"), "--split", "training", "--no-progress"]
    single = _run(_segformer(*evaluate), root).stdout
    double = _run(torchrun + ["-m", "segformer.cli", *evaluate], root).stdout
    assert single.strip().splitlines()[-1].startswith("mIoU")
    assert single.strip().splitlines()[-1] == double.strip().splitlines()[-1]
    assert "2 processes" in double
