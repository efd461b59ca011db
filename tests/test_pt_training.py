"""The training recipe (framework-agnostic parts) and the PyTorch trainer: schedule, parameter groups,
data order, short fine-tuning, resume, bf16, gradient checkpointing, evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segformer.common.model.config import SegformerConfig
from segformer.common.training.recipe import (
    ORIGINAL_CUSTOM_KEYS,
    TrainConfig,
    build_eval_transform,
    build_train_transform,
    default_warmup_steps,
    group_parameter_names,
    lr_at,
    param_group_rule,
    parse_size,
    read_jsonl,
    sorted_custom_keys,
)
from segformer.common.model.weights import parameter_table
from tests.randomize import tiny_config


# ---------------------------------------------------------------------------------------------- schedule


class _MmcvPoly:
    """mmcv 1.x PolyLrUpdaterHook + linear warm-up, transcribed from its source (by_epoch=False)."""

    def __init__(self, base_lr, max_iters, warmup_iters, warmup_ratio, power, min_lr):
        self.base_lr, self.max_iters = base_lr, max_iters
        self.warmup_iters, self.warmup_ratio, self.power, self.min_lr = warmup_iters, warmup_ratio, power, min_lr

    def get_lr(self, progress):
        coeff = (1 - progress / self.max_iters) ** self.power
        return (self.base_lr - self.min_lr) * coeff + self.min_lr

    def before_train_iter(self, cur_iter):
        regular_lr = self.get_lr(cur_iter)
        if cur_iter >= self.warmup_iters:
            return regular_lr
        k = (1 - cur_iter / self.warmup_iters) * (1 - self.warmup_ratio)
        return regular_lr * (1 - k)


@pytest.mark.parametrize("power,min_lr", [(1.0, 0.0), (0.9, 1e-6)])
def test_lr_at_matches_mmcv_poly_with_linear_warmup(power, min_lr):
    reference = _MmcvPoly(6e-5, 160_000, 1500, 1e-6, power, min_lr)
    for step in [0, 1, 2, 749, 750, 1499, 1500, 1501, 80_000, 159_999, 160_000]:
        ours = lr_at(step, 6e-5, 160_000, 1500, 1e-6, power, min_lr)
        assert ours == pytest.approx(reference.before_train_iter(step), rel=1e-12, abs=1e-20), step
    assert lr_at(0, 6e-5, 160_000) == pytest.approx(6e-5 * 1e-6)  # warm-up starts at base * ratio
    assert lr_at(1500, 6e-5, 160_000) == pytest.approx(6e-5 * (1 - 1500 / 160_000))
    assert lr_at(160_000, 6e-5, 160_000) == 0.0


def test_lr_at_rejects_bad_arguments_naming_them():
    with pytest.raises(ValueError, match="step"):
        lr_at(-1, 1e-3, 10)
    with pytest.raises(ValueError, match="total_steps"):
        lr_at(0, 1e-3, 0)
    with pytest.raises(ValueError, match="step must lie"):
        lr_at(11, 1e-3, 10)
    with pytest.raises(ValueError, match="warmup_ratio"):
        lr_at(0, 1e-3, 10, 2, 1.5)


def test_train_config_defaults_are_the_original_recipe():
    config = TrainConfig()
    assert (config.lr, config.betas, config.weight_decay) == (6e-5, (0.9, 0.999), 0.01)
    assert (config.total_steps, config.warmup_steps, config.warmup_ratio, config.power, config.min_lr) == (
        160_000, 1500, 1e-6, 1.0, 0.0)
    assert config.custom_keys == ORIGINAL_CUSTOM_KEYS
    assert config.crop_size == (512, 512) and config.batch_size == 2 and config.sync_bn
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.lr_at(2000, 10.0) == pytest.approx(10 * config.lr_at(2000))
    assert default_warmup_steps(160_000) == 1500 and default_warmup_steps(200) == 20


@pytest.mark.parametrize("field,value", [("lr", 0.0), ("batch_size", 0), ("grad_accum", 0), ("betas", (0.9, 1.0)),
                                         ("warmup_ratio", 2.0), ("cat_max_ratio", 0.0)])
def test_train_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"learning_rate": 1.0})
    with pytest.raises(ValueError, match="custom_keys"):
        TrainConfig(custom_keys={"head": {"lr_multiplier": 10}})


def test_parse_size():
    assert parse_size("512") == (512, 512)
    assert parse_size("512,1024") == (512, 1024)
    assert parse_size("64x32") == (64, 32)
    with pytest.raises(ValueError, match="--crop-size"):
        parse_size("a,b")


# ---------------------------------------------------------------------------------------------- groups


def test_param_groups_follow_the_original_custom_keys_on_canonical_names():
    assert sorted_custom_keys(ORIGINAL_CUSTOM_KEYS) == ["pos_block", "head", "norm"]
    config = SegformerConfig.from_variant("b0", num_labels=150)
    names = [spec.name for spec in parameter_table(config, "semantic_segmentation") if spec.trainable]
    for name in names:
        rule = param_group_rule(name)
        if name.startswith("decode_head."):
            # 'head' is matched before 'norm': the head's BatchNorm gets 10x lr AND weight decay, as in the original
            assert (rule.lr_mult, rule.decay_mult, rule.key) == (10.0, 1.0, "head"), name
        elif "layer_norm" in name:
            assert (rule.lr_mult, rule.decay_mult, rule.key) == (1.0, 0.0, "norm"), name
        else:  # weights and biases of the encoder: decayed, lr x1
            assert (rule.lr_mult, rule.decay_mult, rule.key) == (1.0, 1.0, None), name
    groups = group_parameter_names(names)
    assert set(groups) == {(1.0, 1.0), (1.0, 0.0), (10.0, 1.0)}
    assert "decode_head.batch_norm.weight" in groups[(10.0, 1.0)]
    assert "segformer.encoder.block.0.0.attention.self.query.bias" in groups[(1.0, 1.0)]
    # every LayerNorm of MiT-B0: 4 patch-embed + 8 blocks x 2 (+ 6 sr norms in stages 1-3) + 4 stage norms, x2 tensors
    assert len(groups[(1.0, 0.0)]) == 2 * (4 + 8 * 2 + 6 + 4)


# ---------------------------------------------------------------------------------------------- data order


def test_distributed_batches_cover_the_single_process_global_batch():
    from segformer.pt.data import TrainBatchSampler

    single = iter(TrainBatchSampler(20, 4, seed=3, world_size=1, rank=0))
    ranks = [iter(TrainBatchSampler(20, 2, seed=3, world_size=2, rank=r)) for r in range(2)]
    for _ in range(12):  # crosses epoch boundaries (5 steps per epoch)
        expected = sorted(next(single))
        got = sorted(next(ranks[0]) + next(ranks[1]))
        assert got == expected
    resumed = iter(TrainBatchSampler(20, 4, seed=3, start=7))
    fresh = iter(TrainBatchSampler(20, 4, seed=3))
    for _ in range(7):
        next(fresh)
    assert [next(resumed) for _ in range(6)] == [next(fresh) for _ in range(6)]
    with pytest.raises(ValueError, match="batch_size"):
        TrainBatchSampler(3, 4)


# ---------------------------------------------------------------------------------------------- PT trainer


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from segformer.common.training.datasets import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), num_train=12, num_val=3, size=(48, 48), num_labels=4)


def _small_config(**overrides):
    kwargs = dict(lr=1e-3, total_steps=12, warmup_steps=2, batch_size=4, crop_size=(32, 32), img_scale=(48, 48),
                  ratio_range=(0.75, 1.5), eval_every=0, checkpoint_every=0, log_every=100, seed=0)
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def _datasets(root, config):
    from segformer.common.training.datasets import SegmentationFolderDataset

    train = SegmentationFolderDataset(root, "training", transform=build_train_transform(config), seed=config.seed)
    val = SegmentationFolderDataset(root, "validation", transform=build_eval_transform(None))
    return train, val


def _tiny_model(seed=0):
    import torch

    from segformer.pt import SegformerForSemanticSegmentation

    torch.manual_seed(seed)
    return SegformerForSemanticSegmentation(tiny_config(num_labels=4))


def test_pt_optimizer_groups_and_learning_rates():
    import torch

    from segformer.pt.training import build_optimizer, set_learning_rate

    config = _small_config()
    model = _tiny_model()
    optimizer = build_optimizer(model, config)
    assert isinstance(optimizer, torch.optim.AdamW)
    by_key = {(g["lr_mult"], g["decay_mult"]): g for g in optimizer.param_groups}
    assert set(by_key) == {(1.0, 1.0), (1.0, 0.0), (10.0, 1.0)}
    assert by_key[(1.0, 0.0)]["weight_decay"] == 0.0 and by_key[(10.0, 1.0)]["weight_decay"] == 0.01
    count = sum(len(g["params"]) for g in optimizer.param_groups)
    assert count == len(list(model.parameters()))
    base = set_learning_rate(optimizer, config, 5)
    assert base == pytest.approx(config.lr_at(5))
    assert by_key[(10.0, 1.0)]["lr"] == pytest.approx(10 * base)
    assert by_key[(1.0, 0.0)]["lr"] == pytest.approx(base)


def test_pt_short_finetune_loss_falls_and_writes_hf_folder(synthetic, tmp_path):
    from segformer.pt import SegformerForSemanticSegmentation
    from segformer.pt.training import Trainer

    config = _small_config(total_steps=16, eval_every=16)
    train, val = _datasets(synthetic, config)
    trainer = Trainer(_tiny_model(), config, train, val, out_dir=tmp_path, progress=False, echo=False)
    history = trainer.train()
    losses = [r["loss"] for r in history]
    assert len(losses) == 16 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
    assert {"config.json", "model.safetensors", "train_log.jsonl", "last"} <= {p.name for p in tmp_path.iterdir()}
    log = read_jsonl(tmp_path / "train_log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 17))
    assert "mIoU" in log[-1] and 0.0 <= log[-1]["mIoU"] <= 1.0
    assert log[0]["lr"] == pytest.approx(config.lr_at(0)) and log[0]["lr_head"] == pytest.approx(10 * config.lr_at(0))
    reloaded = SegformerForSemanticSegmentation.from_pretrained(tmp_path)
    for name, value in trainer.inner.state_dict_numpy().items():
        np.testing.assert_array_equal(reloaded.state_dict_numpy()[name], value, err_msg=name)


def test_pt_resume_continues_exactly(synthetic, tmp_path):
    from segformer.pt.training import Trainer

    config = _small_config(total_steps=6)
    train, _ = _datasets(synthetic, config)
    straight = Trainer(_tiny_model(), config, train, out_dir=tmp_path / "a", progress=False, echo=False).train()
    first = Trainer(_tiny_model(), config, train, out_dir=tmp_path / "b", progress=False, echo=False)
    part1 = first.train(stop_at=3)
    assert not (tmp_path / "b" / "model.safetensors").exists()
    second = Trainer(_tiny_model(seed=99), config, train, out_dir=tmp_path / "b", resume=True, progress=False, echo=False)
    assert second.step == 3
    part2 = second.train()
    got = [r["loss"] for r in part1 + part2]
    want = [r["loss"] for r in straight]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    from segformer.pt import SegformerForSemanticSegmentation

    ma = SegformerForSemanticSegmentation.from_pretrained(tmp_path / "a").state_dict_numpy()
    mb = SegformerForSemanticSegmentation.from_pretrained(tmp_path / "b").state_dict_numpy()
    assert max(float(np.abs(ma[k] - mb[k]).max()) for k in ma) < 1e-6
    log = read_jsonl(tmp_path / "b" / "train_log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 7))


def test_pt_gradient_checkpointing_and_accumulation_and_bf16(synthetic):
    import torch

    from segformer.pt.training import Trainer

    config = _small_config(total_steps=2, batch_size=2, grad_accum=2)
    train, _ = _datasets(synthetic, config)
    plain = Trainer(_tiny_model(), config, train, progress=False, echo=False)
    plain.train()
    checkpointed_config = _small_config(total_steps=2, batch_size=2, grad_accum=2, gradient_checkpointing=True)
    checkpointed = Trainer(_tiny_model(), checkpointed_config, train, progress=False, echo=False)
    checkpointed.train()
    assert checkpointed.inner.segformer.encoder.gradient_checkpointing
    np.testing.assert_allclose([r["loss"] for r in checkpointed.history], [r["loss"] for r in plain.history], atol=1e-6)
    for (name, a), b in zip(plain.inner.state_dict().items(), checkpointed.inner.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    bf16 = Trainer(_tiny_model(), _small_config(total_steps=2, bf16=True), train, progress=False, echo=False)
    history = bf16.train()
    assert all(math.isfinite(r["loss"]) for r in history)
    assert abs(history[0]["loss"] - plain.history[0]["loss"]) < 0.1  # same data, bf16 rounding only


def test_pt_evaluate_equals_direct_metric(synthetic):
    import torch
    import torch.nn.functional as F

    from segformer.common.training.metrics import SegmentationMetric
    from segformer.pt.training import evaluate

    _, val = _datasets(synthetic, _small_config())
    model = _tiny_model().eval()
    result = evaluate(model, val).compute()
    direct = SegmentationMetric(4)
    with torch.no_grad():
        for i in range(len(val)):
            item = val[i]
            logits = model(torch.from_numpy(item["pixel_values"])[None]).logits
            logits = F.interpolate(logits, size=item["labels"].shape, mode="bilinear", align_corners=False)
            direct.update(logits.argmax(1).numpy(), item["labels"][None])
    np.testing.assert_array_equal(result["confusion_matrix"], direct.compute()["confusion_matrix"])


def test_sync_batchnorm_is_batchnorm_without_a_process_group():
    import torch

    from segformer.pt.training import SyncBatchNorm2d, convert_sync_batchnorm

    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(5)
    sync = SyncBatchNorm2d(5)
    x = torch.randn(3, 5, 4, 4)
    torch.testing.assert_close(sync(x), bn(x))
    torch.testing.assert_close(sync.running_var, bn.running_var)
    model = _tiny_model()
    assert convert_sync_batchnorm(model) is model  # no process group: unchanged
    assert type(model.decode_head.batch_norm) is torch.nn.BatchNorm2d


def test_build_model_sources(tmp_path):
    from segformer.pt.training import build_model

    tiny_config(num_labels=3).save_pretrained(tmp_path / "cfg")
    config_path = tmp_path / "cfg" / "config.json"
    model = build_model(config_path, id2label={0: "a", 1: "b"}, seed=1)
    assert model.config.num_labels == 2 and model.config.id2label[1] == "b" and model.training
    model.save_pretrained(tmp_path / "ckpt")
    again = build_model(tmp_path / "ckpt", num_labels=2)
    np.testing.assert_array_equal(again.state_dict_numpy()["decode_head.classifier.weight"],
                                  model.state_dict_numpy()["decode_head.classifier.weight"])
    with pytest.warns(UserWarning):
        relabeled = build_model(tmp_path / "ckpt", num_labels=5)
    assert relabeled.config.num_labels == 5
    assert build_model("b0", num_labels=7).config.hidden_sizes == [32, 64, 160, 256]
    with pytest.raises(ValueError, match="--model"):
        build_model("b9")


def test_pt_training_steps_run_on_the_threads_free_now(synthetic, tmp_path, monkeypatch):
    """The thread policy's per-call count in the trainer: with every other CPU taken (faked), each step's
    forward and backward run on 1 thread; the count the user set is back after the step."""
    import os

    import torch

    import segformer.common.base.threads as threads
    from segformer.pt.training import Trainer

    config = _small_config(total_steps=2)
    train, _ = _datasets(synthetic, config)
    model = _tiny_model()
    seen: list[int] = []
    model.register_forward_hook(lambda *args: seen.append(torch.get_num_threads()))
    monkeypatch.setattr(threads, "runnable_elsewhere", lambda: (os.cpu_count() or 1) - 1)
    monkeypatch.setattr(threads, "_LAST_ELSEWHERE", [None])
    monkeypatch.setattr(threads, "pinned_to_some_cpus", lambda: False)  # the loadavg rule, wherever this runs
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        Trainer(model, config, train, out_dir=tmp_path, progress=False, echo=False).train()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1]
