"""``python -m segformer ...``: the same command line as ``segformer ...``."""

import sys

from .cli import main

sys.exit(main())
