"""The thread policy (segformer.common.base.threads): CPUs from the affinity mask and the cgroup quota (fake cgroup
trees), environment variables the user set are kept, and the command line puts the policy into the
environment before torch is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segformer.common.base.threads import (
    available_cpus,
    cgroup_cpu_limit,
    configure_threads,
    default_threads,
    prepare_process,
    thread_environment,
)

ROOT = Path(__file__).resolve().parents[1]
POLICY_VARIABLES = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT",
                    "SEGFORMER_THREAD_POLICY")


def _tree(tmp_path: Path, files: dict[str, str], proc: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    proc_file = tmp_path / "proc_self_cgroup"
    proc_file.write_text(proc)
    return root, proc_file


def test_cgroup_v2_quota_of_the_own_cgroup_and_its_parents(tmp_path):
    root, proc = _tree(tmp_path, {"cpu.max": "max 100000"}, "0::/\n")
    assert cgroup_cpu_limit(root, proc) is None  # "max": no limit
    assert available_cpus({0, 1, 2, 3}, root, proc) == 4
    root, proc = _tree(tmp_path, {"cpu.max": "150000 100000"}, "0::/\n")
    assert cgroup_cpu_limit(root, proc) == 1.5
    assert available_cpus({0, 1, 2, 3}, root, proc) == 1  # 1.5 CPUs: 1 thread
    # nested: the pod's limit (3 CPUs) is above the container's own cgroup (no limit); the smallest wins
    root, proc = _tree(tmp_path / "nested", {"kubepods/cpu.max": "300000 100000", "kubepods/pod/cpu.max": "max 100000",
                                             "cpu.max": "max 100000"}, "0::/kubepods/pod\n")
    assert cgroup_cpu_limit(root, proc) == 3.0
    assert available_cpus(set(range(16)), root, proc) == 3
    assert available_cpus({5, 6}, root, proc) == 2  # the affinity mask is smaller still
    root, proc = _tree(tmp_path / "small", {"cpu.max": "20000 100000"}, "0::/\n")
    assert available_cpus({0, 1}, root, proc) == 1  # under one CPU: still 1 thread


def test_cgroup_v1_cfs_quota(tmp_path):
    v1 = "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n"
    root, proc = _tree(tmp_path, {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000",
                                  "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"}, v1)
    assert cgroup_cpu_limit(root, proc) == 2.5
    assert available_cpus(set(range(8)), root, proc) == 2
    # a container sees its own cgroup at the mount's root; -1 means no limit
    root, proc = _tree(tmp_path / "flat", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"},
                       "1:cpu:/\n")
    assert cgroup_cpu_limit(root, proc) is None
    root, proc = _tree(tmp_path / "flat2", {"cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000"},
                       "1:cpu:/\n")
    assert available_cpus({0, 1, 2}, root, proc) == 1


def test_unreadable_or_malformed_cgroup_files_mean_no_limit(tmp_path):
    for text in ("", "garbage", "100000", "abc 100000", "0 100000", "100000 0"):
        root, proc = _tree(tmp_path / str(abs(hash(text))), {"cpu.max": text}, "0::/\n")
        assert cgroup_cpu_limit(root, proc) is None, text
    assert cgroup_cpu_limit(tmp_path / "missing", tmp_path / "missing_proc") is None
    assert available_cpus({0, 1, 2}, tmp_path / "missing", tmp_path / "missing_proc") == 3


def test_this_process_counts_its_own_affinity():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no sched_getaffinity on this platform")
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_default_threads_and_the_environment_the_user_set(tmp_path):
    root, proc = _tree(tmp_path, {"cpu.max": "200000 100000"}, "0::/\n")
    cpus = {"affinity": set(range(8)), "cgroup_root": root, "proc_cgroup": proc}
    assert default_threads({}, **cpus) == 2
    assert default_threads({"OMP_NUM_THREADS": "5"}, **cpus) == 5  # the user's count wins
    assert default_threads({"OMP_NUM_THREADS": "3,1"}, **cpus) == 3  # OpenMP's nested form
    for bad in ("abc", "0", "-2"):
        with pytest.raises(ValueError, match=rf"OMP_NUM_THREADS must be a positive integer, got '{bad}'"):
            default_threads({"OMP_NUM_THREADS": bad}, **cpus)
    assert thread_environment({}, **cpus) == {"OMP_NUM_THREADS": "2", "TF_NUM_INTRAOP_THREADS": "2",
                                              "GOMP_SPINCOUNT": "100000", "KMP_BLOCKTIME": "1"}
    user = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": "200"}
    assert thread_environment(user, **cpus) == {"TF_NUM_INTRAOP_THREADS": "1"}  # TF follows the user's count
    assert thread_environment({"GOMP_SPINCOUNT": "10000"}, **cpus) == {
        "OMP_NUM_THREADS": "2", "TF_NUM_INTRAOP_THREADS": "2", "KMP_BLOCKTIME": "1"}  # the user's spin count stays
    assert thread_environment({"SEGFORMER_THREAD_POLICY": "0"}, **cpus) == {}  # opted out
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    added = prepare_process(environ)
    assert environ["OMP_WAIT_POLICY"] == "ACTIVE" and "OMP_WAIT_POLICY" not in added
    assert environ["OMP_NUM_THREADS"] == added["OMP_NUM_THREADS"] == str(available_cpus())


def test_configure_threads_sets_the_imported_frameworks(monkeypatch):
    torch = pytest.importorskip("torch")
    for name in POLICY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == os.environ["TF_NUM_INTRAOP_THREADS"] == "1"  # for children
        with pytest.raises(ValueError, match="threads must be None or a positive int, got 0"):
            configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_cli_sets_the_policy_before_torch_is_imported():
    """A subprocess records the environment at the moment ``import torch`` starts (an import hook) while
    ``segformer info`` runs; the user's own OMP_WAIT_POLICY is kept, and ``--threads N`` sets both frameworks'
    counts."""
    pytest.importorskip("torch")
    code = """if True:
        import json, os, sys
        seen = {}
        class Spy:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" and not seen:
                    seen.update({k: os.environ.get(k) for k in %r})
                return None
        sys.meta_path.insert(0, Spy())
        from segformer.cli import main
        code = main(["info", "--model", "tiny", "--size", "64"] + json.loads(os.environ["EXTRA_ARGS"]))
        import torch
        from segformer.common.base.threads import available_cpus
        print(json.dumps({"code": code, "seen": seen, "torch_threads": torch.get_num_threads(),
                          "available": available_cpus()}))
    """ % (POLICY_VARIABLES,)
    for user, extra in (({}, []), ({"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1"}, []), ({}, ["--threads", "1"])):
        env = {k: v for k, v in os.environ.items() if k not in POLICY_VARIABLES}
        env.update(user, PYTHONPATH=str(ROOT), EXTRA_ARGS=json.dumps(extra))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert out["code"] == 0
        seen = out["seen"]
        expected = "1" if extra else user.get("OMP_NUM_THREADS", str(out["available"]))  # --threads wins
        assert seen["OMP_NUM_THREADS"] == seen["TF_NUM_INTRAOP_THREADS"] == expected
        assert seen["OMP_WAIT_POLICY"] == user.get("OMP_WAIT_POLICY")  # never set by the policy
        assert seen["GOMP_SPINCOUNT"] == (None if user else "100000")  # not next to the user's wait policy
        assert seen["KMP_BLOCKTIME"] == "1"
        assert out["torch_threads"] == int(expected)


def test_cli_reports_a_bad_omp_num_threads():
    env = {k: v for k, v in os.environ.items() if k not in POLICY_VARIABLES}
    env.update(OMP_NUM_THREADS="many", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "segformer", "presets"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 2
    assert "error: the environment variable OMP_NUM_THREADS must be a positive integer, got 'many'" in done.stderr
    assert "Traceback" not in done.stderr



def _fake_proc(tmp_path: Path, loadavg: str, states: list[str]) -> tuple[Path, Path]:
    (tmp_path / "task").mkdir(parents=True)
    (tmp_path / "loadavg").write_text(loadavg + "\n")
    for index, state in enumerate(states):
        folder = tmp_path / "task" / str(100 + index)
        folder.mkdir(parents=True)
        folder.joinpath("stat").write_text(f"{100 + index} (py (thread) x) {state} 1 2 3 4\n")  # ")" in the name
    return tmp_path / "loadavg", tmp_path / "task"


def test_runnable_elsewhere_subtracts_our_own_running_threads(tmp_path):
    from segformer.common.base.threads import runnable_elsewhere

    load, tasks = _fake_proc(tmp_path / "a", "0.50 0.40 0.30 4/210 999", ["R", "R", "S", "S"])
    assert runnable_elsewhere(load, tasks) == 2  # 4 runnable, 2 of them ours
    load, tasks = _fake_proc(tmp_path / "b", "0.50 0.40 0.30 3/210 999", ["S", "S"])
    assert runnable_elsewhere(load, tasks) == 2  # the caller counts as ours even if /proc saw it waiting
    load, tasks = _fake_proc(tmp_path / "c", "0.50 0.40 0.30 1/210 999", ["R", "S"])
    assert runnable_elsewhere(load, tasks) == 0  # only the caller
    load, tasks = _fake_proc(tmp_path / "d", "0.50 0.40 0.30 2/210 999", ["R", "R", "R"])
    assert runnable_elsewhere(load, tasks) == 0  # never negative
    for bad in ("", "garbage", "0.1 0.2 0.3 x/1 5"):
        load, tasks = _fake_proc(tmp_path / f"bad{len(bad)}", bad, [])
        assert runnable_elsewhere(load, tasks) is None
    assert runnable_elsewhere(tmp_path / "missing", tasks) is None


def test_threads_for_now_and_steady_sampling(monkeypatch):
    import segformer.common.base.threads as threads

    monkeypatch.setattr(threads, "pinned_to_some_cpus", lambda: False)
    assert threads.threads_for_now(2, cpus=2, elsewhere=0) == 2
    assert threads.threads_for_now(2, cpus=2, elsewhere=1) == 1  # one core taken: one thread
    assert threads.threads_for_now(2, cpus=2, elsewhere=5) == 1  # at least one
    assert threads.threads_for_now(8, cpus=16, elsewhere=10) == 6
    assert threads.threads_for_now(2, cpus=64, elsewhere=30) == 2  # other tasks, but CPUs to spare
    # pinned to some CPUs: the machine-wide count says nothing about ours, so the limit
    assert threads.threads_for_now(2, cpus=64, elsewhere=70, pinned=True) == 2
    assert threads.threads_for_now(2, cpus=64, elsewhere=70, pinned=False) == 1
    samples = iter([None])
    monkeypatch.setattr(threads, "runnable_elsewhere", lambda: next(samples))
    assert threads.threads_for_now(4) == 4  # /proc cannot tell: the limit
    monkeypatch.setattr(threads, "_LAST_ELSEWHERE", [None])
    samples = iter([3, 1, 2, 0, 5])
    assert threads.steady_elsewhere() == 3  # first call: the sample now
    threads.record_elsewhere()  # 1 at the end of the call
    assert threads.steady_elsewhere() == 1  # min(2 now, 1 at the last end)
    threads.record_elsewhere()  # 0
    assert threads.steady_elsewhere() == 0  # a task seen only now (5) is not steady


def test_pinned_to_some_cpus_compares_the_affinity_mask_with_the_machine(monkeypatch):
    import segformer.common.base.threads as threads

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5}, raising=False)
    assert threads.pinned_to_some_cpus()
    monkeypatch.setattr(threads, "steady_elsewhere", lambda: 63)  # a busy host; our two CPUs may be free
    assert threads.threads_for_now(2) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert not threads.pinned_to_some_cpus()
    assert threads.threads_for_now(2) == 1  # every CPU of the machine is ours: 63 tasks leave one

    def unsupported(pid):
        raise OSError("no affinity here")

    monkeypatch.setattr(os, "sched_getaffinity", unsupported, raising=False)
    assert not threads.pinned_to_some_cpus()


def test_adapted_threads_lowers_torch_threads_for_the_block_only(monkeypatch):
    torch = pytest.importorskip("torch")
    import segformer.common.base.threads as threads
    from segformer.pt.backend import adapted_threads

    cpus = os.cpu_count() or 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(threads, "runnable_elsewhere", lambda: cpus - 1)  # every CPU but one is taken
        monkeypatch.setattr(threads, "_LAST_ELSEWHERE", [None])
        monkeypatch.setattr(threads, "pinned_to_some_cpus", lambda: False)  # the loadavg rule, wherever this runs
        with adapted_threads() as count:
            assert count == torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2  # restored
        monkeypatch.setenv("SEGFORMER_THREAD_POLICY", "0")  # opted out: untouched
        with adapted_threads() as count:
            assert count == torch.get_num_threads() == 2
        monkeypatch.delenv("SEGFORMER_THREAD_POLICY")
        monkeypatch.setattr(threads, "runnable_elsewhere", lambda: 0)  # quiet machine
        with adapted_threads() as count:
            assert count == torch.get_num_threads() == min(2, cpus)
    finally:
        torch.set_num_threads(before)


def test_runnable_elsewhere_sees_a_real_busy_process():
    """On the real /proc: a busy-loop child process is counted as runnable elsewhere."""
    import time

    from segformer.common.base.threads import runnable_elsewhere

    if runnable_elsewhere() is None:
        pytest.skip("no /proc/loadavg on this platform (not Linux)")
    child = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)
        seen = [runnable_elsewhere() for _ in range(40) if not time.sleep(0.01)]
    finally:
        child.kill()
        child.wait()
    assert max(seen) >= 1 and sorted(seen)[len(seen) // 2] >= 1, seen  # the child is runnable in most samples
