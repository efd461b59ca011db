"""How much memory this process may still allocate, and the one check every large allocation passes first.

A request whose size comes from an argument, a config or a file (a resize target, a processor ``size``, a
post-processing ``target_sizes``, test-time scales, a model's widths, a checkpoint tensor's shape) is
estimated from arithmetic and refused by :func:`check_memory` BEFORE anything is allocated, with a
:class:`~segformer.common.base.errors.ResourceLimitError` naming the argument, the memory it would need and
what this process can still have. The limit is the smallest of:

* the address-space limit ``RLIMIT_AS`` (``ulimit -v``; containers and batch schedulers set it) minus the
  address space already mapped (``VmSize`` in ``/proc/self/status``);
* the cgroup memory limit (v2 ``memory.max`` minus ``memory.current``, v1 ``memory.limit_in_bytes`` minus
  ``memory.usage_in_bytes``) of this process's cgroup and its parents;
* the RAM available without swapping (``MemAvailable`` in ``/proc/meminfo``).

Where none of them can be read (not Linux), nothing is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .errors import ResourceLimitError

__all__ = ["available_memory", "check_memory", "format_bytes", "memory_limits"]

_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def format_bytes(count: float) -> str:
    """``1.5 GB`` style (powers of 1024)."""
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} B"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _address_space() -> tuple[str, int] | None:
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    used = _status_kb("VmSize") or 0
    return f"address-space limit RLIMIT_AS {format_bytes(soft)}, {format_bytes(used)} mapped", max(soft - used, 0)


def _cgroup_dirs() -> list[tuple[str, Path]]:
    """``(version, folder)`` of this process's memory cgroup and its parents, innermost first."""
    found: list[tuple[str, Path]] = []
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            version, root = "v2", Path("/sys/fs/cgroup")
        elif "memory" in parts[1].split(","):
            version, root = "v1", Path("/sys/fs/cgroup/memory")
        else:
            continue
        relative = Path(parts[2].lstrip("/"))
        for folder in [root / relative, *[root / p for p in relative.parents]]:
            if folder.is_dir() and (version, folder) not in found:
                found.append((version, folder))
    return found


def _cgroup() -> tuple[str, int] | None:
    best: tuple[str, int] | None = None
    for version, folder in _cgroup_dirs():
        names = ("memory.max", "memory.current") if version == "v2" else ("memory.limit_in_bytes", "memory.usage_in_bytes")
        limit = _read_int(folder / names[0])  # "max" (v2, no limit) reads as None
        if limit is None or limit >= _UNLIMITED:
            continue
        used = _read_int(folder / names[1]) or 0
        left = max(limit - used, 0)
        if best is None or left < best[1]:
            best = (f"cgroup memory limit {format_bytes(limit)} ({folder / names[0]}), {format_bytes(used)} in use", left)
    return best


def _ram() -> tuple[str, int] | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return "RAM available", int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return "RAM available", os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_limits() -> list[tuple[str, int]]:
    """``(description, bytes still available)`` of every limit that applies (see the module docstring)."""
    return [limit for limit in (_address_space(), _cgroup(), _ram()) if limit is not None]


def available_memory() -> int | None:
    """Bytes this process can still allocate (the smallest of :func:`memory_limits`), or ``None`` if unknown."""
    limits = memory_limits()
    return min(left for _, left in limits) if limits else None


def check_memory(needed: int, argument: str, what: str, fits: str | Callable[[int], str] | None = None) -> None:
    """Refuse, before allocating, a request of ``needed`` bytes that this process cannot have.

    ``argument`` names what the caller passed (``"resize=(30000, 30000)"``), ``what`` what would be allocated,
    ``fits`` (optional) what would fit instead, or a function of the bytes available that says it. Raises :class:`ResourceLimitError`.
    """
    limits = memory_limits()
    if not limits:
        return
    source, left = min(limits, key=lambda item: item[1])
    if needed <= left:
        return
    if callable(fits):
        fits = fits(left)
    hint = f"; {fits}" if fits else ""
    raise ResourceLimitError(
        f"{argument}: {what} would need about {format_bytes(needed)}, more than the {format_bytes(left)} this process "
        f"can still allocate ({source}){hint}"
    )
