"""Several TensorFlow workers for ``predict`` / ``eval``: the multi-worker setup of ``TF_CONFIG``.

``TF_CONFIG = {"cluster": {"worker": ["host1:port", "host2:port", ...]}, "task": {"type": "worker", "index": i}}``
(the variable ``tf.distribute.MultiWorkerMirroredStrategy`` reads) makes this process worker ``i`` of
``len(worker)``. Images are split by worker index, like ranks under ``torchrun``; per-worker counts (the
confusion matrix of ``eval``, the classes seen by ``predict``) are summed across workers with the strategy's
collective all-reduce (float64: exact for counts below 2**53).
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["WorkerGroup", "tf_config_workers"]


def tf_config_workers() -> tuple[int, int]:
    """``(index, count)`` of this worker from ``TF_CONFIG``; ``(0, 1)`` without one. A malformed variable is a
    ``ValueError`` naming it."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        return 0, 1
    try:
        config = json.loads(text)
        workers = list(config.get("cluster", {}).get("worker", []))
        task = config.get("task", {})
        index = int(task.get("index", 0)) if task.get("type", "worker") == "worker" else 0
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"TF_CONFIG is not a valid multi-worker description ({err}): {text[:200]!r}") from None
    if len(workers) > 1 and not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG task index {index} is outside the {len(workers)} workers")
    return (index, len(workers)) if len(workers) > 1 else (0, 1)


class WorkerGroup:
    """This process's place among the ``TF_CONFIG`` workers (one worker: a group of one, no strategy).

    Create it before the model: ``MultiWorkerMirroredStrategy`` must start before TensorFlow runs any op; a
    trainer passes the strategy it already has (``strategy``), whose replicas may be several per worker.
    """

    def __init__(self, strategy: object = None) -> None:
        self.rank, self.world = tf_config_workers()
        self.strategy = None
        if self.world > 1:
            import tensorflow as tf

            self.strategy = strategy if strategy is not None else tf.distribute.MultiWorkerMirroredStrategy()

    def sum(self, array: np.ndarray) -> np.ndarray:
        """``array`` (non-negative integer counts) summed over every worker, as int64."""
        counts = np.asarray(array)
        if self.strategy is None:
            return counts.astype(np.int64)
        import tensorflow as tf

        value = tf.constant(counts.astype(np.float64))
        total = self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(lambda: tf.identity(value)), axis=None)
        local_replicas = max(int(self.strategy.num_replicas_in_sync) // self.world, 1)  # each replica added it once
        return np.rint(total.numpy() / local_replicas).astype(np.int64)
