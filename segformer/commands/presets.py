"""``segformer presets``: the published checkpoints that short names (``b0-ade``, ``b2-city``) stand for."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=("all", "segmentation", "classification"), default="all",
                        help="show only segmentation or classification (ImageNet encoder) presets")


def run(args: argparse.Namespace) -> int:
    from ..common.model.presets import format_presets_table

    task = {"all": None, "segmentation": "semantic-segmentation", "classification": "image-classification"}[args.task]
    print(format_presets_table(task))
    print("\nUse a name wherever a checkpoint is accepted: Segmenter.from_pretrained('b0-ade'), "
          "SegformerForSemanticSegmentation.from_pretrained('b0-ade'), TFSegformerForSemanticSegmentation.from_preset("
          "'segformer_b0_ade20k_512'). The weights come from the Hugging Face Hub through huggingface_hub "
          "(pip install huggingface_hub) and its cache. Published figures: single-scale val mIoU (ADE20K, Cityscapes) "
          "from the SegFormer paper, ImageNet-1k top-1 for the mit-* encoders.")
    return 0
