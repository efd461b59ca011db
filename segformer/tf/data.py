"""``tf.data`` pipelines over :class:`~segformer.common.training.datasets.SegmentationFolderDataset`.

Mirrors ``segformer/pt/data.py``. The training order is :func:`segformer.common.training.batches.global_batches`
(the same batches as PyTorch for the same seed); each item is augmented from ``(seed, epoch, index)`` by
the dataset itself. Under a ``tf.distribute`` strategy,
:func:`make_train_dataset` is the ``dataset_fn`` of ``strategy.distribute_datasets_from_function``: input
pipeline p of P takes rows ``[p * G/P, (p + 1) * G/P)`` of every global batch and batches them per replica
(``input_context.get_per_replica_batch_size``), so replica r of the run sees a slice of exactly the
global batch a single device would see.

Elements are dicts ``{"pixel_values": float32 (b, 3, H, W), "labels": int64 (b, H, W)}`` (NCHW, as the
models take them).
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

import numpy as np
import tensorflow as tf

from ..common.training.batches import epoch_order, global_batches

__all__ = ["epoch_order", "global_batches", "make_train_dataset"]


def _loader(dataset: Any) -> Any:
    """``load(epoch, index) -> (pixel_values, labels)``, safe to call from tf.data's parallel threads.

    A ``SegmentationFolderDataset`` is read without touching its shared ``epoch`` (the transform gets the
    generator ``default_rng([seed, epoch, index])``, exactly what ``dataset[index]`` would use in that
    epoch); other datasets are called under a lock after ``set_epoch``.
    """
    lock = threading.Lock()
    direct = all(hasattr(dataset, name) for name in ("load", "transform", "seed")) and dataset.seed is not None

    def load(epoch: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if direct and dataset.transform is not None:
            image, label = dataset.load(int(index))
            rng = np.random.default_rng([dataset.seed, int(epoch), int(index)])
            pixel_values, labels = dataset.transform(image, label, rng)
        else:
            with lock:
                if hasattr(dataset, "set_epoch"):
                    dataset.set_epoch(int(epoch))
                item = dataset[int(index)]
            pixel_values, labels = item["pixel_values"], item["labels"]
        return np.asarray(pixel_values, np.float32), np.asarray(labels, np.int64)

    return load


def make_train_dataset(
    dataset: Any,
    global_batch_size: int,
    crop_size: tuple[int, int],
    seed: int = 0,
    start: int = 0,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """An endless ``tf.data.Dataset`` of training batches (see the module docstring).

    Without ``input_context`` the batches are global (``global_batch_size`` rows); with it, per replica.
    ``start`` skips that many global batches (resuming). ``crop_size`` fixes the static shapes.
    """
    pipelines = 1 if input_context is None else input_context.num_input_pipelines
    pipeline = 0 if input_context is None else input_context.input_pipeline_id
    if global_batch_size % pipelines:
        raise ValueError(f"global_batch_size={global_batch_size} must be divisible by the {pipelines} input pipelines")
    share = global_batch_size // pipelines
    per_batch = share if input_context is None else input_context.get_per_replica_batch_size(global_batch_size)
    num_items = len(dataset)

    def generator() -> Iterator[tuple[int, int]]:
        for batch in global_batches(num_items, global_batch_size, seed, start):
            yield from batch[pipeline * share : (pipeline + 1) * share]

    height, width = crop_size
    load = _loader(dataset)

    def fetch(epoch: tf.Tensor, index: tf.Tensor) -> dict[str, tf.Tensor]:
        pixel_values, labels = tf.numpy_function(load, [epoch, index], [tf.float32, tf.int64], stateful=False)
        pixel_values.set_shape((3, height, width))
        labels.set_shape((height, width))
        return {"pixel_values": pixel_values, "labels": labels}

    signature = (tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.int64))
    pairs = tf.data.Dataset.from_generator(generator, output_signature=signature)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # sharded above
    options.deterministic = True
    return (
        pairs.map(fetch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(per_batch, drop_remainder=True)
        .prefetch(2)
        .with_options(options)
    )
