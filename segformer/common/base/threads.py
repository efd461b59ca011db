"""The thread policy of both frameworks and the command line: how many CPUs this process may use, and how
OpenMP waits.

* **How many threads.** :func:`available_cpus` counts the CPUs the process may run on (its affinity mask,
  ``os.sched_getaffinity``) and caps them by the cgroup CPU quota (cgroup v2 ``cpu.max``, cgroup v1
  ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; a quota of 1.5 CPUs gives 1 thread). Neither framework's own
  default reads the cgroup quota, so a Kubernetes pod limited to 2 CPUs on a 64-core node runs a thread per
  core of the node on 2 CPUs' worth of time. :func:`default_threads` is ``OMP_NUM_THREADS`` when the user set
  it, else :func:`available_cpus`.
* **How threads wait.** PyTorch's OpenMP threads spin at the barrier after every operation (GNU OpenMP: about
  300,000 spins before sleeping). When another process holds one of the cores, the thread on it is
  descheduled and its partners spin until it runs again: on a 2-core machine with one busy-loop process beside
  it, a 2-thread b0 pass at 512x512 took 880 ms against 68 ms quiet (``segformer bench --contention N``
  measures this). Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) avoids that but makes every barrier a wake-up:
  on the quiet machine b0 at 512x512 then took 87 ms instead of 68, at 128x128 23 ms instead of 9. The policy
  bounds the spin instead (``GOMP_SPINCOUNT=100000`` for GNU OpenMP, which the PyTorch wheels bundle;
  ``KMP_BLOCKTIME=1`` ms for LLVM / Intel OpenMP): as fast as the default on a quiet machine, 171 ms instead of
  880 under the competitor. OpenMP reads these variables once, when its library is loaded (with ``import
  torch``), so they must be in the environment before that.
* **How many threads now.** On a busy machine fewer threads are faster: one thread left alone on a core beats
  two that share one with another process (b0 512x512 beside one busy loop: 118 ms on 1 thread, 133-171 ms on
  2). :func:`threads_for_now` lowers the count for one call to the CPUs no other process is running on
  (:func:`runnable_elsewhere`: the kernel's count of runnable tasks minus this process's own, sampled when the
  call starts and when the last one ended, :func:`steady_elsewhere`);
  our PyTorch runners (``Segmenter``, the trainer, ``segformer bench``'s ``pt-*`` rows) apply it around each
  forward pass or training step (``segformer.pt.backend.adapted_threads``, which a library user can wrap
  around their own calls). TensorFlow fixes its pool size when its runtime starts, so only PyTorch adapts.

:func:`thread_environment` is the one place the environment rules are written: the variables to add, never
overriding one the user set. The ``segformer`` command line applies it before any framework is imported
(:func:`prepare_process`); a library user opts in with :func:`configure_threads` (before ``import torch``
for the OpenMP part; the thread counts work at any time). ``SEGFORMER_THREAD_POLICY=0`` turns the policy off
(the frameworks' defaults, unchanged, and no per-call adaptation).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Mapping, MutableMapping

__all__ = [
    "OPT_OUT_VARIABLE",
    "WAIT_VARIABLES",
    "available_cpus",
    "cgroup_cpu_limit",
    "configure_threads",
    "default_threads",
    "policy_enabled",
    "prepare_process",
    "record_elsewhere",
    "runnable_elsewhere",
    "steady_elsewhere",
    "thread_environment",
    "threads_for_now",
]

OPT_OUT_VARIABLE = "SEGFORMER_THREAD_POLICY"  # "0": leave threads and OpenMP as the frameworks set them
# OpenMP waiting: spin a bounded time at barriers, then sleep (GNU libgomp, which the PyTorch wheels bundle, reads
# GOMP_SPINCOUNT, a third of its default; LLVM / Intel OpenMP read KMP_BLOCKTIME, in ms, default 200)
WAIT_VARIABLES = {"GOMP_SPINCOUNT": "100000", "KMP_BLOCKTIME": "1"}
# thread-count variables: PyTorch (OpenMP, MKL) read OMP_NUM_THREADS; TensorFlow reads TF_NUM_INTRAOP_THREADS
THREAD_VARIABLES = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")

_CGROUP_ROOT = "/sys/fs/cgroup"
_PROC_CGROUP = "/proc/self/cgroup"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _v2_limit(text: str | None) -> float | None:
    """``cpu.max``: ``"QUOTA PERIOD"`` in microseconds, ``"max PERIOD"`` for no limit."""
    if not text:
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_limit(folder: Path) -> float | None:
    """``cpu.cfs_quota_us`` (``-1``: no limit) / ``cpu.cfs_period_us``."""
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    try:
        quota_us, period_us = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def cgroup_cpu_limit(root: str | os.PathLike = _CGROUP_ROOT, proc_cgroup: str | os.PathLike = _PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (``1.5`` = 150 ms per 100 ms), ``None`` when unlimited
    or unknown.

    cgroup v2: ``cpu.max`` of the process's cgroup (the ``0::PATH`` line of ``/proc/self/cgroup``) and of every
    cgroup above it, the smallest quota wins; cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under the
    ``cpu`` controller's mount (the process's own cgroup first, then the mount's root, as containers see it).
    ``root`` and ``proc_cgroup`` exist for tests (fake trees).
    """
    root = Path(root)
    limits: list[float] = []
    own: dict[str, str] = {}  # controller list -> path
    for line in (_read(Path(proc_cgroup)) or "").splitlines():
        fields = line.split(":", 2)
        if len(fields) == 3:
            own[fields[1]] = fields[2]
    if (root / "cpu.max").exists() or "" in own:  # cgroup v2 (unified)
        relative = Path(own.get("", "/").lstrip("/"))
        folders = [root / relative] + [root / parent for parent in relative.parents]
        for folder in folders:
            limit = _v2_limit(_read(folder / "cpu.max"))
            if limit is not None:
                limits.append(limit)
    for controllers, path in own.items():  # cgroup v1: the hierarchy that holds the cpu controller
        if "cpu" not in controllers.split(","):
            continue
        for mount in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu", root / controllers):
            for folder in (mount / path.lstrip("/"), mount):
                limit = _v1_limit(folder)
                if limit is not None:
                    limits.append(limit)
    return min(limits) if limits else None


