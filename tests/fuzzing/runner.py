"""Drive the worker process: one case at a time, a timeout per case, a fresh worker after a hang or a crash.

Outcomes (``OUTCOMES``): ``ok`` (an answer that passes the generator's oracle), ``clear-error`` (a documented
error / one ``error:`` line naming the argument), ``raw-error`` (any other exception or traceback),
``silently-wrong`` (an answer the oracle rejects, or an invalid input accepted), ``hang`` (past the timeout),
``memory`` (the address-space cap was hit), ``crash`` (the worker died, e.g. by a signal), and
``harness-error`` (a bug in a generator, not a finding).
"""

from __future__ import annotations

import collections
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable

OUTCOMES = ("ok", "clear-error", "raw-error", "silently-wrong", "hang", "memory", "crash", "harness-error")
BAD = ("raw-error", "silently-wrong", "hang", "memory", "crash", "harness-error")
WORKER = Path(__file__).resolve().parent / "worker.py"
SETUP_SECONDS = 600  # importing the frameworks and building a generator's models (not part of a case's time)


class Worker:
    """One worker process (started on first use, restarted after it is killed or dies)."""

    def __init__(self, memory_cap: int, log: Path | None = None) -> None:
        self.memory_cap = memory_cap
        self.log = log
        self.process: subprocess.Popen | None = None
        self.pending = b""

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), MALLOC_ARENA_MAX="2",
                   TF_CPP_MIN_LOG_LEVEL="3", USE_TF="0", PYTHONDONTWRITEBYTECODE="1")
        env.pop("SEGFORMER_TRACEBACK", None)
        stderr = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.root = tempfile.mkdtemp(prefix="segformer-fuzz-")
        self.pending = b""
        return subprocess.Popen([sys.executable, str(WORKER), str(self.memory_cap), self.root], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr, env=env, start_new_session=True)

    def run(self, generator: str, seed: int, timeout: float) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        process = self.process
        process.stdin.write((json.dumps({"generator": generator, "seed": seed}) + "\n").encode())
        process.stdin.flush()
        deadline = time.monotonic() + SETUP_SECONDS  # the generator's setup and the case's making come first
        description: dict = {}
        while True:  # a {"started": description} line, then the record
            line = self._readline(deadline)
            if line is None:
                self.stop()
                detail = f"no answer within {timeout:g} s" if description else f"setup took over {SETUP_SECONDS} s"
                return {"outcome": "hang" if description else "harness-error", "detail": detail,
                        "description": description}
            if not line:
                code = process.wait()
                self.stop()
                why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"worker exited with status {code}"
                return {"outcome": "crash", "detail": why, "description": description}
            message = json.loads(line)
            if "started" not in message:
                return message
            deadline = time.monotonic() + timeout  # the case itself
            description = message["started"]

    def _readline(self, deadline: float) -> bytes | None:
        """One line from the worker (``b""`` at its end, ``None`` past ``deadline``), read without Python's
        buffering: two lines arriving together must not leave the second unseen by ``select``."""
        fd = self.process.stdout.fileno()
        while b"\n" not in self.pending:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line + b"\n"

    def stop(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
            self.process = None
            from fuzzing.worker import unmount_below

            unmount_below(Path(self.root))  # what a killed worker left mounted
            shutil.rmtree(self.root, ignore_errors=True)


def run_generators(names: Iterable[str], examples: int, timeout: float = 60.0, memory_cap: int = 2 << 30,
                   start: int = 0, log: Path | None = None, progress: bool = False, jobs: int = 1) -> dict:
    """``{"counts": {generator: {outcome: n}}, "examples": {generator: {outcome: [records]}}, ...}``; ``jobs``
    generators run side by side, each in its own worker."""
    from concurrent.futures import ThreadPoolExecutor

    import threading

    names = list(names)
    local = threading.local()
    workers: list[Worker] = []

    def one(name: str) -> tuple:
        if not hasattr(local, "worker"):  # one worker per thread, reused across its generators (imports once)
            local.worker = Worker(memory_cap, log)
            workers.append(local.worker)
        worker = local.worker
        counts: collections.Counter = collections.Counter()
        kinds: collections.Counter = collections.Counter()  # (outcome, message with numbers and paths masked)
        found_by: dict[str, list] = {}
        refused = 0
        began = time.monotonic()
        try:
            for seed in range(start, start + examples):
                record = worker.run(name, seed, timeout)
                outcome = record["outcome"]
                counts[outcome] += 1
                refused += bool(record.get("refused_valid"))
                if outcome != "ok":
                    kinds[f"{outcome}: {_mask(record.get('detail', ''))}"] += 1
                key = "clear-error (valid input refused)" if record.get("refused_valid") else outcome
                found = found_by.setdefault(key, []) if outcome != "ok" else None
                if found is not None and len(found) < 3 and all(f["detail"][:50] != record["detail"][:50] for f in found):
                    found.append({"seed": seed, **record})  # up to three examples with different details
                if progress:
                    print(f"{name}: {seed - start + 1}/{examples} {dict(counts)}", file=sys.stderr, flush=True)
        except BaseException:
            worker.stop()
            raise
        return name, dict(counts), found_by, refused, round(time.monotonic() - began, 1), dict(kinds.most_common())

    try:
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            results = list(pool.map(one, names))
    finally:
        for worker in workers:
            worker.stop()
    return {"counts": {r[0]: r[1] for r in results}, "examples": {r[0]: r[2] for r in results},
            "refused_valid": {r[0]: r[3] for r in results}, "seconds": {r[0]: r[4] for r in results},
            "kinds": {r[0]: r[5] for r in results},
            "settings": {"examples": examples, "start": start, "timeout_s": timeout, "memory_cap_bytes": memory_cap}}


def _mask(detail: str) -> str:
    """A finding's message with paths, numbers and quoted values masked, so equal causes count together."""
    import re

    text = re.sub(r"(/[^\s'\"]+)+", "PATH", detail)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'V'", text)
    text = re.sub(r"\[[^\]]*\]", "[...]", text)
    text = re.sub(r"(?<![\w.])-?\d+(\.\d+)?(e[-+]?\d+)?\b", "N", text)
    return text[:110]


def markdown(report: dict) -> str:
    """The report as a table (generator x outcome) and up to three examples (different messages) per outcome other than ok."""
    settings = report["settings"]
    lines = [f"# Fuzzing report\n",
             f"{settings['examples']} examples per generator (seeds {settings['start']}..{settings['start'] + settings['examples'] - 1}), "
             f"timeout {settings['timeout_s']:g} s per case, address space capped at "
             f"{settings['memory_cap_bytes'] / 2**30:g} GiB above the worker's start.\n",
             "| generator | " + " | ".join(OUTCOMES) + " | valid refused | seconds |",
             "|---|" + "---:|" * (len(OUTCOMES) + 2)]
    for name, counts in report["counts"].items():
        cells = [str(counts.get(o, 0)) for o in OUTCOMES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {report['refused_valid'][name]} | {report['seconds'].get(name, '')} |")
    lines.append("\n## Findings by cause (messages with paths and numbers masked; clear errors left out)\n")
    for name, kinds in report.get("kinds", {}).items():
        for kind, count in kinds.items():
            if not kind.startswith("clear-error"):
                lines.append(f"- {name}: {count} x {kind}")
    lines.append("\n## Examples of each outcome other than ok (up to three with different messages)\n")
    lines.append("Reproduce one with `python tests/fuzzing/run.py --generator NAME --seed SEED`.\n")
    for name, found in report["examples"].items():
        for outcome, record in ((o, r) for o, records in sorted(found.items()) for r in records):
            description = json.dumps(record.get("description", {}), default=str)
            if len(description) > 300:
                description = description[:297] + "..."
            lines.append(f"- **{name}** `{outcome}` seed {record['seed']}: {record.get('detail', '')}  \n  case: `{description}`")
    return "\n".join(lines) + "\n"
