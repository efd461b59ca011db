#!/usr/bin/env python
"""Hugging Face-layout folder PyTorch <-> TensorFlow (model.safetensors / pytorch_model.bin <-> tf_model.h5), verified.

    python conversion/convert_pt_tf.py path/to/pt-folder path/to/tf-folder --to tf
    python conversion/convert_pt_tf.py path/to/tf-folder path/to/pt-folder --to pt

Same options as ``segformer convert``.
"""

import sys

from segformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
