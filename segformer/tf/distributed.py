"""Distributed training setup for Keras: the strategy (:func:`make_strategy`), synchronized BatchNorm, and which
process is the chief. Twin of :mod:`segformer.pt.distributed`; used by :mod:`segformer.tf.training` and
``segformer train --framework tf``."""

from __future__ import annotations

import os
from typing import Any

import keras
import tensorflow as tf

__all__ = ["is_chief", "make_strategy", "set_sync_batchnorm", "strategy_of"]


def make_strategy(cpu_devices: int | None = None) -> tf.distribute.Strategy:
    """``MultiWorkerMirroredStrategy`` if ``TF_CONFIG`` is set, else ``MirroredStrategy`` over the GPUs (or
    ``cpu_devices`` logical CPU devices, for testing), else the default (one device) strategy.

    ``cpu_devices`` must be given before TensorFlow touches a device (it splits the CPU).
    """
    if cpu_devices is not None and cpu_devices > 1:
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(cpu_devices)]
        )
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


def set_sync_batchnorm(model: Any, synchronized: bool = True) -> int:
    """Make every ``BatchNormalization`` of ``model`` compute moments across replicas; returns how many."""
    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = bool(synchronized)
            count += 1
    return count


def strategy_of(model: Any) -> tf.distribute.Strategy:
    """The strategy whose scope created the model's variables (the current one if they are plain)."""
    for variable in model.trainable_variables:
        value = getattr(variable, "value", variable)
        found = getattr(value, "_distribute_strategy", None)
        if found is not None:
            return found
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: always without ``TF_CONFIG``, else the chief (or worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not os.environ.get("TF_CONFIG"):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0)
