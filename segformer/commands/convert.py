"""``segformer convert SRC DST --to {pt,tf,keras-hub,mmseg}``: any supported checkpoint -> a verified Hugging Face-layout
folder, keras-hub preset or mmsegmentation checkpoint.

SRC is a folder or a file (``model.safetensors``, ``pytorch_model.bin``, sharded index, ``tf_model.h5``,
``.keras``, original NVlabs ``.pth``, encoder-only ``mit_b*.pth``, mmsegmentation ``mit.py`` ``.pth`` or a
keras-hub preset folder), its kind detected from the content (the list: ``SOURCE_FORMATS``, printed by ``--help``). Exit status 0 when written, 1 when the verification refused (max |diff| printed) or
the file system failed (disk full, read-only destination: one ``error:`` line naming the path; the
destination keeps its old content), 2 for bad input (the message names it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]


def _heads(text: str) -> list[int]:
    try:
        heads = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,5,8, got {text!r}") from None
    if not heads or min(heads) < 1:
        raise argparse.ArgumentTypeError(f"head counts must be positive integers, got {text!r}")
    return heads


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..conversion.report import TARGETS, formats_text

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = formats_text()
    parser.add_argument("src", metavar="SRC", help="source folder or checkpoint file (kind detected from its content)")
    parser.add_argument("dst", metavar="DST", help="destination folder (Hugging Face layout); must not exist unless --overwrite")
    parser.add_argument("--to", choices=TARGETS, required=True,
                        help="framework of the destination folder, keras-hub (a keras-hub preset) or mmseg (DST is an "
                             "mmsegmentation 1.x .pth file)")
    parser.add_argument("--from", dest="source_framework", choices=("pt", "tf"), default=None,
                        help="which weights of a folder holding both to read (default: the other framework's)")
    parser.add_argument("--num-heads", type=_heads, default=None, metavar="H1,H2,...",
                        help="attention heads per stage, for sources without config.json (default: meta config or MiT 1,2,5,8)")
    parser.add_argument("--num-labels", type=int, default=None, help="number of classes (must equal the checkpoint's head)")
    parser.add_argument("--labels", default=None, metavar="ade20k|cityscapes|FILE.json", help="class names")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted max |diff| (default 1e-4)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip running the models (the written tensors are still checked bit for bit)")
    parser.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="--to keras-hub: the preset's square input size (default: the source's square "
                             "processor size, else 512)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..common.base.atomic import describe_os_error
    from ..common.base.errors import DOCUMENTED_ERRORS, WriteError
    from ..conversion import VerificationError, convert
    from ..conversion.report import KERAS_HUB
    from .shared import show_progress

    def finish(folder: Path, report: Any) -> None:  # the processor config and model card, inside the same atomic write
        if args.to in (KERAS_HUB, "mmseg"):
            return
        from ..common.checkpoints.model_card import write_inference_files

        write_inference_files(
            folder, report.config, keep_processor=True, framework=args.to, base_model=str(args.src),
            how=f"Converted with `segformer convert` from {args.src} ({report.source_kind}); "
                + (f"verified against the {report.reference_framework} model (max |diff| {report.max_abs_diff:.2e})."
                   if args.verify else "tensors checked bit for bit, models not run (--no-verify)."),
        )

    try:
        report = convert(
            args.src,
            args.dst,
            to=args.to,
            num_heads=args.num_heads,
            num_labels=args.num_labels,
            labels=args.labels,
            tolerance=args.tolerance,
            overwrite=args.overwrite,
            source_framework=args.source_framework,
            verify=args.verify,
            progress=show_progress(args.quiet),
            image_size=args.image_size,
            finish=finish,
        )
    except VerificationError as err:
        print(str(err.report), file=sys.stderr)
        print(f"error: {err.args[0].splitlines()[0]}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, read-only destination, a parent that is a file ...
        if isinstance(err, DOCUMENTED_ERRORS):
            raise
        raise WriteError(f"{describe_os_error(err, args.dst)}; the destination was not changed") from None
    print(report)
    return 0
