"""glibc malloc thresholds (``segformer.common.base.allocator``): set once per process, opt-out, observable effect.

Each case runs in a fresh interpreter (the setting is process-wide and one-way). The effect is checked by
where glibc puts an 8 MiB block: with the initial 128 KiB mmap threshold it is mapped on its own (far from the
``brk`` heap, whose end is ``sbrk(0)``); with the 32 MiB threshold it comes from the heap (just below ``sbrk(0)``).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc-only setting"
)

PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from segformer.common.base import allocator
    libc = ctypes.CDLL(None)
    libc.sbrk.restype = ctypes.c_void_p
    libc.malloc.restype = ctypes.c_void_p
    libc.sbrk.argtypes = [ctypes.c_long]
    arg = sys.argv[1]
    state = allocator.tune_allocator(None if arg == "env" else arg == "on")
    again = allocator.tune_allocator(True)  # a later call keeps the first decision
    block = libc.malloc(8 << 20)
    end = libc.sbrk(0)
    print(state, again, allocator.allocator_state(), block < end and end - block < (1 << 30))
    """
)


def _probe(arg: str, env_value: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SEGFORMER_MALLOC_TUNING", None)
    if env_value is not None:
        env["SEGFORMER_MALLOC_TUNING"] = env_value
    return subprocess.run([sys.executable, "-c", PROBE, arg], capture_output=True, text=True, env=env, timeout=60)


def test_default_tunes_and_large_blocks_come_from_the_heap():
    out = _probe("env", None)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["tuned", "tuned", "tuned", "True"]


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_environment_opt_out_keeps_glibc_defaults(value):
    out = _probe("env", value)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["off", "off", "off", "False"]  # the 8 MiB block was mapped on its own


def test_explicit_false_opts_out_and_true_tunes_despite_the_environment():
    assert _probe("off", None).stdout.split() == ["off", "off", "off", "False"]
    assert _probe("on", "0").stdout.split() == ["tuned", "tuned", "tuned", "True"]


def test_invalid_environment_value_names_the_variable_and_the_choices():
    out = _probe("env", "maybe")
    assert out.returncode != 0
    assert "SEGFORMER_MALLOC_TUNING='maybe'" in out.stderr and "1/0" in out.stderr


def test_training_raises_the_thresholds_once_and_only_on_a_tuned_process():
    code = textwrap.dedent(
        """
        import ctypes
        from segformer.common.base import allocator
        libc = ctypes.CDLL(None)
        libc.sbrk.restype = ctypes.c_void_p
        libc.malloc.restype = ctypes.c_void_p
        first = allocator.tune_allocator()
        in_heap = lambda block: block < libc.sbrk(0) and libc.sbrk(0) - block < (1 << 30)
        mapped = not in_heap(libc.malloc(100 << 20))  # above 32 MiB: mapped on its own
        training = allocator.tune_allocator(training=True)
        heap = in_heap(libc.malloc(100 << 20))  # below 256 MiB: from the heap now
        print(first, mapped, training, heap, allocator.tune_allocator(training=True))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "SEGFORMER_MALLOC_TUNING"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["tuned", "True", "tuned-training", "True", "tuned-training"]
    off = subprocess.run([sys.executable, "-c", "from segformer.common.base import allocator as a; "
                          "print(a.tune_allocator(training=True))"], capture_output=True, text=True,
                         env={**env, "SEGFORMER_MALLOC_TUNING": "0"}, timeout=60)
    assert off.stdout.strip() == "off"


def test_building_a_model_tunes_the_process():
    code = textwrap.dedent(
        """
        from segformer.common.base import allocator
        from segformer.common.model.config import SegformerConfig
        from segformer.pt import SegformerModel
        assert allocator.allocator_state() is None
        SegformerModel(SegformerConfig(hidden_sizes=[8, 8, 8, 8], num_attention_heads=[1, 1, 1, 1], depths=[1, 1, 1, 1],
                                       decoder_hidden_size=8))
        print(allocator.allocator_state())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "SEGFORMER_MALLOC_TUNING"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tuned"
