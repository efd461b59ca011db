"""PyTorch data plumbing over :class:`~segformer.common.training.datasets.SegmentationFolderDataset`.

Mirrored by ``segformer/tf/data.py``. The order of training items is
:func:`segformer.common.training.batches.rank_batches` (the same batches as TensorFlow for the same seed): a run on W
processes with ``batch_size`` b sees, at every step, the same items as one process with batch ``W * b``.
Each index travels together with its epoch as an ``(epoch, index)`` pair, so an item's augmentation
depends only on ``(seed, epoch, index)`` and never on which data-loader worker built it or whether the
run was resumed.

Typical use::

    dataset = SegmentationFolderDataset(root, "training", transform=TrainTransform((512, 512)), seed=0)
    loader = make_train_loader(dataset, batch_size=2, seed=0, rank=rank, world_size=world_size)
    for batch in loader:            # endless: epoch after epoch
        batch["pixel_values"]       # float32 (b, 3, H, W)
        batch["labels"]             # int64 (b, H, W)
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..common.training.batches import rank_batches
from ..common.training.datasets import collate_items

__all__ = [
    "TorchSegmentationDataset",
    "TrainBatchSampler",
    "collate",
    "make_train_loader",
]


class TorchSegmentationDataset(Dataset):
    """A ``torch.utils.data.Dataset`` view of a segmentation dataset (items as tensors).

    ``dataset[i]`` or ``dataset[(epoch, i)]`` -> ``{"pixel_values": float32 tensor, "labels": int64 tensor,
    "name": str}``; the ``(epoch, i)`` form selects the augmentation stream of ``epoch`` first.
    Raw items (no transform) become ``pixel_values`` uint8 ``(H, W, 3)``.
    """

    def __init__(self, dataset: Any) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"dataset must support len() and indexing, got {type(dataset).__name__}")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            epoch, index = key
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(int(epoch))
        else:
            index = key
        item = self.dataset[int(index)]
        out: dict[str, Any] = {}
        for name, value in item.items():
            if isinstance(value, np.ndarray):
                out[name] = torch.from_numpy(np.ascontiguousarray(value))
            else:
                out[name] = value
        return out


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors of equal shape along a new first axis; other values become lists."""
    return collate_items(items, torch.Tensor, torch.stack)


class TrainBatchSampler:
    """Endless per-rank micro-batches of ``(epoch, index)`` pairs (:func:`~segformer.common.training.batches.rank_batches`).

    Every rank cuts its ``batch_size`` rows out of each global batch of ``world_size * batch_size`` (the
    last incomplete global batch of an epoch dropped, so all ranks step together). ``start`` skips that
    many micro-batches (resuming), without loading them.
    """

    def __init__(
        self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0,
    ) -> None:
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size, self.start = rank, world_size, int(start)
        next(self.__iter__())  # argument errors now, not at the first step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return rank_batches(self.num_items, self.batch_size, self.seed, self.rank, self.world_size, self.start)


def make_train_loader(
    dataset: Any, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0,
    num_workers: int = 0, pin_memory: bool = False,
) -> DataLoader:
    """An endless ``DataLoader`` of training micro-batches (see :class:`TrainBatchSampler`); it never draws
    from the global torch RNG."""
    sampler = TrainBatchSampler(len(dataset), batch_size, seed=seed, rank=rank, world_size=world_size, start=start)
    # Its own generator: iter(loader) draws the workers' base seed from it, not from the global torch RNG,
    # so creating the iterator after a resume restored the RNG does not shift dropout / drop path.
    return DataLoader(
        TorchSegmentationDataset(dataset), batch_sampler=sampler, collate_fn=collate,
        num_workers=num_workers, pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed),
    )
