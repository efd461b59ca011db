"""The training data order, shared by ``segformer.pt.data`` and ``segformer.tf.data``.

Epoch e visits ``numpy.random.default_rng([seed, e]).permutation(n)``, cut into **global** batches of
``global_batch_size`` items (the last incomplete one dropped). A run on W ranks with micro-batch b has the
global batch ``W * b``; rank r takes rows ``[r * b, (r + 1) * b)`` of every global batch, so one process
with batch ``W * b`` and W processes with batch b see the same items at every step, in PyTorch and in
TensorFlow alike. Items travel as ``(epoch, index)`` pairs, so an item's augmentation depends only on
``(seed, epoch, index)``.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

__all__ = ["epoch_order", "global_batches", "rank_batches"]


def epoch_order(num_items: int, seed: int, epoch: int) -> np.ndarray:
    """The item order of ``epoch``: a permutation of ``range(num_items)`` drawn from ``(seed, epoch)``."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_items)


def _check_batch_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def global_batches(num_items: int, global_batch_size: int, seed: int, start: int = 0) -> Iterator[list[tuple[int, int]]]:
    """Endless global batches of ``(epoch, index)`` pairs, skipping the first ``start`` ones (resuming)."""
    _check_batch_size("global_batch_size", global_batch_size)
    per_epoch = num_items // global_batch_size
    if per_epoch < 1:
        raise ValueError(
            f"the dataset has {num_items} items, fewer than the global batch of {global_batch_size} "
            "(batch_size x processes); "
            "lower --batch-size or add data"
        )
    batch = int(start)
    while True:
        epoch, position = divmod(batch, per_epoch)
        order = epoch_order(num_items, seed, epoch)
        for k in range(position, per_epoch):
            yield [(epoch, int(i)) for i in order[k * global_batch_size : (k + 1) * global_batch_size]]
            batch += 1


def rank_batches(
    num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0
) -> Iterator[list[tuple[int, int]]]:
    """Rank ``rank``'s share (``batch_size`` rows) of every global batch of ``world_size * batch_size``,
    skipping the first ``start`` batches."""
    _check_batch_size("batch_size", batch_size)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    for batch in global_batches(num_items, batch_size * world_size, seed, start):
        yield batch[rank * batch_size : (rank + 1) * batch_size]
