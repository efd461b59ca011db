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

Training: ``tune_allocator(training=True)``, which both frameworks' ``build_optimizer`` call (a process that
builds the trainer's optimizer trains), raises the two to 256 MiB and 512 MiB. A b0 training step at batch 8 x
512 x 512 allocates and frees 67-134 MB activations and their gradients; with them mapped afresh each step it
page-faulted about 3.5 GB per step (PyTorch, 1 thread: 8.8 -> 7.9 s per step, peak RSS 2.7 -> 3.4 GB).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

__all__ = [
    "MALLOC_TUNING_ENV", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "TRAINING_MMAP_THRESHOLD", "TRAINING_TRIM_THRESHOLD",
    "tune_allocator", "allocator_state",
]

MALLOC_TUNING_ENV = "SEGFORMER_MALLOC_TUNING"
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 64 * 2**20
TRAINING_MMAP_THRESHOLD = 256 * 2**20
TRAINING_TRIM_THRESHOLD = 512 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)

# None: not decided yet; "tuned" / "tuned-training": thresholds set; "off": opted out; "unsupported": not glibc
_state: str | None = None


def allocator_state() -> str | None:
    """``None`` (no model built yet), ``"tuned"``, ``"tuned-training"``, ``"off"`` (opted out) or ``"unsupported"``."""
    return _state


def _env_enabled() -> bool:
    value = os.environ.get(MALLOC_TUNING_ENV, "1").strip().lower()
    if value in ("1", "true", "yes", "on", ""):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{MALLOC_TUNING_ENV}={value!r}: expected 1/0, true/false, yes/no or on/off")


def _mallopt(mmap_threshold: int, trim_threshold: int) -> bool:
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
        return libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1 and ok
    except (OSError, AttributeError):
        return False


def tune_allocator(enable: bool | None = None, training: bool = False) -> str:
    """Set glibc's malloc thresholds once per process (see the module docstring); returns the state.

    ``enable=None`` (what the models call) follows ``SEGFORMER_MALLOC_TUNING`` (default on); ``False`` opts the
    process out, which only works before the first model is built; ``True`` tunes regardless of the
    environment. Later calls keep the first decision; ``training=True`` on a tuned process raises the
    thresholds to the training values (once).
    """
    global _state
    if _state is None:
        if enable is None:
            enable = _env_enabled()
        if not enable:
            _state = "off"
        elif not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
            _state = "unsupported"
        else:
            _state = "tuned" if _mallopt(MMAP_THRESHOLD, TRIM_THRESHOLD) else "unsupported"
    if training and _state == "tuned" and _mallopt(TRAINING_MMAP_THRESHOLD, TRAINING_TRIM_THRESHOLD):
        _state = "tuned-training"
    return _state
