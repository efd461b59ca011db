"""The host random state (numpy's global generator and Python's ``random``) as plain values, saved and
restored by both trainers' training states (``segformer.pt.training``, ``segformer.tf.training``).

The layout holds only strings, numbers and lists, so it fits JSON and ``torch.load(weights_only=True)``::

    {"numpy": {"kind", "keys": [624 ints], "pos", "has_gauss", "cached_gaussian"},
     "python": {"version", "internal": [625 ints], "gauss"}}
"""

from __future__ import annotations

import random
from typing import Any, Mapping

import numpy as np

__all__ = ["host_rng_state", "set_host_rng_state"]


def host_rng_state() -> dict[str, Any]:
    """numpy's global and Python's ``random`` states as plain values (see the module docstring)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "numpy": {"kind": str(kind), "keys": [int(k) for k in keys], "pos": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": [int(i) for i in internal], "gauss": gauss},
    }


def set_host_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`host_rng_state` returned (``keys`` may also be an array or a CPU tensor)."""
    numpy_state, python_state = state["numpy"], state["python"]
    keys = np.asarray(numpy_state["keys"]).astype(np.uint32)
    np.random.set_state((numpy_state["kind"], keys, numpy_state["pos"], numpy_state["has_gauss"],
                         numpy_state["cached_gaussian"]))
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss"]))