def _affinity() -> set[int]:
    """This process's affinity mask (``os.sched_getaffinity``); every CPU where the platform has none."""
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def available_cpus(affinity: set[int] | None = None, cgroup_root: str | os.PathLike = _CGROUP_ROOT,
                   proc_cgroup: str | os.PathLike = _PROC_CGROUP) -> int:
    """The CPUs this process may use: its affinity mask (``os.sched_getaffinity``; ``os.cpu_count`` where the
    platform has none) capped by the cgroup quota (:func:`cgroup_cpu_limit`, rounded down), at least 1."""
    if affinity is None:
        affinity = _affinity()
    cpus = max(1, len(affinity))
    quota = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota + 1e-9)))
    return cpus


def _env_threads(name: str, text: str | None) -> int | None:
    """A thread-count variable: a positive integer; OpenMP's nested list form (``"4,2"``) counts by its
    first item. ``None`` when unset or empty."""
    if text is None or not text.strip():
        return None
    try:
        value = int(text.split(",")[0])
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"the environment variable {name} must be a positive integer, got {text!r} "
                         f"(unset it to use the CPUs this process may use)")
    return value


def policy_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """False when the user turned the policy off (``SEGFORMER_THREAD_POLICY=0``)."""
    environ = os.environ if environ is None else environ
    return environ.get(OPT_OUT_VARIABLE, "").strip() != "0"


def runnable_elsewhere(loadavg: str | os.PathLike = "/proc/loadavg",
                       own_tasks: str | os.PathLike = "/proc/self/task") -> int | None:
    """How many tasks other than this process's threads are running or waiting for a CPU right now: the
    first number of the fourth field of ``/proc/loadavg`` (``"R/T"``, the kernel's runnable tasks) minus this
    process's threads in state ``R`` (``/proc/self/task/*/stat``, read only when ``R`` > 1). ``None`` where
    ``/proc`` cannot tell (not Linux). Costs about 10 microseconds (40 when other tasks run)."""
    text = _read(Path(loadavg))
    try:
        runnable = int(text.split()[3].split("/")[0]) if text else -1
    except (IndexError, ValueError):
        runnable = -1
    if runnable < 0:
        return None
    if runnable <= 1:  # only the calling thread
        return 0
    own = 0
    try:
        names = os.listdir(own_tasks)
    except OSError:
        names = []
    for name in names:
        stat = _read(Path(own_tasks) / name / "stat")
        if stat and stat[stat.rfind(")") + 2:stat.rfind(")") + 3] == "R":
            own += 1
    return max(0, runnable - max(own, 1))


def pinned_to_some_cpus() -> bool:
    """Whether this process may run on fewer CPUs than the machine has online (an affinity mask: ``taskset``,
    a container's cpuset, a CPU manager's exclusive CPUs); ``False`` where the platform cannot tell."""
    return len(_affinity()) < (os.cpu_count() or 1)


