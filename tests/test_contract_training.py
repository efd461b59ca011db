"""One specification for both trainers (``segformer.pt.training`` / ``segformer.tf.training``): each case runs once
per backend (``pt`` / ``tf``).

Covered: a NaN / Inf step changes nothing (weights, BatchNorm running statistics, optimizer moments and step
counter, learning-rate schedule) and stops with the same message; an all-ignore batch gives the model loss 0
with zero gradients; the training-state functions take the same arguments and keep ``extra`` / ``restore_rng``;
train-time evaluation equals ``segformer eval`` of the saved model; evaluation shards over processes.
"""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest

from randomize import tiny_config
from segformer.common.training.recipe import TrainConfig, build_eval_transform, build_train_transform, read_jsonl

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

NUM_LABELS = 4
MESSAGE = r"at step 2; stopped before applying its gradients"


class _Torch:
    name = "pt"

    def __init__(self) -> None:
        import torch

        import segformer.pt.training as training

        self.torch, self.training = torch, training

    def model(self, config_path, seed=0):
        return self.training.build_model(config_path, seed=seed)

    def trainer(self, model, config, train, evaluation=None, out_dir=None):
        return self.training.Trainer(model, config, train, evaluation, out_dir=out_dir, progress=False, echo=False)

    def batch(self, pixel_values, labels):
        return {"pixel_values": self.torch.from_numpy(pixel_values), "labels": self.torch.from_numpy(labels)}

    def weights(self, trainer):
        """Every parameter and buffer (BatchNorm running statistics included)."""
        return {k: v.detach().numpy().copy() for k, v in trainer.inner.state_dict().items()}

    def optimizer_state(self, trainer):
        """Moments and per-parameter step counters, and each group's learning rate."""
        state = trainer.optimizer.state_dict()
        arrays = [np.asarray(v.detach().numpy()).copy() for entry in state["state"].values() for v in entry.values()
                  if isinstance(v, self.torch.Tensor)]
        return arrays + [np.asarray([g["lr"] for g in state["param_groups"]])]

    def schedule_position(self, trainer):
        return trainer.step

    def loss_and_gradients(self, model, pixel_values, labels):
        model.train()
        model.zero_grad(set_to_none=True)
        loss = model(pixel_values=self.torch.from_numpy(pixel_values), labels=self.torch.from_numpy(labels)).loss
        loss.backward()
        return float(loss.detach()), [p.grad.numpy() for p in model.parameters() if p.grad is not None]


class _Keras:
    name = "tf"

    def __init__(self) -> None:
        pytest.importorskip("tensorflow")
        import tensorflow as tf

        import segformer.tf.training as training

        self.tf, self.training = tf, training

    def model(self, config_path, seed=0):
        return self.training.build_model(config_path, seed=seed, crop_size=(32, 32))

    def trainer(self, model, config, train, evaluation=None, out_dir=None):
        return self.training.Trainer(model, config, train, evaluation, out_dir=out_dir, progress=False, echo=False)

    def batch(self, pixel_values, labels):
        return {"pixel_values": self.tf.constant(pixel_values), "labels": self.tf.constant(labels)}

    def weights(self, trainer):
        return {v.path: np.asarray(v.numpy()).copy() for v in trainer.model.variables}

    def optimizer_state(self, trainer):
        """Moments, the iteration counter, and the learning rate the schedule gives at it."""
        optimizer = trainer.optimizer
        return [np.asarray(v.numpy()).copy() for v in optimizer.variables] + [np.asarray(optimizer.learning_rate)]

    def schedule_position(self, trainer):
        return (trainer.step, int(trainer.optimizer.iterations.numpy()))

    def loss_and_gradients(self, model, pixel_values, labels):
        with self.tf.GradientTape() as tape:
            loss = self.tf.reduce_mean(model(pixel_values, labels=labels, training=True).loss)
        grads = tape.gradient(loss, model.trainable_variables)
        return float(loss), [np.asarray(g) for g in grads if g is not None]


@pytest.fixture(params=["pt", "tf"], scope="module")
def backend(request):
    if request.param == "pt":
        pytest.importorskip("torch")
        return _Torch()
    return _Keras()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from segformer.common.training.datasets import make_synthetic_dataset

    root = tmp_path_factory.mktemp("contract_training")
    make_synthetic_dataset(root / "data", num_train=8, num_val=3, size=(40, 48), num_labels=NUM_LABELS)
    tiny_config(num_labels=NUM_LABELS).save_pretrained(root / "cfg")
    return root


def _config(**overrides):
    kwargs = dict(lr=1e-3, total_steps=4, warmup_steps=1, batch_size=2, crop_size=(32, 32), img_scale=(40, 48),
                  ratio_range=(0.75, 1.25), eval_every=0, checkpoint_every=0, log_every=100, seed=0)
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def _datasets(root, config):
    from segformer.common.training.datasets import SegmentationFolderDataset

    train = SegmentationFolderDataset(root / "data", "training", transform=build_train_transform(config), seed=0)
    evaluation = SegmentationFolderDataset(root / "data", "validation", transform=build_eval_transform(None))
    return train, evaluation


def _images(seed, batch=2):
    rng = np.random.default_rng(seed)
    pixel_values = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, NUM_LABELS, (batch, 32, 32)).astype(np.int64)
    return pixel_values, labels


def _assert_same(before, after, what):
    assert len(before) == len(after), what
    items = before.items() if isinstance(before, dict) else enumerate(before)
    for key, value in items:
        np.testing.assert_array_equal(after[key], value, err_msg=f"{what}: {key}")


