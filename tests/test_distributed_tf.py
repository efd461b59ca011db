"""The Keras training loop under ``tf.distribute.MirroredStrategy`` on 2 logical CPU devices against one
device on the same global batch, with a small stand-in Keras model (conv -> BatchNorm -> conv, masked
cross-entropy), so the loop, the optimizer inside ``strategy.run`` and synchronized BatchNorm are covered
whether or not ``segformer.tf``'s models are installed (tests/test_training_tf.py repeats this with them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.tf

SCRIPT = r'''
import json, sys
import numpy as np
from segformer.tf.training import make_strategy
strategy = make_strategy(cpu_devices=int(sys.argv[1]))
import keras
import tensorflow as tf
from segformer.common.config import SegformerConfig
from segformer.common.datasets import SegmentationFolderDataset
from segformer.common.training import TrainConfig, build_train_transform
from segformer.tf.training import Trainer


class Output:
    def __init__(self, loss, logits):
        self.loss, self.logits = loss, logits


class StandIn(keras.Model):
    def __init__(self):
        super().__init__()
        self.config = SegformerConfig(num_labels=4)
        self.encoder = keras.layers.Conv2D(8, 3, padding="same", name="encoder")
        self.bn = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="decode_head_batch_norm")
        self.classifier = keras.layers.Conv2D(4, 1, name="decode_head_classifier")

    def call(self, pixel_values, labels=None, training=False):
        x = tf.transpose(pixel_values, (0, 2, 3, 1))
        logits = self.classifier(tf.nn.relu(self.bn(self.encoder(x), training=training)))
        loss = None
        if labels is not None:
            valid = labels != 255
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.where(valid, labels, 0), logits)
            mask = tf.cast(valid, tf.float32)
            loss = tf.reduce_sum(ce * mask) / tf.reduce_sum(mask)
        return Output(loss, tf.transpose(logits, (0, 3, 1, 2)))

    def state_dict_numpy(self):
        return {v.path: v.numpy() for v in self.variables}

    def load_state_dict_numpy(self, state):
        for v in self.variables:
            v.assign(state[v.path])


config = TrainConfig(lr=1e-3, total_steps=5, warmup_steps=1, batch_size=int(sys.argv[2]), crop_size=(32, 32),
                     img_scale=(48, 48), ratio_range=(1.0, 1.0), eval_every=0, checkpoint_every=0, log_every=100,
                     seed=3, sync_bn=sys.argv[4] == "1")
train = SegmentationFolderDataset(sys.argv[3], "training", transform=build_train_transform(config), seed=3)
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = StandIn()
    model(np.zeros((1, 3, 32, 32), np.float32))
history = Trainer(model, config, train, progress=False, echo=False).train()
print("RESULT", json.dumps({"replicas": strategy.num_replicas_in_sync, "losses": [r["loss"] for r in history]}))
'''


def _run(devices, batch, data, sync):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(devices), str(batch), str(data), "1" if sync else "0"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_mirrored_two_cpu_replicas_match_one_device_with_sync_bn(tmp_path):
    from segformer.common.datasets import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", num_train=12, num_val=1, size=(48, 48), num_labels=4)
    one = _run(1, 4, data, True)
    two = _run(2, 2, data, True)
    assert (one["replicas"], two["replicas"]) == (1, 2)
    diff = np.abs(np.asarray(one["losses"]) - np.asarray(two["losses"])).max()
    print(f"MirroredStrategy (2 CPU replicas, SyncBN) vs 1 device: max |loss diff| over 5 steps {diff:.3g}")
    assert diff < 1e-5, (one, two)
    unsynced = _run(2, 2, data, False)
    assert np.abs(np.asarray(one["losses"]) - np.asarray(unsynced["losses"])).max() > 1e-4
