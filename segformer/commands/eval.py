"""``segformer eval``: dataset-level mIoU of a checkpoint on a dataset folder (PyTorch or Keras).

    segformer eval --model runs/b0 --data ADEChallengeData2016 --reduce-labels --eval-size ade
    segformer eval --model runs/b0 --data cityscapes_like --mode slide --slide-crop 1024,1024 --slide-stride 768,768 --tta

Prints a per-class IoU / accuracy table; the LAST line is ``mIoU: <value>`` (4 decimals). Labels are
compared at their original resolution (logits are resized back to it), summed over the whole split as in
mmsegmentation. ``--tta`` averages softmax probabilities over ``--scales`` and their horizontal flips.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "ADE_TTA_SCALES",
    "add_arguments",
    "add_inference_arguments",
    "cli_errors",
    "inference_kwargs",
    "label_predictor",
    "load_model",
    "run",
]

ADE_TTA_SCALES = "0.75,0.875,1.0,1.125,1.25"


def cli_errors(function: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the user errors of a command (bad values, missing / existing files) into ``error: ...`` on
    stderr and exit status 2, instead of a traceback. ``SEGFORMER_TRACEBACK=1`` shows the traceback."""
    import functools

    @functools.wraps(function)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return function(args)
        except (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, KeyError) as error:
            if os.environ.get("SEGFORMER_TRACEBACK"):
                raise
            print(f"error: {error}", file=sys.stderr)
            return 2

    return wrapper


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``eval`` and ``predict``."""
    parser.add_argument("--framework", choices=("pt", "tf"), default="pt")
    parser.add_argument("--mode", choices=("whole", "slide"), default="whole", help="whole image or sliding windows")
    parser.add_argument("--slide-crop", default="512,512", help="slide window H,W (default 512,512; Cityscapes: 1024,1024)")
    parser.add_argument("--slide-stride", default="341,341", help="slide step H,W (default 341,341; Cityscapes: 768,768)")
    parser.add_argument("--tta", action="store_true", help="multi-scale + flip test-time augmentation")
    parser.add_argument("--scales", default=ADE_TTA_SCALES, help=f"TTA scale ratios (default {ADE_TTA_SCALES}, the ADE20K set)")
    parser.add_argument("--eval-size", default=None, help="resize before inference: none (default), H,W, or 'ade'")


def inference_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``predict_labels`` / ``predict_logits`` (both frameworks) from the options."""
    from ..common.training import parse_size

    kwargs: dict[str, Any] = {"mode": args.mode}
    if args.mode == "slide":
        kwargs["crop_size"] = parse_size(args.slide_crop, "--slide-crop")
        kwargs["stride"] = parse_size(args.slide_stride, "--slide-stride")
    if args.tta:
        try:
            kwargs["scales"] = tuple(float(s) for s in str(args.scales).split(",") if s.strip())
        except ValueError:
            raise ValueError(f"--scales must be comma-separated numbers, got {args.scales!r}") from None
        kwargs["flip"] = True
    return kwargs


def load_model(framework: str, path: str, command: str = "segformer eval", allow_random_head: bool = True) -> Any:
    """A segmentation checkpoint in eval mode / inference form for ``framework`` (``pt`` or ``tf``).

    A checkpoint whose weights hold no decode head (base or classification weights: the head would be
    random) is refused unless ``allow_random_head``; then one warning line says so.
    """
    import warnings

    from ..common.deps import require_framework

    if framework not in ("pt", "tf"):
        raise ValueError(f"--framework must be one of ['pt', 'tf'], got {framework!r}")
    if not Path(path).exists():
        raise FileNotFoundError(f"--model {path!r} does not exist (a checkpoint folder with config.json)")
    require_framework(framework, command)
    if framework == "pt":
        from ..pt import SegformerForSemanticSegmentation as model_class
    else:
        from ..tf import TFSegformerForSemanticSegmentation as model_class
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, report = model_class.from_pretrained(path, output_loading_info=True)
    random_head = [key for key in report.missing_keys if key.startswith("decode_head.")]
    if random_head and not allow_random_head:
        raise ValueError(
            f"--model {path!r} has no trained decode head ({len(random_head)} decode_head tensors are not in its "
            "weights: a base or classification checkpoint), so its masks would be random; fine-tune it with "
            "segformer train, or pass --allow-random-head to run it anyway"
        )
    if random_head:
        warnings.warn(f"--model {path!r}: the decode head is random (not in the checkpoint); masks are meaningless")
    for warning in caught:
        if not (random_head and str(warning.message).startswith("loading ")):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return model.eval() if framework == "pt" else model


def label_predictor(framework: str, kwargs: dict[str, Any]) -> Callable[[Any, Any, tuple[int, int]], Any]:
    """``predict(model, pixel_values (1, 3, h, w), (H, W)) -> (1, H, W)`` labels, numpy-compatible."""
    if framework == "pt":
        from ..pt.inference import predict_labels

        def predict(model: Any, pixel_values: Any, size: tuple[int, int]) -> Any:
            return predict_labels(model, pixel_values, output_size=size, **kwargs)

        return predict
    from ..tf.inference import predict_labels as tf_predict_labels

    def predict_tf(model: Any, pixel_values: Any, size: tuple[int, int]) -> Any:
        return tf_predict_labels(model, pixel_values, output_size=size, **kwargs)

    return predict_tf


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint folder (config.json + weights)")
    parser.add_argument("--data", required=True, help="dataset root (images/ + annotations/ per split)")
    parser.add_argument("--split", choices=("training", "validation"), default="validation")
    parser.add_argument("--reduce-labels", action="store_true", help="ADE20K annotations: 0 -> ignored, k -> k-1")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--no-progress", action="store_true")
    add_inference_arguments(parser)


class _Subset:
    def __init__(self, dataset: Any, count: int) -> None:
        self.dataset = dataset
        self.count = min(count, len(dataset))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.dataset[index]


@cli_errors
def run(args: argparse.Namespace) -> int:
    from ..common.datasets import SegmentationFolderDataset
    from ..common.metrics import format_iou_table
    from ..common.training import build_eval_transform

    kwargs = inference_kwargs(args)
    dataset: Any = SegmentationFolderDataset(
        args.data, args.split, transform=build_eval_transform(args.eval_size), reduce_labels=args.reduce_labels
    )
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        dataset = _Subset(dataset, args.limit)
    model = load_model(args.framework, args.model)
    predict = label_predictor(args.framework, kwargs)
    if args.framework == "pt":
        from ..pt.training import evaluate
    else:
        from ..tf.training import evaluate
    metric = evaluate(model, dataset, ignore_index=model.config.semantic_loss_ignore_index, predict=predict,
                      progress=not args.no_progress)
    described = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    print(f"{args.framework} | {args.model} | {args.split}: {len(dataset)} images | {described}")
    print(format_iou_table(metric.compute(), model.config.id2label))
    return 0
