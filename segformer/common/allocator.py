"""glibc ``malloc`` thresholds fixed at the steady state of its own dynamic rule, for both frameworks.

Why: PyTorch's and TensorFlow's CPU tensors come from ``malloc``. glibc serves a request above
``M_MMAP_THRESHOLD`` with a fresh ``mmap`` and returns free memory at the top of the heap to the system once
it exceeds ``M_TRIM_THRESHOLD``; both start small (128 KiB) and rise only as large blocks are freed, to at most
32 MiB and 64 MiB. A forward pass allocates and frees dozens of 2-50 MB activations, so until the thresholds
have risen, and after every trim, each of them is page-faulted in anew: on a 2-core VM that was 10-15 % of
SegFormer-B0's 512x512 inference time (1 thread 162-188 -> 139-149 ms; 2 threads 109 -> 90-95 ms; B2 827 ->
694 ms), with no change in peak memory.

What: :func:`tune_allocator` sets ``M_MMAP_THRESHOLD`` = 32 MiB and ``M_TRIM_THRESHOLD`` = 64 MiB (glibc's
``DEFAULT_MMAP_THRESHOLD_MAX`` on 64-bit and twice it, the values the dynamic rule converges to in any
process that once frees a 32 MiB block). Blocks above 32 MiB are still mapped and unmapped; at most 64 MiB
of free heap stays with the process. Both models' constructors call it once per process (linux with glibc
only; a no-op elsewhere). It is process-wide and cannot be undone (glibc has no call that restores the
dynamic rule), so it is opt-out before the first model is built: ``SEGFORMER_MALLOC_TUNING=0`` in the
environment, or ``tune_allocator(False)`` before building a model.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

__all__ = ["MALLOC_TUNING_ENV", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_allocator", "allocator_state"]

MALLOC_TUNING_ENV = "SEGFORMER_MALLOC_TUNING"
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 64 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)

# None: not decided yet; "tuned": thresholds set; "off": opted out; "unsupported": not glibc / call failed
_state: str | None = None


def allocator_state() -> str | None:
    """``None`` (no model built yet), ``"tuned"``, ``"off"`` (opted out) or ``"unsupported"`` (not glibc)."""
    return _state


def _env_enabled() -> bool:
    value = os.environ.get(MALLOC_TUNING_ENV, "1").strip().lower()
    if value in ("1", "true", "yes", "on", ""):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{MALLOC_TUNING_ENV}={value!r}: expected 1/0, true/false, yes/no or on/off")


def tune_allocator(enable: bool | None = None) -> str:
    """Set glibc's malloc thresholds once per process (see the module docstring); returns the state.

    ``enable=None`` (what the models call) follows ``SEGFORMER_MALLOC_TUNING`` (default on); ``False`` opts the
    process out, which only works before the first model is built; ``True`` tunes regardless of the
    environment. Later calls return the first decision unchanged.
    """
    global _state
    if _state is not None:
        return _state
    if enable is None:
        enable = _env_enabled()
    if not enable:
        _state = "off"
    elif not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        _state = "unsupported"
    else:
        try:
            libc = ctypes.CDLL(None)
            ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            ok = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
        except (OSError, AttributeError):
            ok = False
        _state = "tuned" if ok else "unsupported"
    return _state
