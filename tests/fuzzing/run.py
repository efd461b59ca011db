"""Run the fuzzing generators and write the outcome table.

    python tests/fuzzing/run.py --examples 1000 --out fuzz-report      # every generator, JSON + markdown
    python tests/fuzzing/run.py --generator tiff_variants --seed 17    # one case, printed

Each case runs in a worker process with its address space capped (``--memory-gb``, default 2) and a timeout
(``--timeout``, default 60 s); see ``tests/fuzzing/runner.py`` for the outcomes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from fuzzing.generators import GENERATORS  # noqa: E402
from fuzzing.runner import markdown, run_generators  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20, help="cases per generator (default 20)")
    parser.add_argument("--out", default=None, help="folder for report.json and report.md (default: print only)")
    parser.add_argument("--generator", action="append", choices=sorted(GENERATORS), help="only these (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="run this one seed and print its record")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case (default 60)")
    parser.add_argument("--memory-gb", type=float, default=2.0, help="address space a case may add (default 2)")
    parser.add_argument("--jobs", type=int, default=1, help="generators run side by side (default 1)")
    parser.add_argument("--log", default=None, help="append the worker's stderr to this file")
    args = parser.parse_args(argv)
    names = args.generator or list(GENERATORS)
    examples, start = (1, args.seed) if args.seed is not None else (args.examples, args.start)
    report = run_generators(names, examples, timeout=args.timeout, memory_cap=int(args.memory_gb * 2**30), start=start,
                            log=Path(args.log) if args.log else None, progress=args.seed is None and sys.stderr.isatty(),
                            jobs=args.jobs)
    if args.seed is not None:
        for name in names:
            record = next(iter(report["examples"][name].values()), [None])[0]
            print(f"{name} seed {args.seed}: " + (json.dumps(record, indent=1, default=str) if record else "ok"))
    text = markdown(report)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        (out / "report.md").write_text(text)
    if args.seed is None:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
