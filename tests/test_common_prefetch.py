"""Background loading for evaluation: in order, in another thread, errors in their turn, and the
same batches as the DataLoader evaluation used before."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from segformer.common.inference.prefetch import Prefetched


def test_prefetched_order_background_thread_and_errors():
    main = threading.get_ident()
    seen = []

    def load(key):
        seen.append(threading.get_ident())
        if key == 3:
            raise OSError("unreadable 3")
        return key * 10

    iterator = iter(Prefetched(load, range(6), ahead=2))
    assert [next(iterator) for _ in range(3)] == [0, 10, 20]
    with pytest.raises(OSError, match="unreadable 3"):
        next(iterator)
    assert main not in seen and len(seen) <= 6
    assert list(Prefetched(lambda k: k + 1, [5, 1, 4], workers=0)) == [6, 2, 5] and len(Prefetched(str, "ab")) == 2
    with pytest.raises(ValueError, match="ahead must be an int >= 1, got 0"):
        Prefetched(str, [], ahead=0)


def test_eval_batches_equal_the_dataloader(tmp_path):
    pytest.importorskip("torch")
    import torch

    from segformer.common.training.datasets import SegmentationFolderDataset, make_synthetic_dataset
    from segformer.common.training.recipe import build_eval_transform
    from segformer.pt.data import make_eval_batches, make_eval_loader

    make_synthetic_dataset(tmp_path / "data", num_train=1, num_val=5, size=(40, 52), num_labels=4)
    dataset = SegmentationFolderDataset(tmp_path / "data", "validation", transform=build_eval_transform(None))
    for rank in (0, 1):
        expected = list(make_eval_loader(dataset, rank, 2))
        got = list(make_eval_batches(dataset, rank, 2))
        assert len(got) == len(expected) == len(make_eval_batches(dataset, rank, 2))
        for a, b in zip(got, expected):
            assert a.keys() == b.keys()
            assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"], b["labels"])
            assert np.asarray(a["pixel_values"]).shape[0] == 1
