"""Background loading for evaluation: in order, in another thread, errors in their turn."""

from __future__ import annotations

import threading

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
