"""TF trainer: exact resume with dropout and drop path on, NaN losses stop without
applying NaN gradients, damaged training states are CheckpointErrors."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pytest.importorskip("tensorflow")

from segformer.common.checkpoints import CheckpointError  # noqa: E402
from segformer.common.training.recipe import TrainConfig, build_train_transform, read_jsonl  # noqa: E402
from tests.randomize import tiny_config  # noqa: E402

DROPOUT = dict(drop_path_rate=0.3, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2, classifier_dropout_prob=0.2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from segformer.common.training.datasets import SegmentationFolderDataset, make_synthetic_dataset

    root = tmp_path_factory.mktemp("tfhard")
    data = make_synthetic_dataset(root / "data", num_train=8, num_val=2, size=(40, 40), num_labels=4)
    config = TrainConfig(lr=1e-3, total_steps=4, warmup_steps=1, batch_size=2, crop_size=(32, 32), img_scale=(40, 40),
                         ratio_range=(0.75, 1.25), eval_every=0, checkpoint_every=0, log_every=100, seed=0)
    train = SegmentationFolderDataset(data, "training", transform=build_train_transform(config), seed=0)
    tiny_config(num_labels=4, **DROPOUT).save_pretrained(root / "cfg")
    return root, config, train


def _model(root, seed):
    from segformer.tf.training import build_model

    return build_model(root / "cfg" / "config.json", seed=seed, crop_size=(32, 32))


def test_tf_resume_is_exact_with_dropout_and_drop_path(setup, tmp_path):
    from segformer.tf.training import Trainer

    root, config, train = setup
    straight = Trainer(_model(root, 0), config, train, out_dir=tmp_path / "a", progress=False, echo=False)
    straight.train()
    first = Trainer(_model(root, 0), config, train, out_dir=tmp_path / "b", progress=False, echo=False)
    first.train(stop_at=2)
    second = Trainer(_model(root, 9), config, train, out_dir=tmp_path / "b", resume=True, progress=False, echo=False)
    assert second.step == 2
    second.train()
    want, got = straight.model.state_dict_numpy(), second.model.state_dict_numpy()
    assert max(float(np.abs(want[k] - got[k]).max()) for k in want) == 0.0
    assert [r["step"] for r in read_jsonl(tmp_path / "b" / "train_log.jsonl")] == [1, 2, 3, 4]


@pytest.mark.slow
def test_tf_nan_loss_stops_naming_the_step_without_nan_weights(setup, tmp_path):
    import tensorflow as tf

    from segformer.tf.training import Trainer

    root, config, train = setup
    trainer = Trainer(_model(root, 0), config, train, out_dir=tmp_path, progress=False, echo=False)
    bad = {"pixel_values": tf.fill((2, 3, 32, 32), float("nan")), "labels": tf.zeros((2, 32, 32), tf.int64)}
    with pytest.raises(FloatingPointError, match=r"at step 1; stopped before applying its gradients"):
        trainer.train_step((bad,))
    assert trainer.step == 0
    assert all(np.isfinite(v).all() for v in trainer.model.state_dict_numpy().values())


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickle_meta"])
def test_tf_damaged_training_state_is_a_checkpoint_error(setup, tmp_path, damage):
    from segformer.tf.training import build_optimizer, load_training_state, save_training_state

    root, config, _ = setup
    model = _model(root, 0)
    optimizer = build_optimizer(model, config)
    path = tmp_path / "training_state.npz"
    save_training_state(path, model, optimizer, 3, config)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"PK\x03\x04" + os.urandom(200))
    else:
        with open(path, "wb") as handle:
            np.savez(handle, meta=np.array([{"format": "segformer-tf-training-state-1"}], dtype=object))
    with pytest.raises(CheckpointError, match="training_state.npz"):
        load_training_state(path, model, optimizer)
