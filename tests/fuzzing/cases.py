"""What a generator hands the worker: one :class:`Case` per seed, and the helpers its oracles use.

A case runs one call into the library and says what must come of it: ``expect="ok"`` (a valid input, by
construction: the answer must pass ``check``), ``"error"`` (invalid by construction: only a clear error is
right) or ``"either"`` (a clear error or an answer that passes ``check``). A clear error is one of the
documented error types (or, for writers, an ``OSError``), with a message of at most three lines that names
one of ``names`` (the argument, option or file it is about).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from typing import Any, Callable, Sequence


class Wrong(AssertionError):
    """The oracle rejected an answer."""


class Hang(Wrong):
    """The call blocked until the generator itself unblocked it (a FIFO opened by a helper thread)."""


class CliRefusal(Exception):
    """A command exited with status 2 and an ``error:`` line (the command line's clear error)."""


@dataclasses.dataclass
class Case:
    description: dict[str, Any]
    run: Callable[[], Any]
    expect: str = "either"  # "ok" | "error" | "either"
    names: Sequence[str] = ()
    check: Callable[[Any, list], None] | None = None  # (answer, warnings caught) -> None or raise Wrong
    errors: tuple[type[BaseException], ...] = ()  # extra types that count as clear (writers: OSError)
    after: Callable[[BaseException | None], None] | None = None  # runs after run() either way (files intact, ...)


def require(condition: Any, message: str) -> None:
    if not condition:
        raise Wrong(message)


def cli(argv: list[str]) -> tuple[int, str, str]:
    """``segformer ARGV`` in this process: ``(status, stdout, stderr)``; status 2 with one ``error:`` line raises
    :class:`CliRefusal`, a traceback (an exception escaping ``main``) propagates as it is."""
    from segformer.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exit_:  # argparse: usage + "segformer ...: error: ..." and status 2
            status = exit_.code if isinstance(exit_.code, int) else 1
            if status == 2:
                raise CliRefusal(err.getvalue().strip().splitlines()[-1]) from None
            raise
    errors = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
    if status == 2 and len(errors) == 1 and "Traceback" not in err.getvalue():
        raise CliRefusal(errors[0])
    return status, out.getvalue(), err.getvalue()
