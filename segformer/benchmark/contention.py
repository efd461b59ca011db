"""Competing CPU-bound processes for ``segformer bench --contention N``: what a shared machine (a CI runner,
a laptop with a browser, a pod beside other pods) does to the timings.

:func:`competing_processes` starts ``N`` busy-loop Python processes and always ends them: on leaving the
``with`` block normally, on an exception and on Ctrl-C (``KeyboardInterrupt``); each one also exits by
itself within about 50 ms once its parent is gone (it polls ``os.getppid()``), so even a ``kill -9`` of the
benchmark leaves none behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Iterator

__all__ = ["BUSY_LOOP", "competing_processes"]

# a pure-Python loop (one core at 100 %) that ends when its parent does; the parent's id comes as the
# argument, so a parent that died while the loop was still starting is noticed too
BUSY_LOOP = (
    "import os, sys, time\n"
    "parent = int(sys.argv[1])\n"
    "deadline = time.monotonic()\n"
    "while True:\n"
    "    if time.monotonic() > deadline:\n"
    "        if os.getppid() != parent:\n"
    "            break\n"
    "        deadline = time.monotonic() + 0.05\n"
)


@contextlib.contextmanager
def competing_processes(count: int) -> Iterator[list[subprocess.Popen]]:
    """``count`` busy-loop processes running while the block runs (``0``: none); yields their ``Popen``s."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"contention must be a non-negative int (competing processes), got {count!r}")
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(os.getpid())], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a kill that did not take in 10 s: nothing more can be done here
                pass


def alive(pid: int) -> bool:
    """Whether a process with this id exists and is not a zombie (used by the tests)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
