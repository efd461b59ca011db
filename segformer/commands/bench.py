"""``segformer bench``: latency / peak-memory benchmark against the reference implementations.

The work is done by :mod:`segformer.benchmark` (one fresh worker process per configuration, repeats
alternating between implementations); this module parses the options and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..common.base.atomic import atomic_write_text

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..benchmark import IMPLEMENTATIONS
    from ..common.model.variants import variant_names

    parser.add_argument("--variants", default="b0,b2", help=f"comma-separated: {', '.join(variant_names())} (default b0,b2)")
    parser.add_argument("--sizes", default="512x512", help="comma-separated HEIGHTxWIDTH (default 512x512)")
    parser.add_argument(
        "--pairs",
        default=None,
        help="explicit variant@HxW list instead of the variants x sizes product, e.g. b0@512x512,b2@512x512,b0@1024x2048",
    )
    parser.add_argument("--frameworks", default="pt,tf", help="comma-separated: pt, tf (default both)")
    parser.add_argument("--impls", default=None, help=f"comma-separated subset of {','.join(IMPLEMENTATIONS)}")
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per implementation (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes first (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the framework's)")
    parser.add_argument("--batch", type=int, default=1, help="images per pass (default 1; training steps: 8)")
    parser.add_argument(
        "--train",
        action="store_true",
        help="time training steps (forward + loss + backward + AdamW): impls pt-train, hf-pt-train, tf-train",
    )
    parser.add_argument("--num-labels", type=int, default=150, help="classes of the decode head (default 150)")
    parser.add_argument("--hf-python", default=None, help="interpreter with transformers 5.x (PyTorch reference)")
    parser.add_argument("--hf-tf-python", default=None, help="interpreter with transformers 4.x + tf-keras (TF reference)")
    parser.add_argument("--json", default=None, help="also write the full report (all times) to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="print only the table")


def _pairs(text: str) -> list[tuple[str, tuple[int, int]]]:
    from ..benchmark import parse_list
    from ..common.base.sizes import parse_size

    pairs = []
    for item in parse_list("pairs", text):
        if "@" not in item:
            raise ValueError(f"pairs: {item!r} is not VARIANT@HEIGHTxWIDTH (e.g. b0@512x512)")
        variant, size = item.split("@", 1)
        pairs.append((variant, parse_size(size, f"pairs: {item!r}")))
    return pairs


def run(args: argparse.Namespace) -> int:
    from ..benchmark import FRAMEWORKS, IMPLEMENTATIONS, format_table, parse_list, parse_sizes, run_benchmark

    try:
        report = run_benchmark(
            variants=parse_list("variants", args.variants),
            sizes=parse_sizes(args.sizes),
            pairs=_pairs(args.pairs) if args.pairs else None,
            frameworks=parse_list("frameworks", args.frameworks, FRAMEWORKS),
            impls=parse_list("impls", args.impls, list(IMPLEMENTATIONS)) if args.impls else None,
            repeats=args.repeats,
            warmup=args.warmup,
            threads=args.threads,
            num_labels=args.num_labels,
            batch=args.batch,
            train=args.train,
            hf_python=args.hf_python,
            hf_tf_python=args.hf_tf_python,
            log=None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True)),
        )
    except ValueError as err:
        print(f"segformer bench: {err}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    errors = [r for r in report["results"] if r["status"] == "error"]
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segformer bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
