"""Background loading in input order: the next items are read while the caller works on the current one.

    for item in Prefetched(dataset.__getitem__, range(len(dataset))):   # item i + 1, i + 2 load meanwhile
        ...

Used by PyTorch evaluation (``segformer.pt.data.make_eval_batches``: the next images are read, decoded and
resized in a background thread while the model runs; Keras evaluation does the same in ``tf.data``) and by
``Segmenter.imap``, whose workers each run whole pipelines. Items come back in the order of ``keys``; an exception raised while loading an
item is raised when that item's turn comes, and nothing new is started after it.
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

__all__ = ["Prefetched"]


class Prefetched:
    """``load(key)`` for every key, in order, up to ``ahead`` items loaded ahead by ``workers`` threads.

    ``workers = 0`` loads in the calling thread (no background work). ``len()`` is the number of keys.
    """

    def __init__(self, load: Callable[[Any], Any], keys: Iterable[Any], ahead: int = 2, workers: int = 1) -> None:
        for name, value, low in (("ahead", ahead, 1), ("workers", workers, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.load, self.keys, self.ahead, self.workers = load, list(keys), ahead, workers

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[Any]:
        if self.workers == 0:
            for key in self.keys:
                yield self.load(key)
            return
        with ThreadPoolExecutor(self.workers) as pool:
            pending: collections.deque = collections.deque()
            position = 0
            try:
                while position < len(self.keys) or pending:
                    while position < len(self.keys) and len(pending) < self.ahead:
                        pending.append(pool.submit(self.load, self.keys[position]))
                        position += 1
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()
