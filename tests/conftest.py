"""Shared test helpers: where fixtures live, and lazily imported frameworks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
# ../shared exists beside the clone in CI and on developer machines; a user's clone may lack it.
SHARED = Path(os.environ.get("SEGFORMER_SHARED", ROOT.parent / "shared"))
SHARED_FIXTURES = SHARED / "fixtures"


def shared_or_skip(relative: str) -> Path:
    """Path inside ../shared/fixtures, or skip the test when ../shared is not there (a user's clone)."""
    path = SHARED_FIXTURES / relative
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is only beside CI / developer clones)")
    return path


def fixture_path(relative: str) -> Path:
    """A fixture copied into tests/fixtures (always present), else the ../shared original."""
    local = FIXTURES / relative
    if local.exists():
        return local
    return shared_or_skip(relative)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def xla_traces(monkeypatch) -> list[bool]:
    """Every answer of ``segformer.tf.layers.in_xla_context`` during the test, in order: the layers ask it
    while a graph is traced, so ``True`` entries prove an XLA trace and ``False`` ones a plain-graph trace."""
    pytest.importorskip("tensorflow")
    from segformer.tf import layers

    seen: list[bool] = []
    real = layers.in_xla_context
    monkeypatch.setattr(layers, "in_xla_context", lambda: seen.append(real()) or seen[-1])
    return seen
