"""A generator whose seed ``i`` produces outcome ``PLAN[i % len(PLAN)]`` on purpose: the harness's own test
(registered apart from the real generators, so the long run does not include it)."""

from __future__ import annotations

import ctypes
import time

import numpy as np

from fuzzing.cases import Case, require

PLAN = ["ok", "clear-error", "raw-error", "silently-wrong", "accepted-invalid", "unnamed-error", "hang", "memory",
        "crash"]


def setup(folder):
    return {}


def make_case(rng, context, folder):
    kind = PLAN[context["seed"] % len(PLAN)]

    def run():
        if kind in ("ok", "silently-wrong", "accepted-invalid"):
            return 2 + 2
        if kind == "clear-error":
            raise ValueError("size must be a positive int, got 0")
        if kind == "unnamed-error":
            raise ValueError("bad value")
        if kind == "raw-error":
            raise RuntimeError("internal failure")
        if kind == "hang":
            time.sleep(3600)
        if kind == "memory":
            return int(np.ones(3 << 30, np.uint8).sum())
        return ctypes.string_at(0)  # crash: SIGSEGV

    def check(answer, caught):
        require(answer == 4 and kind != "silently-wrong", f"2 + 2 gave {answer}")

    expect = "error" if kind in ("clear-error", "accepted-invalid", "unnamed-error") else "either"
    return Case({"kind": kind}, run, expect=expect, names=("size",), check=check)
