"""``segformer bench``: the one benchmark harness. ``--mode latency`` (the default): latency / peak memory
against the reference implementations, inference or training steps, optionally with ``--contention N``
competing busy processes; ``--mode memory | whole | folder | torchrun``: inference at scale;
``--mode quant``: agreement and mIoU of the quantized paths; ``--mode fold``: the PT eval head's fold cache cost.

The work is done by :mod:`segformer.benchmark` (latency: one fresh worker process per configuration, repeats
alternating between implementations; :mod:`~segformer.benchmark.scale`; :mod:`~segformer.benchmark.quant`);
this module parses the options and prints the tables.
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

    from ..benchmark.scale import MODES as SCALE_MODES

    parser.add_argument("--mode", choices=("latency", *SCALE_MODES, "quant", "fold"), default="latency",
                        help="latency (default): the timing table; memory / whole / folder / torchrun: inference at "
                             "scale; quant: agreement and mIoU of the int8 / float16 paths; fold: what keeping the PT "
                             "eval head's fold fresh costs per forward")
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
    parser.add_argument("--round-warmup", type=int, default=1, metavar="N",
                        help="untimed passes of an implementation at the start of each of its round-robin turns, so "
                             "each timed pass follows one of its own, as in a loop over images (default 1; 0: time "
                             "the first pass of each turn, which runs with caches left cold by the other processes)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: the CPUs this process may use, or OMP_NUM_THREADS)")
    parser.add_argument("--contention", default="0",
                        help="competing busy-loop processes during the run, or a list (0,1,2: one table per level); "
                             "always ended, also on an error or Ctrl-C (default 0)")
    parser.add_argument("--batch", type=int, default=1, help="images per pass (default 1; training steps: 8)")
    parser.add_argument(
        "--train",
        action="store_true",
        help="time training steps (forward + loss + backward + AdamW): impls pt-train, hf-pt-train, tf-train",
    )
    parser.add_argument("--num-labels", type=int, default=150, help="classes of the decode head (default 150)")
    parser.add_argument("--hf-python", default=None, help="interpreter with transformers 5.x (PyTorch reference)")
    parser.add_argument("--hf-tf-python", default=None, help="interpreter with transformers 4.x + tf-keras (TF reference)")
    scale = parser.add_argument_group("--mode memory / whole / folder / torchrun / quant")
    scale.add_argument("--megapixels", default="16,64,256", help="memory: square images of these sizes (default 16,64,256)")
    scale.add_argument("--side", type=int, default=3000, help="whole: the image's side (default 3000)")
    scale.add_argument("--images", type=int, default=200, help="folder / torchrun: images in the folder (default 200)")
    scale.add_argument("--trained", default=None, help="quant: b0 fine-tuned on the synthetic set (default: train one)")
    scale.add_argument("--work", default="/tmp/segformer_quant", help="quant: folder for the data and files")
    scale.add_argument("--train-steps", type=int, default=300, help="quant: steps when training the b0 (default 300)")
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


def _counts(name: str, text: str, minimum: int) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``, every item a whole number >= ``minimum``."""
    from ..benchmark import parse_list

    values = []
    for item in parse_list(name, text):
        if not item.isdigit() or int(item) < minimum:
            raise ValueError(f"{name}: {item!r} is not a whole number >= {minimum}")
        values.append(int(item))
    return values


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from ..benchmark import FRAMEWORKS, IMPLEMENTATIONS, format_table, parse_list, parse_sizes, run_benchmark

    try:
        if args.threads is not None:
            _positive("--threads", args.threads)
        if args.mode == "quant":
            report = _quant(args)
        elif args.mode == "fold":
            from ..benchmark import parse_list, parse_sizes
            from ..benchmark.head_fold import run_fold
            from ..common.base.threads import default_threads

            run_fold(parse_list("variants", args.variants), parse_sizes(args.sizes),
                     threads=args.threads or default_threads(), repeats=_positive("--repeats", args.repeats),
                     num_labels=_positive("--num-labels", args.num_labels))
            return 0
        elif args.mode != "latency":
            from ..benchmark.scale import run_mode

            megapixels = _counts("megapixels", args.megapixels, minimum=1)
            run_mode(args.mode, threads=args.threads, repeats=_positive("--repeats", args.repeats),
                     images=_positive("--images", args.images), megapixels=megapixels,
                     side=_positive("--side", args.side))
            return 0
        else:
            levels = _counts("contention", args.contention, minimum=0)
            common = dict(
                variants=parse_list("variants", args.variants),
                sizes=parse_sizes(args.sizes),
                pairs=_pairs(args.pairs) if args.pairs else None,
                frameworks=parse_list("frameworks", args.frameworks, FRAMEWORKS),
                impls=parse_list("impls", args.impls, list(IMPLEMENTATIONS)) if args.impls else None,
                repeats=args.repeats,
                warmup=args.warmup,
                round_warmup=args.round_warmup,
                threads=args.threads,
                num_labels=args.num_labels,
                batch=args.batch,
                train=args.train,
                hf_python=args.hf_python,
                hf_tf_python=args.hf_tf_python,
                log=None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True)),
            )
            reports = []
            for level in levels:
                reports.append(run_benchmark(**common, contention=level))
                print(format_table(reports[-1]) + ("\n" if len(levels) > 1 else ""), flush=True)
            report = reports[0] if len(reports) == 1 else {"runs": reports}
    except ValueError as err:
        print(f"segformer bench: {err}", file=sys.stderr)
        return 2
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    runs = report.get("runs", [report]) if args.mode == "latency" else []
    errors = [r for one in runs for r in one["results"] if r["status"] == "error"]
    return 1 if errors else 0


def _quant(args: argparse.Namespace) -> dict:
    from ..benchmark.quant import run_quant

    return run_quant(trained=args.trained, work=args.work, train_steps=args.train_steps, threads=args.threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segformer bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
