"""Keras side of training: the metric against numpy, the schedule and optimizer against the recipe and
PyTorch's AdamW, the tf.data order, and (once ``segformer.tf`` is there) fine-tuning, PT-vs-TF loss curves
and MirroredStrategy on 2 logical CPU devices against one device."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from segformer.common.training.metrics import SegmentationMetric  # noqa: E402
from segformer.common.training.recipe import TrainConfig, lr_at, read_jsonl  # noqa: E402
from tests.randomize import random_state, tiny_config  # noqa: E402

pytestmark = pytest.mark.tf




# ---------------------------------------------------------------------------------------------- metric


@pytest.mark.parametrize("reduce_labels", [False, True])
def test_keras_metric_equals_numpy_on_random_predictions(reduce_labels):
    from segformer.tf.metrics import SegmentationMeanIoU

    rng = np.random.default_rng(0)
    k = 6
    keras_metric = SegmentationMeanIoU(k, reduce_labels=reduce_labels)
    numpy_metric = SegmentationMetric(k, reduce_labels=reduce_labels)
    for _ in range(3):
        pred = rng.integers(0, k - 1, size=(2, 13, 17))  # class k-1 never predicted
        if reduce_labels:
            label = rng.integers(0, k, size=(2, 13, 17))  # 0 -> ignored, 1..k-1 -> 0..k-2: class k-1 empty
        else:
            label = rng.integers(0, k - 2, size=(2, 13, 17))  # classes k-2, k-1 absent from labels
        label[rng.random(label.shape) < 0.2] = 255
        keras_metric.update_state(label, pred)
        numpy_metric.update(pred, label)
    np.testing.assert_array_equal(keras_metric.confusion_matrix.numpy(), numpy_metric.confusion_matrix)
    expected = numpy_metric.compute()
    assert float(keras_metric.result()) == pytest.approx(expected["mean_iou"], abs=1e-12)
    got = keras_metric.compute()
    np.testing.assert_array_equal(got["per_class_iou"], expected["per_class_iou"])
    keras_metric.reset_state()
    assert int(keras_metric.confusion_matrix.numpy().sum()) == 0 and math.isnan(float(keras_metric.result()))


def test_keras_metric_takes_nchw_logits_and_checks_ranges():
    from segformer.tf.metrics import SegmentationMeanIoU

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    label = rng.integers(0, 4, size=(2, 20, 24))
    metric = SegmentationMeanIoU(4)
    metric.update_state(label, logits)
    resized = tf.image.resize(np.transpose(logits, (0, 2, 3, 1)), (20, 24), method="bilinear")
    reference = SegmentationMetric(4)
    reference.update(np.argmax(resized.numpy(), axis=-1), label)
    np.testing.assert_array_equal(metric.confusion_matrix.numpy(), reference.confusion_matrix)
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must lie"):
        SegmentationMeanIoU(4).update_state(np.full((1, 2, 2), 7), np.zeros((1, 2, 2), np.int64))
    with pytest.raises(ValueError, match="ignore_index"):
        SegmentationMeanIoU(4, ignore_index=2)
    config = SegmentationMeanIoU(4, reduce_labels=True).get_config()
    assert SegmentationMeanIoU.from_config(config).reduce_labels


# ---------------------------------------------------------------------------------------------- schedule / optimizer


def test_poly_warmup_schedule_equals_lr_at():
    from segformer.tf.training import PolyWarmupSchedule

    schedule = PolyWarmupSchedule(6e-5, 160_000, 1500, 1e-6, 1.0, 0.0)
    for step in [0, 1, 700, 1499, 1500, 90_000, 160_000]:
        assert float(schedule(step)) == pytest.approx(lr_at(step, 6e-5, 160_000, 1500, 1e-6, 1.0, 0.0), rel=1e-6, abs=1e-15)
    assert PolyWarmupSchedule.from_config(schedule.get_config()).warmup_steps == 1500


def test_param_group_adamw_equals_torch_adamw_with_groups():
    torch = pytest.importorskip("torch")
    from segformer.common.training.recipe import param_group_rule
    from segformer.tf.training import ParamGroupAdamW

    rng = np.random.default_rng(0)
    names = ["segformer.encoder.block.0.0.mlp.dense1.weight", "segformer.encoder.block.0.0.layer_norm_1.weight",
             "decode_head.classifier.weight", "decode_head.batch_norm.bias"]
    shapes = [(5, 3), (3,), (4, 2), (2,)]
    init = [rng.normal(size=s).astype(np.float32) for s in shapes]
    grads = [[rng.normal(size=s).astype(np.float32) * 10 ** rng.uniform(-3, 0) for s in shapes] for _ in range(20)]
    config = TrainConfig(lr=1e-3, total_steps=20, warmup_steps=5)

    tf_vars = [keras.Variable(v, name=f"v{i}") for i, v in enumerate(init)]
    from segformer.tf.training import PolyWarmupSchedule

    optimizer = ParamGroupAdamW(PolyWarmupSchedule(config.lr, 20, 5, config.warmup_ratio), weight_decay=0.01,
                                names={v.path: n for v, n in zip(tf_vars, names)})
    optimizer.build(tf_vars)
    assert optimizer.lr_mults == [1.0, 1.0, 10.0, 10.0] and optimizer.decay_mults == [1.0, 0.0, 1.0, 1.0]

    pt_params = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in init]
    groups = []
    for p, n in zip(pt_params, names):
        rule = param_group_rule(n)
        groups.append({"params": [p], "lr_mult": rule.lr_mult, "weight_decay": 0.01 * rule.decay_mult})
    pt_opt = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
    for step, g in enumerate(grads):
        for group in pt_opt.param_groups:
            group["lr"] = config.lr_at(step, group["lr_mult"])
        for p, gi in zip(pt_params, g):
            p.grad = torch.from_numpy(gi)
        pt_opt.step()
        optimizer.apply_gradients(zip([tf.constant(x) for x in g], tf_vars))
    for p, v, n in zip(pt_params, tf_vars, names):
        np.testing.assert_allclose(v.numpy(), p.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=n)


# ---------------------------------------------------------------------------------------------- data


class _Items:
    def __init__(self, n):
        self.n = n
        self.epoch = 0

    def __len__(self):
        return self.n

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, index):
        return {"pixel_values": np.full((3, 4, 4), index + 100 * self.epoch, np.float32),
                "labels": np.full((4, 4), index, np.int64)}


def test_tf_data_pipelines_shard_each_global_batch():
    from segformer.tf.data import global_batches, make_train_dataset

    items = _Items(10)
    single = make_train_dataset(items, 4, (4, 4), seed=1)
    batches = [b["labels"].numpy()[:, 0, 0].tolist() for b in single.take(5)]
    expected = [[i for _, i in batch] for _, batch in zip(range(5), global_batches(10, 4, 1))]
    assert batches == expected  # 2 per epoch, crossing into epoch 2
    epochs = [int(b["pixel_values"].numpy()[0, 0, 0, 0]) // 100 for b in single.take(5)]
    assert epochs == [0, 0, 1, 1, 2]
    shards = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2)
        shards.append([b["labels"].numpy()[:, 0, 0].tolist() for b in make_train_dataset(items, 4, (4, 4), seed=1, input_context=context).take(5)])
    for k in range(5):
        assert shards[0][k] + shards[1][k] == expected[k]
    resumed = make_train_dataset(items, 4, (4, 4), seed=1, start=3)
    assert [b["labels"].numpy()[:, 0, 0].tolist() for b in resumed.take(2)] == expected[3:5]


# ---------------------------------------------------------------------------------------------- with the TF models


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from segformer.common.training.datasets import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic_tf"), num_train=12, num_val=3, size=(48, 48), num_labels=4)


@pytest.mark.parity
def test_pt_and_tf_loss_curves_agree_over_20_steps():
    torch = pytest.importorskip("torch")
    from segformer.pt import SegformerForSemanticSegmentation
    from segformer.pt.training import Trainer as PtTrainer
    from segformer.tf import TFSegformerForSemanticSegmentation
    from segformer.tf.training import Trainer as TfTrainer

    config_model = tiny_config(num_labels=4)
    state = random_state(config_model, "semantic_segmentation", seed=3)
    pt_model = SegformerForSemanticSegmentation(config_model)
    pt_model.load_state_dict_numpy(state)
    tf_model = TFSegformerForSemanticSegmentation(config_model)
    tf_model(np.zeros((1, 3, 32, 32), np.float32), training=False)
    tf_model.load_state_dict_numpy(pt_model.state_dict_numpy())

    rng = np.random.default_rng(0)
    steps = 20
    images = rng.normal(size=(steps, 2, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 4, size=(steps, 2, 32, 32)).astype(np.int64)
    labels[:, :, :4, :] = 255  # ignored rows
    config = TrainConfig(lr=5e-4, total_steps=steps, warmup_steps=3, batch_size=2)
    pt_trainer = PtTrainer(pt_model, config, train_dataset=[], progress=False, echo=False)
    tf_trainer = TfTrainer(tf_model, config, train_dataset=[], progress=False, echo=False)
    pt_losses, tf_losses = [], []
    for step in range(steps):
        pt_losses.append(pt_trainer.train_step([{"pixel_values": torch.from_numpy(images[step]),
                                                 "labels": torch.from_numpy(labels[step])}]))
        tf_losses.append(tf_trainer.train_step(({"pixel_values": tf.constant(images[step]),
                                                 "labels": tf.constant(labels[step])},)))
    relative = np.abs(np.asarray(pt_losses) - np.asarray(tf_losses)) / np.abs(np.asarray(pt_losses))
    print(f"PT vs TF loss over {steps} steps: max relative diff {relative.max():.3g}")
    assert relative.max() < 1e-3, (pt_losses, tf_losses)
    assert np.mean(pt_losses[-5:]) < np.mean(pt_losses[:5])


def test_tf_short_finetune_loss_falls_checkpoint_and_resume(synthetic, tmp_path, capsys):
    from segformer.common.training.datasets import SegmentationFolderDataset
    from segformer.common.training.recipe import build_eval_transform, build_train_transform
    from segformer.tf import TFSegformerForSemanticSegmentation
    from segformer.tf.training import Trainer, build_model

    config = TrainConfig(lr=1e-3, total_steps=12, warmup_steps=2, batch_size=4, crop_size=(32, 32), img_scale=(48, 48),
                         ratio_range=(0.75, 1.5), eval_every=0, checkpoint_every=0, log_every=100)
    train = SegmentationFolderDataset(synthetic, "training", transform=build_train_transform(config), seed=0)
    val = SegmentationFolderDataset(synthetic, "validation", transform=build_eval_transform(None))
    tiny_config(num_labels=4).save_pretrained(tmp_path / "cfg")
    model = build_model(tmp_path / "cfg" / "config.json", seed=0, crop_size=(32, 32))
    history = Trainer(model, config, train, val, out_dir=tmp_path / "a", progress=False, echo=True).train()
    # the shared loop's time estimate: once, from steps 3-5 (the first two hold the graph tracing); the final log line's eta
    out = capsys.readouterr().out
    assert out.count("time estimate:") == 1 and "median of steps 3-5" in out and "12 steps take about" in out
    assert out.splitlines()[-1].startswith("step=12 ") and out.splitlines()[-1].endswith(" eta=0.0s")
    losses = [r["loss"] for r in history]
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3]), losses
    assert (tmp_path / "a" / "tf_model.h5").is_file() and (tmp_path / "a" / "config.json").is_file()
    assert "mIoU" in read_jsonl(tmp_path / "a" / "train_log.jsonl")[-1]
    reloaded = TFSegformerForSemanticSegmentation.from_pretrained(tmp_path / "a")
    for name, value in model.state_dict_numpy().items():
        np.testing.assert_array_equal(reloaded.state_dict_numpy()[name], value, err_msg=name)
    # interrupted at 6 and resumed: the same losses as the straight run
    model_b = build_model(tmp_path / "cfg" / "config.json", seed=0, crop_size=(32, 32))
    first = Trainer(model_b, config, train, out_dir=tmp_path / "b", progress=False, echo=False).train(stop_at=6)
    model_c = build_model(tmp_path / "cfg" / "config.json", seed=5, crop_size=(32, 32))
    second = Trainer(model_c, config, train, out_dir=tmp_path / "b", resume=True, progress=False, echo=True)
    assert second.step == 6
    capsys.readouterr()
    rest = second.train()
    assert "median of steps 9-11" in capsys.readouterr().out  # a resumed run skips its own first two steps (7, 8)
    np.testing.assert_allclose([r["loss"] for r in first + rest], losses, atol=1e-5)


_MIRRORED_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
from segformer.tf.training import make_strategy
strategy = make_strategy(cpu_devices=int(sys.argv[1]))
from segformer.common.training import TrainConfig
from segformer.tf.training import Trainer, build_model
from segformer.common.training.datasets import SegmentationFolderDataset
from segformer.common.training import build_train_transform
config = TrainConfig(lr=1e-3, total_steps=4, warmup_steps=1, batch_size=int(sys.argv[2]), crop_size=(32, 32),
                     img_scale=(48, 48), ratio_range=(1.0, 1.0), eval_every=0, checkpoint_every=0, log_every=100, seed=3)
train = SegmentationFolderDataset(sys.argv[3], "training", transform=build_train_transform(config), seed=3)
with strategy.scope():
    model = build_model(sys.argv[4], seed=0, crop_size=(32, 32))
trainer = Trainer(model, config, train, progress=False, echo=False)
history = trainer.train()
print("RESULT", json.dumps({"replicas": strategy.num_replicas_in_sync, "losses": [r["loss"] for r in history]}))
"""


def test_mirrored_strategy_two_cpu_replicas_match_one_device(synthetic, tmp_path):
    import json

    tiny_config(num_labels=4).save_pretrained(tmp_path / "cfg")
    results = {}
    for devices, batch in ((1, 4), (2, 2)):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
        done = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT, str(devices), str(batch), str(synthetic),
                               str(tmp_path / "cfg" / "config.json")], capture_output=True, text=True, env=env,
                              timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
        results[devices] = json.loads(line[len("RESULT "):])
    assert results[2]["replicas"] == 2 and results[1]["replicas"] == 1
    diffs = np.abs(np.asarray(results[1]["losses"]) - np.asarray(results[2]["losses"]))
    print(f"MirroredStrategy 2 replicas vs 1 device, max |loss diff| over 4 steps: {diffs.max():.3g}")
    assert diffs.max() < 1e-5, results
