"""``segformer eval``: dataset-level mIoU of a checkpoint on a dataset folder (PyTorch or Keras).

    segformer eval --model runs/b0 --data ADEChallengeData2016 --reduce-labels --eval-size ade
    segformer eval --model runs/b0 --data cityscapes_like --mode slide --slide-crop 1024,1024 --slide-stride 768,768 --tta

Prints a per-class IoU / accuracy table; the LAST line is ``mIoU: <value>`` (4 decimals). Labels are
compared at their original resolution (logits are resized back to it), summed over the whole split as in
mmsegmentation. ``--tta`` averages softmax probabilities over ``--scales`` and their horizontal flips.
Under ``torchrun`` (PyTorch) or with ``TF_CONFIG`` workers (Keras) every process evaluates its share and the
confusion matrices are summed.
"""

from __future__ import annotations

import argparse
from typing import Any

from .shared import (
    add_data_arguments,
    add_inference_arguments,
    check_dataset_files,
    check_num_labels,
    dataset_from_args,
    inference_kwargs,
    label_predictor,
    load_model,
    show_progress,
)

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="PyTorch device (default: cpu; under torchrun: cpu, gloo)")
    parser.add_argument("--model", required=True, help="checkpoint folder (config.json + weights)")
    add_data_arguments(parser)
    parser.add_argument("--split", choices=("training", "validation"), default="validation")
    parser.add_argument("--reduce-labels", action="store_true", help="ADE20K annotations: 0 -> ignored, k -> k-1")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--no-progress", action="store_true")
    add_inference_arguments(parser, "none")


class _Subset:
    """The first ``count`` items of ``dataset``."""

    def __init__(self, dataset: Any, count: int) -> None:
        self.dataset = dataset
        self.indices = range(min(count, len(dataset)))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self.indices):
            raise IndexError(index)
        return self.dataset[self.indices[index]]


def run(args: argparse.Namespace) -> int:
    from ..common.base.deps import require_framework
    from ..common.training.metrics import format_iou_table
    from ..common.training.recipe import build_eval_transform

    kwargs = inference_kwargs(args)
    require_framework(args.framework, "segformer eval")
    if args.device is not None:  # refused before any loading, with the devices this machine has
        from ..segmenter import backend_module

        backend_module(args.framework).check_device(args.device)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    dataset: Any = dataset_from_args(args, args.split, build_eval_transform(args.eval_size))
    where = args.data if args.data is not None else f"--labels {args.labels}"
    largest = check_dataset_files(dataset, args.limit, repr(where))
    workers = None
    if args.framework == "tf":  # TensorFlow's multi-worker strategy must start before the model
        from ..tf.workers import WorkerGroup

        workers = WorkerGroup()
    model = load_model(args.framework, args.model, xla=args.xla)
    check_num_labels(model.config.num_labels, dataset, largest, repr(where))
    if args.limit is not None:
        dataset = _Subset(dataset, args.limit)
    predict = label_predictor(args.framework, kwargs)
    if args.framework == "pt":  # under torchrun every rank evaluates its share; the matrices are summed
        from ..pt.training import cleanup_distributed, evaluate, init_distributed

        context = init_distributed("cpu" if args.device is None else args.device)
        try:
            metric = evaluate(model.to(context.device), dataset, ignore_index=model.config.semantic_loss_ignore_index,
                              context=context, predict=predict, progress=show_progress(args.no_progress))
        finally:
            cleanup_distributed(context)
        if not context.is_main:
            return 0
        ranks = f" | {context.world_size} processes" if context.distributed else ""
    else:  # with TF_CONFIG workers every worker evaluates its share; the matrices are summed
        from ..tf.training import evaluate

        metric = evaluate(model, dataset, ignore_index=model.config.semantic_loss_ignore_index, predict=predict,
                          progress=show_progress(args.no_progress), context=workers)
        if workers.rank != 0:
            return 0
        ranks = f" | {workers.world} workers" if workers.world > 1 else ""
    described = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    print(f"{args.framework} | {args.model} | {args.split}: {len(dataset)} images | {described}{ranks}")
    print(format_iou_table(metric.compute(), model.config.id2label))
    return 0
