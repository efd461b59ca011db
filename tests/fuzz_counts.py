"""Outcome counting shared by the hypothesis fuzz tests (``test_fuzz_*.py``): each case is an answer or one of
our documented errors, counted by kind and printed at the end of the module."""

from __future__ import annotations

import collections
from typing import Any, Callable

from segformer.common.base.errors import DOCUMENTED_ERRORS

Outcomes = dict[str, collections.Counter]


def new_outcomes() -> Outcomes:
    return collections.defaultdict(collections.Counter)


def counted(outcomes: Outcomes, kind: str, func: Callable[[], Any], ours: tuple[str, ...]) -> Any:
    """``func()``, counted as ``ok``; a documented error whose type is in ``ours`` (with a message) counts under
    its name and gives ``None``; any other exception propagates (a bug)."""
    try:
        result = func()
    except DOCUMENTED_ERRORS as err:
        name = type(err).__name__
        assert name in ours, f"{name} escaped: {err}"
        assert str(err), f"{name} without a message"
        outcomes[kind][name] += 1
        return None
    outcomes[kind]["ok"] += 1
    return result


def print_outcomes(outcomes: Outcomes) -> None:
    for kind, counter in sorted(outcomes.items()):
        print(f"\nfuzz {kind}: {sum(counter.values())} cases: {dict(counter)}")