def threads_for_now(limit: int, cpus: int | None = None, elsewhere: int | None = None,
                    pinned: bool | None = None) -> int:
    """Intra-op threads for the call about to run: ``limit`` (the count the user or the policy set), lowered to
    the machine's CPUs that no other task is using (``cpus`` defaults to ``os.cpu_count()``, ``elsewhere`` to
    :func:`steady_elsewhere`), at least 1. A task elsewhere on a machine with more CPUs than ``limit`` leaves
    ``limit`` unchanged; where ``/proc`` cannot tell, ``limit`` is returned. So is it for a process pinned to
    some of the machine's CPUs (``pinned``, default :func:`pinned_to_some_cpus`): ``/proc/loadavg`` counts the
    whole machine's tasks, which then need not run on our CPUs (a busy host would otherwise take a pinned
    container's free CPUs for taken ones); the bounded OpenMP spin still keeps a taken core from stalling
    the others there."""
    if pinned is None:
        pinned = pinned_to_some_cpus()
    if pinned:
        return limit
    if elsewhere is None:
        elsewhere = steady_elsewhere()
    if elsewhere is None:
        return limit
    total = (os.cpu_count() or 1) if cpus is None else cpus
    return max(1, min(limit, total - elsewhere))


# runnable_elsewhere() when the last adapted call ended (record_elsewhere); None before the first
_LAST_ELSEWHERE: list[int | None] = [None]


def record_elsewhere() -> None:
    """Sample :func:`runnable_elsewhere` at the end of a call, for :func:`steady_elsewhere` of the next."""
    _LAST_ELSEWHERE[0] = runnable_elsewhere()


def steady_elsewhere() -> int | None:
    """Tasks elsewhere that are there both now and when the last call ended (the smaller of the two samples):
    a CPU-bound process shows in both, a task that was only waking up (the process that just sent us work,
    a kernel worker) rarely does. The first call goes by the sample now."""
    now, last = runnable_elsewhere(), _LAST_ELSEWHERE[0]
    if now is None or last is None:
        return now
    return min(now, last)


def default_threads(environ: Mapping[str, str] | None = None, **cpus_kwargs) -> int:
    """Intra-op threads for both frameworks: ``OMP_NUM_THREADS`` when set (a positive integer, else
    ``ValueError`` naming it), else :func:`available_cpus` (``cpus_kwargs`` are passed to it)."""
    environ = os.environ if environ is None else environ
    given = _env_threads("OMP_NUM_THREADS", environ.get("OMP_NUM_THREADS"))
    return given if given is not None else available_cpus(**cpus_kwargs)


def thread_environment(environ: Mapping[str, str] | None = None, **cpus_kwargs) -> dict[str, str]:
    """The environment variables the policy adds: the thread counts (``OMP_NUM_THREADS``,
    ``TF_NUM_INTRAOP_THREADS``: :func:`default_threads`) and a bounded OpenMP spin (:data:`WAIT_VARIABLES`),
    each only where ``environ`` does not set it already; nothing at all when ``SEGFORMER_THREAD_POLICY=0``.
    ``OMP_WAIT_POLICY`` set by the user keeps its meaning (GNU OpenMP then spins forever or not at all), so no
    spin count is added next to it."""
    environ = os.environ if environ is None else environ
    if not policy_enabled(environ):
        return {}
    threads = str(default_threads(environ, **cpus_kwargs))
    added = {name: threads for name in THREAD_VARIABLES if not environ.get(name)}
    for name, value in WAIT_VARIABLES.items():
        if not environ.get(name) and not (name == "GOMP_SPINCOUNT" and environ.get("OMP_WAIT_POLICY")):
            added[name] = value
    return added


def prepare_process(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Add :func:`thread_environment` to ``environ`` (default ``os.environ``) and return what was added.
    Called by the ``segformer`` command line before any framework is imported; child processes inherit it."""
    environ = os.environ if environ is None else environ
    added = thread_environment(environ)
    environ.update(added)
    return added


def configure_threads(threads: int | None = None) -> int:
    """Opt in to the policy from Python: set the OpenMP variables (effective only if torch is not imported
    yet: OpenMP reads them when it is loaded) and the intra-op threads of every framework already imported
    (``torch.set_num_threads``; TensorFlow's ``set_intra_op_parallelism_threads``, which TensorFlow accepts
    only before its runtime starts, and ``TF_NUM_INTRAOP_THREADS`` for a later import). ``threads`` defaults
    to :func:`default_threads`. Returns the thread count. ::

        import segformer.common.base.threads as threads
        threads.configure_threads()          # first, before `import torch`
        import torch
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be None or a positive int, got {threads!r}")
    count = threads or default_threads()
    if "torch" not in sys.modules:  # OpenMP not loaded yet: its variables still count
        prepare_process()
    else:
        sys.modules["torch"].set_num_threads(count)
    if threads is not None:  # an explicit count wins over the environment, for later imports and children
        os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    if "tensorflow" in sys.modules:
        try:
            sys.modules["tensorflow"].config.threading.set_intra_op_parallelism_threads(count)
        except RuntimeError:  # the runtime already started: its pool keeps its size
            pass
    return count