@pytest.mark.parametrize("poison", ["nan_pixels", pytest.param("inf_pixels", marks=pytest.mark.slow)])
def test_nonfinite_step_changes_nothing_and_stops(backend, data, poison):
    """No update, no optimizer state change, no schedule advance, BatchNorm running statistics restored."""
    config = _config()
    train, _ = _datasets(data, config)
    trainer = backend.trainer(backend.model(data / "cfg" / "config.json"), config, train)
    good = backend.batch(*_images(0))
    trainer.train_step((good,))  # moments and counters are non-zero from here on
    weights, optimizer, position = backend.weights(trainer), backend.optimizer_state(trainer), backend.schedule_position(trainer)
    pixel_values, labels = _images(1)
    pixel_values[0, :, :4] = np.nan if poison == "nan_pixels" else np.inf
    with pytest.raises(FloatingPointError, match=MESSAGE):
        trainer.train_step((backend.batch(pixel_values, labels),))
    assert backend.schedule_position(trainer) == position
    _assert_same(weights, backend.weights(trainer), "weights / running statistics")
    _assert_same(optimizer, backend.optimizer_state(trainer), "optimizer state")
    loss = trainer.train_step((good,))  # the trainer still works after the rejected step
    assert np.isfinite(loss) and trainer.step == 2


def test_all_ignore_batch_loss_is_zero_with_zero_gradients(backend, data):
    model = backend.model(data / "cfg" / "config.json")
    pixel_values, _ = _images(2)
    labels = np.full((2, 32, 32), 255, np.int64)
    loss, grads = backend.loss_and_gradients(model, pixel_values, labels)
    assert loss == 0.0
    assert all(float(np.abs(g).max()) == 0.0 for g in grads)
    # one labelled pixel is enough for a real loss (the rule is about the all-ignored case only)
    labels[0, 0, 0] = 1
    loss, grads = backend.loss_and_gradients(model, pixel_values, labels)
    assert np.isfinite(loss) and loss > 0.0 and any(float(np.abs(g).max()) > 0.0 for g in grads)


@pytest.mark.parametrize("name", ["save_training_state", "load_training_state"])
def test_training_state_functions_take_the_same_arguments(name):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    import segformer.pt.training as pt
    import segformer.tf.training as tf

    def shape(function):
        return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]

    assert shape(getattr(pt, name)) == shape(getattr(tf, name))


def test_training_state_keeps_extra_and_restore_rng_option(backend, data, tmp_path):
    config = _config()
    model = backend.model(data / "cfg" / "config.json")
    optimizer = backend.training.build_optimizer(model, config)
    path = tmp_path / "state"
    backend.training.save_training_state(path, model, optimizer, 3, config, extra={"epoch": 2, "note": "x"})
    after_save = np.random.random()
    state = backend.training.load_training_state(path, model, optimizer)
    assert state["step"] == 3 and state["extra"] == {"epoch": 2, "note": "x"}
    assert np.random.random() == after_save  # restore_rng=True: the RNG continues from the save
    continued = np.random.get_state()[1].copy()
    backend.training.load_training_state(path, model, optimizer, restore_rng=False)
    np.testing.assert_array_equal(np.random.get_state()[1], continued)


def test_train_time_evaluation_equals_segformer_eval_of_the_saved_model(backend, data, tmp_path, capsys):
    from segformer.cli import main

    config = _config(eval_every=2)
    train, evaluation = _datasets(data, config)
    trainer = backend.trainer(backend.model(data / "cfg" / "config.json"), config, train, evaluation, out_dir=tmp_path)
    trainer.train()
    logged = [r for r in read_jsonl(tmp_path / "train_log.jsonl") if "mIoU" in r]
    assert [r["step"] for r in logged] == [2, 4]
    capsys.readouterr()
    assert main(["eval", "--framework", backend.name, "--model", str(tmp_path), "--data", str(data / "data"),
                 "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("mIoU: ")
    assert float(last.split()[1]) == pytest.approx(logged[-1]["mIoU"], abs=5e-5)
    np.testing.assert_array_equal(trainer.last_eval["confusion_matrix"], trainer.evaluate()["confusion_matrix"])


def test_evaluation_shards_sum_to_the_whole(data):
    """Each process's share (``rank, rank + W, ...``), summed over processes, is the whole-dataset matrix."""
    from segformer.common.training.metrics import SegmentationMetric
    from segformer.common.training.loop import evaluate_dataset

    _, evaluation = _datasets(data, _config())
    seen = []

    def predict(pixel_values, size):  # an independent stand-in: class = brightness quartile of the image
        seen.append(float(pixel_values.mean()))
        resized = np.resize(pixel_values[0].mean(0), size)
        return np.digitize(resized, np.quantile(resized, [0.25, 0.5, 0.75]))[None]

    whole = evaluate_dataset(predict, evaluation, NUM_LABELS).state()
    direct = SegmentationMetric(NUM_LABELS)
    for i in range(len(evaluation)):
        item = evaluation[i]
        direct.update(predict(item["pixel_values"][None], item["labels"].shape), item["labels"][None])
    np.testing.assert_array_equal(whole, direct.state())
    seen.clear()
    shares = [evaluate_dataset(predict, evaluation, NUM_LABELS, rank=r, world_size=2).state() for r in (0, 1)]
    assert len(seen) == len(evaluation)  # every image once over both ranks
    np.testing.assert_array_equal(shares[0] + shares[1], whole)
    summed = evaluate_dataset(predict, evaluation, NUM_LABELS, rank=1, world_size=2, sum_counts=lambda m: m + shares[0])
    np.testing.assert_array_equal(summed.state(), whole)
    with pytest.raises(ValueError, match="rank must lie in"):
        evaluate_dataset(predict, evaluation, NUM_LABELS, rank=2, world_size=2)
