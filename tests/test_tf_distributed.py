"""The Keras training loop under ``tf.distribute.MirroredStrategy`` on 2 logical CPU devices against one
device on the same global batch, with a small stand-in Keras model (conv -> BatchNorm -> conv, masked
cross-entropy), so the loop, the optimizer inside ``strategy.run`` and synchronized BatchNorm are covered
whether or not ``segformer.tf``'s models are installed (tests/test_tf_training.py repeats this with them)."""

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
from segformer.common.model.config import SegformerConfig
from segformer.common.training.datasets import SegmentationFolderDataset
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
    from segformer.common.training.datasets import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", num_train=12, num_val=1, size=(48, 48), num_labels=4)
    one = _run(1, 4, data, True)
    two = _run(2, 2, data, True)
    assert (one["replicas"], two["replicas"]) == (1, 2)
    diff = np.abs(np.asarray(one["losses"]) - np.asarray(two["losses"])).max()
    print(f"MirroredStrategy (2 CPU replicas, SyncBN) vs 1 device: max |loss diff| over 5 steps {diff:.3g}")
    assert diff < 1e-5, (one, two)
    unsynced = _run(2, 2, data, False)
    assert np.abs(np.asarray(one["losses"]) - np.asarray(unsynced["losses"])).max() > 1e-4


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_tf_config_workers_predict_and_eval_shard_by_worker(tmp_path):
    """2 Keras workers (TF_CONFIG, MultiWorkerMirroredStrategy on localhost): every image written once, the
    same files as one process; eval sums the confusion matrices, so the mIoU is exactly one process's."""
    import json
    import os
    import subprocess
    import sys

    from segformer.common.training.datasets import make_synthetic_dataset
    from segformer.tf import TFSegformerForSemanticSegmentation
    from tests.randomize import tiny_config

    make_synthetic_dataset(tmp_path / "data", num_train=6, num_val=2, size=(48, 48), num_labels=4)
    model = TFSegformerForSemanticSegmentation(tiny_config(num_labels=4))
    model.save_pretrained(tmp_path / "model")
    images = str(tmp_path / "data" / "images" / "training")

    def run(args, workers=1):
        addresses = [f"localhost:{_free_port()}" for _ in range(workers)]
        processes = []
        for index in range(workers):
            env = dict(os.environ, OMP_NUM_THREADS="1")
            if workers > 1:
                env["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})
            processes.append(subprocess.Popen([sys.executable, "-m", "segformer.cli", *args], env=env, text=True,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        outputs = [p.communicate(timeout=300) for p in processes]
        for process, (out, err) in zip(processes, outputs):
            assert process.returncode == 0, out[-2000:] + err[-2000:]
        return outputs[0][0]

    common = ["predict", "--framework", "tf", "--model", str(tmp_path / "model"), images, "--allow-random-head",
              "--no-progress"]
    run(common + ["--out", str(tmp_path / "one")])
    run(common + ["--out", str(tmp_path / "two")], workers=2)
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png"))
    two = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.png"))
    assert one == two and len(one) == 2 * 6 + 1
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    evaluate = ["eval", "--framework", "tf", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"),
                "--split", "training", "--no-progress"]
    single = run(evaluate).strip().splitlines()
    double = run(evaluate, workers=2).strip().splitlines()
    assert single[-1].startswith("mIoU") and single[-1] == double[-1] and "2 workers" in "\n".join(double)
