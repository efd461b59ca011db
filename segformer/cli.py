"""The ``segformer`` command line: ``segformer {info,demo,convert,predict,eval,train,bench} ...``.

Each sub-command lives in ``segformer/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; it is imported only when used, so ``segformer --help`` imports no framework.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

__all__ = ["main", "COMMANDS", "quiet_frameworks"]

COMMANDS = {
    "info": "Build a model, run it on the bundled sample image, print what it found",
    "demo": "PT model -> convert to TF -> run both on the sample image; parity table and mask PNGs",
    "convert": "Convert a checkpoint (HF folder, original .pth, .keras) to a PT or TF Hugging Face folder, verified",
    "predict": "Segment images and write label PNGs and overlays",
    "eval": "mIoU of a model on a dataset folder",
    "train": "Fine-tune on a dataset folder (original recipe)",
    "bench": "Latency / memory benchmark against the reference implementations",
}


def _available() -> dict[str, str]:
    return {name: text for name, text in COMMANDS.items() if importlib.util.find_spec(f"segformer.commands.{name}")}


def main(argv: list[str] | None = None) -> int:
    from . import __version__

    parser = argparse.ArgumentParser(prog="segformer", description="SegFormer in PyTorch and Keras 3")
    parser.add_argument("--version", action="version", version=f"segformer {__version__}")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="show framework start-up logs and full warnings (default: one line per warning)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    available = _available()
    argv = list(sys.argv[1:] if argv is None else argv)
    for name, text in available.items():
        command_parser = sub.add_parser(name, help=text, description=text)
        if argv[:1] == [name]:  # import only the module that runs
            importlib.import_module(f"segformer.commands.{name}").add_arguments(command_parser)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    quiet_frameworks(args.verbose)
    module = importlib.import_module(f"segformer.commands.{args.command}")
    from .common.errors import DOCUMENTED_ERRORS

    try:
        return int(module.run(args) or 0)
    except DOCUMENTED_ERRORS as err:  # bad input: a message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def quiet_frameworks(verbose: bool) -> None:
    """Before any framework is imported: no TensorFlow start-up log lines (TF_CPP_MIN_LOG_LEVEL=2, and
    TensorFlow imported with the native stderr silenced) and warnings as one line
    ``warning: <category>: <message>`` (no file and line). ``verbose`` keeps the frameworks' defaults."""
    import os
    import warnings

    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .common import deps

    deps.QUIET_IMPORTS = True

    def one_line(message, category, filename, lineno, line=None):  # type: ignore[no-untyped-def]
        text = " ".join(str(message).split())
        return f"warning: {category.__name__}: {text}\n"

    warnings.formatwarning = one_line


if __name__ == "__main__":
    sys.exit(main())
