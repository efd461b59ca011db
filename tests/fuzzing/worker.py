"""The worker process: runs one case per request under an address-space cap and classifies its outcome.

Requests are JSON lines ``{"generator": NAME, "seed": N}`` on stdin; each answer is one JSON line
``{"outcome", "detail", "description", "refused_valid"}`` on the protocol pipe (the process's original stdout;
library output goes to stderr). The parent (``runner.py``) enforces the per-case timeout and notices signals.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import shutil
import sys
import tempfile
import traceback
import warnings
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE.parent)]  # the checkout (segformer) and tests/ (randomize)

from fuzzing.cases import Case, CliRefusal, Hang, Wrong  # noqa: E402
from segformer.common.base.errors import DOCUMENTED_ERRORS  # noqa: E402 - imported before any case is timed

MEMORY_WORDS = ("can't allocate memory", "out of memory", "cannot allocate memory", "bad_alloc", "unable to allocate",
                "failed to allocate", "memoryerror")


def case_rng(generator: str, seed: int):
    import numpy as np

    return np.random.default_rng([zlib.crc32(generator.encode()), int(seed)])


def _vm_size() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _cap_memory(cap: int) -> None:
    """Allow this process ``cap`` bytes of address space beyond what it maps now (imports, models)."""
    if cap > 0:
        resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + cap, resource.RLIM_INFINITY))


def _uncap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def _is_memory(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}".lower()
    return isinstance(err, MemoryError) or any(word in text for word in MEMORY_WORDS)


def _clear(err: BaseException, case: Case) -> str | None:
    """``None`` if ``err`` is a clear error for this case, else why not."""
    message = str(err)
    if not isinstance(err, CliRefusal) and not isinstance(err, DOCUMENTED_ERRORS + tuple(case.errors)):
        return f"{type(err).__name__} is not a documented error"
    if not message.strip():
        return f"{type(err).__name__} without a message"
    if len(message.splitlines()) > 3:
        return f"{type(err).__name__} message of {len(message.splitlines())} lines"
    if case.names and not any(name.lower() in message.lower() for name in case.names):
        return f"message names none of {list(case.names)}"
    return None


class _Records(__import__("logging").Handler):
    """Log records of level WARNING and above (transformers-style warnings go through logging)."""

    def __init__(self) -> None:
        super().__init__(level=30)
        self.messages: list[str] = []

    def emit(self, record) -> None:
        self.messages.append(record.getMessage())


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def evaluate(case: Case) -> dict:
    """Run ``case`` and classify it."""
    record = {"description": case.description, "refused_valid": False}
    import logging

    caught: list = []
    error: BaseException | None = None
    logged = _Records()
    logging.getLogger().addHandler(logged)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            answer = case.run()
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: BLE001 - every escape is classified (SystemExit included)
            error = err
        finally:
            logging.getLogger().removeHandler(logged)
    messages = [str(w.message) for w in caught] + logged.messages
    try:
        if case.after is not None:
            case.after(error)
    except Hang as hang:
        return {**record, "outcome": "hang", "detail": _short(str(hang))}
    except Wrong as wrong:
        return {**record, "outcome": "silently-wrong", "detail": _short(f"{wrong} (call ended with "
                                                                        f"{type(error).__name__ if error else 'an answer'}: {error or ''})")}
    if error is not None:
        if _is_memory(error):
            return {**record, "outcome": "memory", "detail": _short(f"{type(error).__name__}: {error}")}
        why = _clear(error, case)
        if why is None:
            return {**record, "outcome": "clear-error", "refused_valid": case.expect == "ok",
                    "detail": _short(f"{type(error).__name__}: {error}")}
        where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
        return {**record, "outcome": "raw-error", "detail": _short(f"{why}{at}: {type(error).__name__}: {error}")}
    if case.expect == "error":
        return {**record, "outcome": "silently-wrong", "detail": f"accepted an input that is invalid by construction ({', '.join(case.names[:3])})"
                + (f" (warned: {_short(messages[0], 150)})" if messages else "")}
    try:
        if case.check is not None:
            case.check(answer, messages)
    except Wrong as wrong:
        return {**record, "outcome": "silently-wrong", "detail": _short(str(wrong))}
    except Exception as err:  # noqa: BLE001 - the answer did not even have the promised form
        return {**record, "outcome": "silently-wrong", "detail": _short(f"answer unusable: {type(err).__name__}: {err}")}
    return {**record, "outcome": "ok", "detail": ""}


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library prints go to stderr
    sys.stdout = sys.stderr
    cap = int(sys.argv[1]) if len(sys.argv) > 1 else 2 << 30
    root = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="segformer-fuzz-"))
    contexts: dict[str, object] = {}
    modules: dict[str, object] = {}
    try:
        for line in sys.stdin:
            request = json.loads(line)
            name, seed = request["generator"], int(request["seed"])
            _uncap()
            if name not in modules:
                from fuzzing.generators import GENERATORS, SELFTEST

                modules[name] = importlib.import_module({**GENERATORS, **SELFTEST}[name])
                folder = root / f"setup-{name}"
                folder.mkdir()
                contexts[name] = modules[name].setup(folder)
            folder = root / f"case-{name}-{seed}"
            folder.mkdir()
            cwd = os.getcwd()
            try:
                if isinstance(contexts[name], dict):
                    contexts[name]["seed"] = seed
                case = modules[name].make_case(case_rng(name, seed), contexts[name], folder)
                protocol.write(json.dumps({"started": case.description}, default=str) + "\n")
                _cap_memory(cap)
                try:
                    record = evaluate(case)
                finally:
                    _uncap()
            except Exception as err:  # noqa: BLE001 - a generator bug: report it, do not hide it as a finding
                record = {"outcome": "harness-error", "detail": _short(traceback.format_exc(), 2000),
                          "description": {}, "refused_valid": False}
                del err
            finally:
                os.chdir(cwd)
                for path in folder.rglob("*"):  # tests make files read-only / FIFOs; rmtree must not stop there
                    try:
                        if path.is_dir() and not path.is_symlink():
                            path.chmod(0o755)
                    except OSError:
                        pass
                shutil.rmtree(folder, ignore_errors=True)
            protocol.write(json.dumps(record, default=str) + "\n")
    finally:
        unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)


def unmount_below(root: Path) -> None:
    """Unmount the file systems a generator mounted below ``root`` (deepest first)."""
    import subprocess

    prefix = os.path.realpath(root) + os.sep
    try:
        with open("/proc/mounts", encoding="utf-8") as handle:
            points = [line.split()[1] for line in handle if line.split()[1].startswith(prefix)]
    except OSError:
        return
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


if __name__ == "__main__":
    main()
