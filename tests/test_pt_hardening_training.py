"""Training that survives real data and interruptions: safe training states,
all-ignore batches, NaN losses, exact resume with dropout and drop path on, a log with each step once."""

from __future__ import annotations

import os
import pickle
import signal

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segformer.common.checkpoints import CheckpointError  # noqa: E402
from segformer.common.training.recipe import TrainConfig, build_train_transform, read_jsonl  # noqa: E402
from tests.randomize import tiny_config  # noqa: E402

DROPOUT = dict(drop_path_rate=0.3, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2, classifier_dropout_prob=0.2)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from segformer.common.training.datasets import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), num_train=8, num_val=2, size=(40, 40), num_labels=4)


def _config(**overrides):
    kwargs = dict(lr=1e-3, total_steps=6, warmup_steps=1, batch_size=2, crop_size=(32, 32), img_scale=(40, 40),
                  ratio_range=(0.75, 1.25), eval_every=0, checkpoint_every=2, log_every=100, seed=0)
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def _train_set(root, config):
    from segformer.common.training.datasets import SegmentationFolderDataset

    return SegmentationFolderDataset(root, "training", transform=build_train_transform(config), seed=config.seed)


def _model(seed=0, **overrides):
    from segformer.pt import SegformerForSemanticSegmentation

    torch.manual_seed(seed)
    return SegformerForSemanticSegmentation(tiny_config(num_labels=4, **{**DROPOUT, **overrides}))


class _Hook:
    """A dataset wrapper that calls ``action`` when item number ``at`` (in fetch order) is requested."""

    def __init__(self, dataset, at, action):
        self.dataset, self.at, self.action, self.count = dataset, at, action, 0

    def __len__(self):
        return len(self.dataset)

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index):
        self.count += 1
        if self.count == self.at:
            self.action()
        return self.dataset[index]


class _Crash(RuntimeError):
    pass


def _weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.inner.state_dict().items()}


