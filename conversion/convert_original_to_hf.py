#!/usr/bin/env python
"""Original NVlabs / mmsegmentation SegFormer checkpoint (.pth) -> Hugging Face-layout folder, verified.

    python conversion/convert_original_to_hf.py segformer.b0.512x512.ade.160k.pth out/segformer-b0-ade --to pt

Same options as ``segformer convert`` (``--num-heads``, ``--labels``, ``--tolerance``, ``--overwrite``).
"""

import sys

from segformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
