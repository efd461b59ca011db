"""The ``segformer`` command line: ``segformer {info,demo,convert,predict,eval,train,export,bench,presets} ...``.

Before anything else, :func:`segformer.common.base.threads.prepare_process` puts the thread policy into the
environment (thread counts from the CPUs this process may use, a bounded OpenMP spin; variables the user set
are kept), so torch and TensorFlow, imported later by the command or by its child processes, start with it.
Every command except ``bench`` (which has its own, per worker) takes ``--threads N``, applied after parsing and
still before any framework is imported.

Each sub-command lives in ``segformer/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; it is imported only when used, so ``segformer --help`` imports no framework.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import sys
from typing import Iterator

__all__ = ["main", "COMMANDS", "quiet_frameworks"]

COMMANDS = {
    "info": "Build a model, run it on the bundled sample image, print what it found",
    "demo": "PT model -> convert to TF -> run both on the sample image; parity table and mask PNGs",
    "convert": "Convert a checkpoint (HF folder, original .pth, mmsegmentation .pth, .keras, keras-hub preset) to a PT or "
               "TF Hugging Face folder, a keras-hub preset or an mmsegmentation checkpoint, verified",
    "predict": "Segment images and write label PNGs and overlays",
    "eval": "mIoU of a model on a dataset folder",
    "train": "Fine-tune on a dataset folder (original recipe)",
    "export": "Write ONNX / SavedModel / TFLite deployment files, float32 or int8 / float16, with an agreement check",
    "bench": "Benchmarks: latency / memory against the reference implementations (also under CPU contention), scale, int8",
    "presets": "List the published checkpoints that short names such as b0-ade stand for",
}


THREADS_HELP = ("intra-op threads of PyTorch and TensorFlow (default: the CPUs this process may use; "
                "OMP_NUM_THREADS when set). 1 is faster for TensorFlow on inputs under about 300x300")


def _available() -> dict[str, str]:
    return {name: text for name, text in COMMANDS.items() if importlib.util.find_spec(f"segformer.commands.{name}")}


def main(argv: list[str] | None = None) -> int:
    from . import __version__
    from .common.base.threads import prepare_process

    try:
        prepare_process()  # thread counts and OpenMP waiting, before any command imports a framework
    except ValueError as err:  # OMP_NUM_THREADS that is no positive integer
        print(f"error: {err}", file=sys.stderr)
        return 2

    parser = argparse.ArgumentParser(prog="segformer", description="SegFormer in PyTorch and Keras 3")
    parser.add_argument("--version", action="version", version=f"segformer {__version__}")
    verbose_help = "show framework start-up logs and full warnings (default: one line per warning)"
    parser.add_argument("--verbose", "-v", action="store_true", help=verbose_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    available = _available()
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((item for item in argv if not item.startswith("-")), None)
    for name, text in available.items():
        command_parser = sub.add_parser(name, help=text, description=text)
        # also after the command (`segformer train --verbose ...`); SUPPRESS keeps `segformer -v train` as given
        command_parser.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
        if chosen == name:  # import only the module that runs
            importlib.import_module(f"segformer.commands.{name}").add_arguments(command_parser)
        if "--threads" not in command_parser._option_string_actions:  # bench has its own (per worker)
            command_parser.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command != "bench" and args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads must be a positive integer, got {args.threads}", file=sys.stderr)
            return 2
        from .common.base.threads import configure_threads

        configure_threads(args.threads)  # before the command imports a framework: both read it when they start
    module = importlib.import_module(f"segformer.commands.{args.command}")
    try:
        with quiet_frameworks(args.verbose):
            return int(module.run(args) or 0)
    except KeyboardInterrupt as err:  # training saves its state first and says so in the message
        print(f"interrupted: {err}" if str(err) else "interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early (`segformer presets | head`)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 141
    except Exception as err:  # the one error boundary of every command
        import os

        failure = error_line(err, args)
        if failure is None or os.environ.get("SEGFORMER_TRACEBACK"):
            raise
        message, status = failure
        print(f"error: {message}", file=sys.stderr)
        return status


def error_line(err: BaseException, args: argparse.Namespace) -> tuple[str, int] | None:
    """``(message, exit status)`` of an error a command reports as one line, ``None`` for a bug (traceback).

    Bad input (a documented error, or a missing key) -> 2; an environment fault while writing (disk full,
    read-only destination, a parent that is a file) -> 2, naming the destination; a training step that
    produced NaN / Inf -> 1 (a check failed).
    """
    from .common.base.atomic import describe_os_error
    from .common.base.errors import DOCUMENTED_ERRORS, WriteError

    if isinstance(err, WriteError):
        return str(err), 2
    if isinstance(err, DOCUMENTED_ERRORS) or isinstance(err, KeyError):
        return (str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)), 2
    if isinstance(err, FloatingPointError):
        return str(err), 1
    if isinstance(err, OSError):
        target = getattr(args, "out", None) or getattr(args, "dst", None) or err.filename or "the output"
        return f"{describe_os_error(err, target)}; files already there were left as they were", 2
    return None


@contextlib.contextmanager
def quiet_frameworks(verbose: bool) -> Iterator[None]:
    """While a command runs: no TensorFlow native log lines (TF_CPP_MIN_LOG_LEVEL=3 unless set: also the "E0000
    ... oneDNN supports DT_BOOL only ..." kind, while failures still arrive as Python exceptions; and
    TensorFlow imported with the native stderr silenced), no absl / TensorFlow Python log records below
    ERROR, no native TFLite notices (``deps.native_noise_silenced``), and warnings as one line
    ``warning: <category>: <message>`` (no file and line). ``verbose`` keeps the frameworks' defaults."""
    import logging
    import os
    import warnings

    from .common.base import deps

    if verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # errors too: TensorFlow raises the ones that matter

    def one_line(message, category, filename, lineno, line=None):  # type: ignore[no-untyped-def]
        text = " ".join(str(message).split())
        return f"warning: {category.__name__}: {text}\n"

    loggers = [logging.getLogger(name) for name in ("absl", "tensorflow")]  # "WARNING:absl:..." lines
    saved = warnings.formatwarning, deps.QUIET_IMPORTS, [logger.level for logger in loggers]
    warnings.formatwarning, deps.QUIET_IMPORTS = one_line, True
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        warnings.formatwarning, deps.QUIET_IMPORTS = saved[:2]
        for logger, level in zip(loggers, saved[2]):
            logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