def _max_diff(a, b):
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_resume_after_sigterm_and_after_crash_is_exact_with_dropout_on(synthetic, tmp_path):
    from segformer.pt.training import Trainer

    config = _config(total_steps=4)
    train = _train_set(synthetic, config)
    straight = Trainer(_model(), config, train, out_dir=tmp_path / "a", progress=False, echo=False)
    straight.train()
    want = _weights(straight)
    # SIGTERM while step 2 loads its batch: the step finishes, the state is saved, the trainer stops.
    hooked = _Hook(train, at=1 * 2 + 1, action=lambda: os.kill(os.getpid(), signal.SIGTERM))
    first = Trainer(_model(), config, hooked, out_dir=tmp_path / "b", progress=False, echo=False)
    with pytest.raises(KeyboardInterrupt, match="after step 2"):
        first.train()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    second = Trainer(_model(seed=7), config, train, out_dir=tmp_path / "b", resume=True, progress=False, echo=False)
    assert second.step == 2
    second.train()
    assert _max_diff(_weights(second), want) == 0.0
    assert [r["step"] for r in read_jsonl(tmp_path / "b" / "train_log.jsonl")] == list(range(1, 5))
    # A hard crash in step 4 (state of step 2 on disk, steps 1-3 logged): resume repeats step 3, logged once.
    crashing = _Hook(train, at=3 * 2 + 1, action=lambda: (_ for _ in ()).throw(_Crash()))
    third = Trainer(_model(), config, crashing, out_dir=tmp_path / "c", progress=False, echo=False)
    with pytest.raises(_Crash):
        third.train()
    assert [r["step"] for r in read_jsonl(tmp_path / "c" / "train_log.jsonl")] == [1, 2, 3]
    with open(tmp_path / "c" / "train_log.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"step": 4, "lo')  # a torn line, as a kill mid-write leaves
    fourth = Trainer(_model(seed=3), config, train, out_dir=tmp_path / "c", resume=True, progress=False, echo=False)
    assert fourth.step == 2
    fourth.train()
    assert _max_diff(_weights(fourth), want) == 0.0
    assert [r["step"] for r in read_jsonl(tmp_path / "c" / "train_log.jsonl")] == list(range(1, 5))


def test_iterating_the_train_loader_leaves_the_global_rng_alone(synthetic):
    from segformer.pt.data import make_train_loader

    train = _train_set(synthetic, _config())
    torch.manual_seed(0)
    before = torch.get_rng_state()
    next(iter(make_train_loader(train, 2, seed=0)))
    assert torch.equal(torch.get_rng_state(), before)


def test_all_ignore_batch_gives_zero_loss_and_zero_gradients(synthetic):
    from segformer.pt.training import Trainer

    config = _config(total_steps=2, checkpoint_every=0)
    trainer = Trainer(_model(**{k: 0.0 for k in DROPOUT}), config, _train_set(synthetic, config), progress=False, echo=False)
    batch = {"pixel_values": torch.randn(2, 3, 32, 32), "labels": torch.full((2, 32, 32), 255, dtype=torch.long)}
    captured = {}
    real_step = trainer.optimizer.step

    def capture_then_step(*args, **kwargs):
        captured["grads"] = [p.grad.clone() for p in trainer.inner.parameters() if p.grad is not None]
        return real_step(*args, **kwargs)

    trainer.optimizer.step = capture_then_step
    loss = trainer.train_step([batch])
    assert loss == 0.0 and trainer.step == 1
    assert captured["grads"] and all(float(g.abs().max()) == 0.0 for g in captured["grads"])


def test_nan_loss_stops_before_the_update_naming_the_step(synthetic, tmp_path):
    from segformer.pt.training import Trainer

    config = _config(total_steps=4, checkpoint_every=0)
    trainer = Trainer(_model(), config, _train_set(synthetic, config), out_dir=tmp_path, progress=False, echo=False)
    trainer.train_step([{"pixel_values": torch.randn(2, 3, 32, 32), "labels": torch.zeros(2, 32, 32, dtype=torch.long)}])
    before = _weights(trainer)
    bad = {"pixel_values": torch.full((2, 3, 32, 32), float("nan")), "labels": torch.zeros(2, 32, 32, dtype=torch.long)}
    with pytest.raises(FloatingPointError, match=r"at step 2; stopped before applying its gradients.*lower --lr"):
        trainer.train_step([bad])
    assert trainer.step == 1
    after = _weights(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)


# ------------------------------------------------------------------------------------- training states


def _saved_state(tmp_path):
    from segformer.pt.training import build_optimizer, save_training_state

    config = _config(total_steps=1)
    model = _model()
    optimizer = build_optimizer(model, config)
    path = tmp_path / "training_state.pt"
    save_training_state(path, model, optimizer, 5, config)
    return path, model, optimizer


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ.get("SEGFORMER_PWNED", "/nonexistent/pwned"),))


def test_training_state_is_loaded_weights_only(tmp_path, monkeypatch):
    from segformer.pt.training import load_training_state

    path, model, optimizer = _saved_state(tmp_path)
    state = load_training_state(path, model, optimizer)
    assert state["step"] == 5
    marker = tmp_path / "pwned"
    monkeypatch.setenv("SEGFORMER_PWNED", str(marker))
    evil = tmp_path / "evil.pt"
    torch.save({"format": "segformer-pt-training-state-2", "step": 1, "model": {}, "payload": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="evil.pt: refused to load.*would run code") as info:
        load_training_state(evil, model, optimizer)
    assert "posix.system" in str(info.value) or "os.system" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "not_a_dict", "wrong_format", "missing_rng", "legacy_pickle"])
def test_damaged_training_state_is_a_checkpoint_error_naming_it(tmp_path, damage):
    from segformer.pt.training import load_training_state

    path, model, optimizer = _saved_state(tmp_path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"PK\x03\x04" + os.urandom(300))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not_a_dict":
        torch.save([1, 2, 3], path)
    elif damage == "wrong_format":
        torch.save({"format": "something-else"}, path)
    elif damage == "missing_rng":
        state = torch.load(path, weights_only=True)
        del state["rng"]
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps({"format": "x"}, protocol=2))
    with pytest.raises(CheckpointError, match="training_state.pt"):
        load_training_state(path, model, optimizer)


def test_old_torch_refuses_pickles(tmp_path, monkeypatch):
    from segformer.common.checkpoints import read_torch_bin

    path = tmp_path / "pytorch_model.bin"
    torch.save({"a": torch.zeros(2)}, path)
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    with pytest.raises(ImportError, match=r"needs torch >= 2.6.*found torch 2.5.1"):
        read_torch_bin(path)
