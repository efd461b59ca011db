"""``segformer info``: build a SegFormer (a checkpoint folder, or a seeded b0), run it on the sample image."""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..common.model.variants import variant_names

    parser.add_argument(
        "--model", default="b0",
        help=f"variant name ({', '.join(variant_names())}: seeded random weights) or a checkpoint folder",
    )
    parser.add_argument("--framework", choices=("pt", "tf"), default="pt")
    parser.add_argument("--size", type=int, default=512, help="processor resize (square), default 512")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..common.base.deps import require_framework
    from ..common.images.image_processing import SegformerImageProcessor
    from ..common.inference.memory import check_inference_memory
    from ..common.images.sample import SAMPLE_IMAGE, load_sample_image
    from ..common.model.variants import parse_variant
    from .shared import random_variant_config

    print(f"segformer {__version__} on Python {platform.python_version()} ({platform.machine()})")
    require_framework(args.framework, "segformer info")
    if args.size < 1:
        raise ValueError(f"--size must be a positive int, got {args.size}")
    if args.framework == "pt":
        import torch

        from ..pt import SegformerForSemanticSegmentation

        if parse_variant(args.model) is not None:
            torch.manual_seed(args.seed)
            model = SegformerForSemanticSegmentation(random_variant_config(args.model)).eval()
        else:
            model = SegformerForSemanticSegmentation.from_pretrained(args.model)
    else:
        from ..tf import TFSegformerForSemanticSegmentation

        if parse_variant(args.model) is not None:
            import keras

            keras.utils.set_random_seed(args.seed)
            model = TFSegformerForSemanticSegmentation(random_variant_config(args.model))
        else:
            model = TFSegformerForSemanticSegmentation.from_pretrained(args.model)
    check_inference_memory(model.config, (args.size, args.size), f"--size {args.size}", framework=args.framework)
    image = load_sample_image()
    processor = SegformerImageProcessor(size={"height": args.size, "width": args.size})
    pixel_values = processor(image, return_tensors="np")["pixel_values"]
    print(f"sample image {SAMPLE_IMAGE.name}: {image.shape} -> pixel_values {pixel_values.shape}")
    start = time.perf_counter()
    if args.framework == "pt":
        with torch.no_grad():
            logits = model(torch.from_numpy(pixel_values)).logits.numpy()
        elapsed = time.perf_counter() - start
        print(f"torch {torch.__version__}")
    else:
        logits = np.asarray(model(pixel_values).logits)
        elapsed = time.perf_counter() - start
    config = model.config
    print(f"model: depths {config.depths}, hidden sizes {config.hidden_sizes}, decode head {config.decode_head_type}, "
          f"{config.num_labels} labels")
    print(f"logits {logits.shape} in {elapsed:.3f} s; finite: {bool(np.isfinite(logits).all())}")
    counts = np.bincount(logits.argmax(1).ravel(), minlength=config.num_labels)
    top = np.argsort(counts)[::-1][:3]
    print("most frequent predicted classes:", ", ".join(f"{config.id2label[int(i)]} ({counts[i]} px)" for i in top))
    from ..conversion.report import formats_text

    print("checkpoints `segformer convert` reads and writes:\n" + formats_text())
    return 0 if np.isfinite(logits).all() else 1
