"""Inference latency / peak memory, ours vs transformers: ``python benchmarks/bench_inference.py [options]``.

Same options as ``segformer bench`` (see benchmarks/README.md); the work is in ``segformer/benchmark/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from segformer.commands.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
