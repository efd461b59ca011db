"""``segformer train``: fine-tune on a dataset folder with the original SegFormer recipe (PyTorch or Keras).

``--recipe quick`` sizes steps, crop and scale to the folder instead
(:func:`segformer.common.training.quick_recipe`); a time estimate is printed after the first few steps.

    segformer train --framework pt --model b0 --data ADEChallengeData2016 --out runs/b0 --reduce-labels
    torchrun --nproc_per_node 2 --standalone -m segformer.cli train --framework pt ...   # DDP (+ SyncBN)
    segformer train --framework tf ...     # MirroredStrategy over the visible devices (TF_CONFIG: multi-worker)

``--model`` is a variant (``segformer.common.model.variants.variant_names()``, random weights), a ``config.json`` (random weights), or a
checkpoint folder. ``--data`` has ``images/{training,validation}`` and ``annotations/{...}`` (ADE20K
layout; ``segformer.common.training.datasets.make_synthetic_dataset`` writes one). ``--out`` ends as a Hugging Face
checkpoint folder of that framework (``config.json`` + ``model.safetensors`` / ``tf_model.h5``) with
``train_log.jsonl`` (one JSON object per step: loss, lr, and mIoU at evaluations) and ``last/`` (the
training state that ``--resume`` continues from). ``--batch-size`` is per device (per process / replica).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .shared import add_data_arguments, check_dataset_files, check_num_labels, dataset_from_args, show_progress

__all__ = ["add_arguments", "recipe_from_args", "run", "train_config_from_args"]


def _pair(values: tuple[int, int]) -> str:
    return f"{values[0]},{values[1]}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..common.training.recipe import QUICK_EPOCHS, RECIPES, TrainConfig
    from ..common.model.variants import variant_names

    original = TrainConfig()

    parser.add_argument("--framework", choices=("pt", "tf"), default="pt")
    parser.add_argument(
        "--model", required=True,
        help=f"variant ({', '.join(variant_names())}), config.json (random init) or checkpoint folder",
    )
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder (checkpoint, log, training state)")
    parser.add_argument(
        "--recipe", choices=RECIPES, default=RECIPES[0],
        help=f"what --steps, --crop-size and --img-scale default to: original ({original.total_steps} steps, "
             f"{original.crop_size[0]}x{original.crop_size[1]} crops; the default) or quick (sized to the training images: "
             f"crop <= the smallest image side, {QUICK_EPOCHS} epochs; README, 'Training recipes')",
    )
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps (default: the recipe's; original {original.total_steps})")
    parser.add_argument("--batch-size", type=int, default=2, help="images per device per micro-batch (default 2)")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    parser.add_argument("--crop-size", default=None,
                        help=f"training crop HxW, H,W or S (default: the recipe's; original {_pair(original.crop_size)})")
    parser.add_argument("--img-scale", default=None,
                        help=f"random-resize base scale LONG,SHORT (default: the recipe's; original {_pair(original.img_scale)})")
    parser.add_argument("--ratio-range", default="0.5,2.0", help="random-resize ratio range LOW,HIGH (default 0.5,2.0)")
    parser.add_argument("--no-photometric", action="store_true", help="skip PhotoMetricDistortion")
    parser.add_argument("--lr", type=float, default=6e-5, help="base learning rate (decode head x10), default 6e-5")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (default min(1500, steps // 10))")
    parser.add_argument("--num-labels", type=int, default=None, help="classes (default: from the dataset's id2label.json or the model)")
    parser.add_argument("--reduce-labels", action="store_true", help="ADE20K: label 0 is 'other' -> ignored, k -> k-1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: only at the end)")
    parser.add_argument("--eval-size", default=None, help="eval resize: none (default), H,W, or 'ade' (2048x512 keep ratio, /32)")
    parser.add_argument("--checkpoint-every", type=int, default=4000, help="save the training state every N steps")
    parser.add_argument("--log-every", type=int, default=10, help="print a log line every N steps (the file gets every step)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last")
    parser.add_argument("--overwrite", action="store_true", help="start over in an OUT that already holds a run")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast / mixed precision")
    parser.add_argument("--no-sync-bn", action="store_true", help="per-device BatchNorm statistics (default: synchronized)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute encoder stages (PT)")
    parser.add_argument("--drop-path-rate", type=float, default=None, help="override the config's drop_path_rate")
    parser.add_argument("--dropout", type=float, default=None, help="override every dropout probability of the config")
    parser.add_argument("--tf-cpu-devices", type=int, default=None,
                        help="TF: split the CPU into N logical devices for MirroredStrategy (testing without GPUs)")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes (PT)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def recipe_from_args(args: argparse.Namespace, train_set: Any = None) -> dict[str, Any]:
    """``total_steps``, ``crop_size`` and ``img_scale``: ``--recipe``'s values (the quick recipe reads the image
    sizes of ``train_set`` from their headers), each replaced by ``--steps`` / ``--crop-size`` / ``--img-scale``
    when given."""
    from ..common.training.recipe import parse_size, recipe_settings

    if args.recipe == "quick":
        if train_set is None:
            raise ValueError("--recipe quick needs the training images (it is sized to them)")
        from ..common.images.image_io import image_size

        for name, value in (("--batch-size", args.batch_size), ("--grad-accum", args.grad_accum)):
            if value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value}")
        sizes = [image_size(path) for path in train_set.image_paths]
        settings = recipe_settings(args.recipe, sizes, args.batch_size * args.grad_accum)
    else:
        settings = recipe_settings(args.recipe)
    if args.steps is not None:
        settings["total_steps"] = args.steps
    if args.crop_size is not None:
        settings["crop_size"] = parse_size(args.crop_size, "--crop-size")
    if args.img_scale is not None:
        settings["img_scale"] = parse_size(args.img_scale, "--img-scale")
    return settings


def train_config_from_args(args: argparse.Namespace, train_set: Any = None) -> Any:
    from ..common.training.recipe import TrainConfig, default_warmup_steps

    if args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be an integer >= 1 (steps between saved training states; the end of "
                         f"the run saves one anyway), got {args.checkpoint_every}")
    ratio = [float(v) for v in str(args.ratio_range).split(",")]
    if len(ratio) != 2:
        raise ValueError(f"--ratio-range must be LOW,HIGH, got {args.ratio_range!r}")
    recipe = recipe_from_args(args, train_set)
    steps = recipe["total_steps"]
    warmup = default_warmup_steps(steps) if args.warmup_steps is None else args.warmup_steps
    return TrainConfig(
        lr=args.lr, weight_decay=args.weight_decay, total_steps=steps, warmup_steps=warmup,
        batch_size=args.batch_size, grad_accum=args.grad_accum, crop_size=recipe["crop_size"],
        img_scale=recipe["img_scale"], ratio_range=tuple(ratio),
        photometric=not args.no_photometric, reduce_labels=args.reduce_labels, seed=args.seed,
        eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, log_every=max(args.log_every, 1),
        bf16=args.bf16, sync_bn=not args.no_sync_bn, gradient_checkpointing=args.gradient_checkpointing, num_workers=args.num_workers,
    )


def _overrides(args: argparse.Namespace) -> dict[str, float]:
    out: dict[str, float] = {}
    if args.drop_path_rate is not None:
        out["drop_path_rate"] = args.drop_path_rate
    if args.dropout is not None:
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"):
            out[name] = args.dropout
    return out


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    log = out / "train_log.jsonl"
    if resume:
        if not (out / "last").is_dir():
            raise FileNotFoundError(f"--resume: {os.fspath(out)!r} holds no training state (no last/ folder)")
        return
    if log.exists() and not overwrite:
        raise FileExistsError(
            f"--out {os.fspath(out)!r} already holds a run (train_log.jsonl); pass --resume to continue it "
            "or --overwrite to start over"
        )


def run(args: argparse.Namespace) -> int:
    """Train. A NaN / Inf step stops with one ``error:`` line (exit 1), an environment fault (disk full,
    read-only ``--out``) with one naming the path (exit 2), SIGINT / SIGTERM after saving the training state
    (exit 130): ``segformer.cli.main`` prints them."""
    from ..common.base.deps import require_framework
    from ..common.training.metrics import format_iou_table
    from ..common.training.recipe import build_eval_transform, build_train_transform

    if args.recipe == "original":
        train_config_from_args(args)  # bad options are reported before the dataset is read
    out = Path(args.out)
    _check_out(out, args.resume, args.overwrite)
    train_set = dataset_from_args(args, "training", None, seed=args.seed)
    eval_set = None
    if args.data is not None and (Path(args.data) / "images" / "validation").is_dir():
        eval_set = dataset_from_args(args, "validation", build_eval_transform(args.eval_size))
    require_framework(args.framework, "segformer train")
    source = args.data if args.data is not None else f"--labels {args.labels}"
    largest = check_dataset_files(train_set, where=f"{source!r} (training)")
    if eval_set is not None:
        largest.update(check_dataset_files(eval_set, where=f"{source!r} (validation)"))
    label_maps = (largest, repr(source))  # checked against the model as soon as it is built
    config = train_config_from_args(args, train_set)
    train_set.transform = build_train_transform(config)
    id2label = train_set.id2label
    if args.framework == "pt":
        result, model_config, is_main = _run_pt(args, config, out, train_set, eval_set, id2label, label_maps)
    else:
        result, model_config, is_main = _run_tf(args, config, out, train_set, eval_set, id2label, label_maps)
    if is_main:
        from ..common.checkpoints.model_card import write_inference_files

        dataset = Path(args.data).resolve().name if args.data is not None else Path(args.labels).resolve().name
        base = args.model if Path(args.model).is_dir() else f"SegFormer {args.model} (random initialization)"
        write_inference_files(
            out, model_config, image_size=config.crop_size, reduce_labels=args.reduce_labels, framework=args.framework,
            how=f"Fine-tuned with `segformer train` ({config.total_steps} steps, batch {config.batch_size} x "
                f"{config.grad_accum}, crop {config.crop_size[0]}x{config.crop_size[1]}) from {base} on {dataset}.",
            base_model=args.model if Path(args.model).is_dir() else None, dataset=dataset, results=result,
        )
        print(f"saved {out} (config.json + {'model.safetensors' if args.framework == 'pt' else 'tf_model.h5'} "
              "+ preprocessor_config.json + README.md model card)")
        if result is not None:
            print(format_iou_table(result, model_config.id2label))
    return 0


def _recipe_line(args: argparse.Namespace, config: Any, images: int) -> str:
    """What this run will do, and where its numbers came from."""
    given = [name for name, value in (("--steps", args.steps), ("--crop-size", args.crop_size),
                                      ("--img-scale", args.img_scale)) if value is not None]
    per_step = config.batch_size * config.grad_accum
    text = (f"recipe {args.recipe}: {config.total_steps} steps of {per_step} image(s) per device "
            f"(on one device about {config.total_steps * per_step / images:.3g} epochs of the {images} training images), "
            f"crop {config.crop_size[0]}x{config.crop_size[1]}, img-scale {_pair(config.img_scale)}")
    if given:
        text += f" ({', '.join(given)} as given)"
    if args.recipe == "original" and not given:
        text += "; for a first run on a small folder, --recipe quick"
    return text


def _model_ready(model: Any, train_set: Any, label_maps: tuple[dict[str, int], str], config: Any, framework: str) -> None:
    """The built model against the label maps (class ids it cannot predict, naming the files) and the memory a
    training step needs (``--crop-size`` x ``--batch-size``), before any step and before an old run in ``--out``
    is touched."""
    from ..common.inference.memory import check_training_memory

    largest, where = label_maps
    check_num_labels(model.config.num_labels, train_set, largest, where, verb="train")
    check_training_memory(model.config, config.crop_size, config.batch_size, framework)


def _prepare_out(out: Path, overwrite: bool, resume: bool, is_main: bool) -> None:
    """``--overwrite``: the old run's log goes. Called only once the model is built and checked, so a
    ``--model`` that fails to load leaves the old run as it was."""
    if is_main and overwrite and not resume:
        log = out / "train_log.jsonl"
        if log.exists():
            log.unlink()


def _run_pt(args, config, out, train_set, eval_set, id2label, label_maps):  # type: ignore[no-untyped-def]
    from ..pt.training import Trainer, build_model, cleanup_distributed, init_distributed

    context = init_distributed()
    try:
        model = build_model(args.model, args.num_labels, id2label, seed=args.seed, **_overrides(args))
        _model_ready(model, train_set, label_maps, config, "pt")
        _prepare_out(out, args.overwrite, args.resume, context.is_main)
        if context.distributed:
            import torch.distributed as dist

            dist.barrier()
        if context.is_main:
            images = config.batch_size * config.grad_accum * context.world_size
            print(f"[pt] {model.config.num_labels} labels, {sum(p.numel() for p in model.parameters()):,} parameters, "
                  f"{context.world_size} process(es) on {context.device}, {images} images per step")
            print(_recipe_line(args, config, len(train_set)))
        trainer = Trainer(model, config, train_set, eval_set, out_dir=out, context=context, resume=args.resume,
                          progress=show_progress(args.no_progress))
        return _train_and_evaluate(trainer, eval_set), model.config, context.is_main
    finally:
        cleanup_distributed(context)


def _train_and_evaluate(trainer, eval_set):  # type: ignore[no-untyped-def]
    """Train, then the held-out metrics: the last evaluation's, or one more run when none ran at the end."""
    trainer.train()
    if eval_set is None:
        return None
    return trainer.last_eval if trainer.last_eval is not None else trainer.evaluate()


def _run_tf(args, config, out, train_set, eval_set, id2label, label_maps):  # type: ignore[no-untyped-def]
    from ..tf.distributed import is_chief, make_strategy
    from ..tf.training import Trainer, build_model

    strategy = make_strategy(args.tf_cpu_devices)
    is_main = is_chief(strategy)
    with strategy.scope():
        model = build_model(args.model, args.num_labels, id2label, seed=args.seed, crop_size=config.crop_size,
                            **_overrides(args))
    _model_ready(model, train_set, label_maps, config, "tf")
    _prepare_out(out, args.overwrite, args.resume, is_main)
    if is_main:
        replicas = strategy.num_replicas_in_sync
        print(f"[tf] {model.config.num_labels} labels, {replicas} replica(s), "
              f"{config.batch_size * config.grad_accum * replicas} images per step")
        print(_recipe_line(args, config, len(train_set)))
    trainer = Trainer(model, config, train_set, eval_set, out_dir=out, strategy=strategy, resume=args.resume,
                      progress=show_progress(args.no_progress))
    return _train_and_evaluate(trainer, eval_set), model.config, is_main
