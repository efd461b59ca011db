"""``python -m segformer.benchmark [options]``: the same as ``segformer bench [options]``."""

from __future__ import annotations

import sys

from ..commands.bench import main

sys.exit(main(sys.argv[1:]))
