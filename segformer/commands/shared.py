"""What ``predict``, ``eval`` and ``train`` share: inference and data options, model loading (folders,
presets, Hub ids; random decode heads refused), the :class:`segformer.Segmenter` the options ask for,
dataset checks before any work."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = [
    "ADE_TTA_SCALES",
    "add_data_arguments",
    "add_inference_arguments",
    "build_segmenter",
    "check_dataset_files",
    "check_num_labels",
    "dataset_from_args",
    "inference_kwargs",
    "label_predictor",
    "load_model",
    "segmenter_options",
    "refuse_output_over_inputs",
    "show_progress",
    "random_variant_config",
]

ADE_TTA_SCALES = "0.75,0.875,1.0,1.125,1.25"


def add_inference_arguments(parser: argparse.ArgumentParser, eval_size_default: str) -> None:
    """Options shared by ``eval`` and ``predict``; each is one :class:`segformer.Segmenter` argument (an option
    left out leaves that argument to the segmenter: the preset's setting, else its default).
    ``eval_size_default`` says, for the help, what happens without ``--eval-size``."""
    from ..segmenter import DEFAULT_CROP_SIZE, DEFAULT_STRIDE

    crop, step = ",".join(map(str, DEFAULT_CROP_SIZE)), ",".join(map(str, DEFAULT_STRIDE))
    parser.add_argument("--framework", choices=("pt", "tf"), default="pt")
    parser.add_argument("--mode", choices=("whole", "slide"), default=None,
                        help="whole image or sliding windows (default: the preset's, else whole)")
    parser.add_argument("--slide-crop", default=None,
                        help=f"slide window H,W (default: the preset's, else {crop}; Cityscapes: 1024,1024)")
    parser.add_argument("--slide-stride", default=None,
                        help=f"slide step H,W (default: the preset's, else {step}; Cityscapes: 768,768)")
    parser.add_argument("--tta", action="store_true",
                        help=f"horizontal-flip test-time augmentation over --scales (default scales {ADE_TTA_SCALES}, "
                             "the ADE20K set)")
    parser.add_argument("--scales", default=None,
                        help="test-time scale ratios, comma-separated (one scale: the image is resized by it; several: "
                             "their probabilities are averaged)")
    parser.add_argument("--eval-size", default=None,
                        help=f"resize before inference: none (the image as it is), H,W, or 'ade' (the ADE20K "
                             f"keep-ratio rule); default: {eval_size_default}")
    parser.add_argument("--xla", action="store_true",
                        help="TensorFlow only: run the model under XLA (the Keras model's jit_compile): one compile "
                             "per input size (seconds), then faster with 2+ threads; pays off for many images of "
                             "one size (the default 512x512 resize)")


def segmenter_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`segformer.Segmenter` keyword arguments the inference options give: only those given
    (``--mode`` -> mode, ``--slide-crop`` -> crop_size, ``--slide-stride`` -> stride, ``--scales`` -> scales,
    ``--tta`` -> flip (and the ADE20K scales without ``--scales``), ``--eval-size`` -> resize: ``none``, ``H,W``
    or ``ade``, the ADE20K preset's keep-ratio rule)."""
    from ..common.model.presets import get_preset
    from ..common.base.sizes import parse_size

    options: dict[str, Any] = {}
    if args.mode is not None:
        options["mode"] = args.mode
    if args.slide_crop is not None:
        options["crop_size"] = parse_size(args.slide_crop, "--slide-crop")
    if args.slide_stride is not None:
        options["stride"] = parse_size(args.slide_stride, "--slide-stride")
    scales = args.scales if args.scales is not None else (ADE_TTA_SCALES if args.tta else None)
    if scales is not None:
        try:
            options["scales"] = tuple(float(s) for s in str(scales).split(",") if s.strip())
        except ValueError:
            raise ValueError(f"--scales must be comma-separated numbers, got {scales!r}") from None
    if args.tta:
        options["flip"] = True
    if args.eval_size == "ade":
        ade = get_preset("b0-ade")
        options.update(resize="keep-ratio", test_scale=ade.test_scale, size_divisor=ade.size_divisor)
    elif args.eval_size is not None:
        options["resize"] = "none" if args.eval_size == "none" else parse_size(args.eval_size, "--eval-size")
    return options


def inference_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``predict_labels`` / ``predict_logits`` (both frameworks) from the options, with
    the :class:`segformer.Segmenter` defaults for those not given (what ``eval`` runs)."""
    from ..common.inference.rules import check_inference_args
    from ..segmenter import DEFAULT_CROP_SIZE, DEFAULT_STRIDE

    options = segmenter_options(args)
    kwargs: dict[str, Any] = {"mode": options.get("mode", "whole")}
    if kwargs["mode"] == "slide":
        kwargs["crop_size"] = options.get("crop_size", DEFAULT_CROP_SIZE)
        kwargs["stride"] = options.get("stride", DEFAULT_STRIDE)
    if "scales" in options:
        kwargs["scales"] = options["scales"]
    if options.get("flip"):
        kwargs["flip"] = True
    check_inference_args(**kwargs)  # bad values named before any model is loaded
    return kwargs


def random_variant_config(variant: str) -> Any:
    """The config of a seeded random ``variant`` (``b0``..``b5``) that ``info`` and ``demo`` run: the ADE20K
    labels (150 names, as the published ADE20K checkpoints), so both name the same classes."""
    from ..common.images.labels import get_label_set
    from ..common.model.config import SegformerConfig

    id2label, _ = get_label_set("ade20k")
    return SegformerConfig.from_variant(variant, id2label={str(k): v for k, v in id2label.items()})


def show_progress(off: bool) -> bool:
    """Whether a command draws progress bars: only on a terminal (stderr), never into a pipe or a log file,
    and not when ``off`` (``--no-progress`` / ``--quiet``)."""
    import sys

    if off:
        return False
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stderr
        return False


def refuse_output_over_inputs(out: str | os.PathLike, out_flag: str, inputs: list[tuple[str, str | os.PathLike]],
                              command: str) -> None:
    """Refuse an output that would write over an input, whatever the flags (``--overwrite`` included).

    ``inputs`` are ``(flag, path)`` pairs (files or folders; paths that do not exist are skipped). Compared as
    real paths (symbolic links resolved): the output may not be an input, contain one (a folder replaced
    with the input inside it), or lie inside an input folder.
    """
    from ..common.base.atomic import output_overlap

    for flag, path in inputs:
        relation = output_overlap(path, out) if os.path.lexists(path) else None
        if relation is None:
            continue
        raise ValueError(
            f"{out_flag} {os.fspath(out)!r} {relation} the input {flag} {os.fspath(path)!r}; {command} never writes "
            f"over its inputs, even with --overwrite: choose an {out_flag} outside it"
        )


def load_model(framework: str, path: str, command: str = "segformer eval", allow_random_head: bool = True,
               xla: bool = False) -> Any:
    """A segmentation checkpoint in eval mode / inference form for ``framework`` (``pt`` or ``tf``).

    A checkpoint whose weights hold no decode head (base or classification weights: the head would be
    random) is refused unless ``allow_random_head``; then one warning line says so. ``xla`` (``--xla``,
    TensorFlow only) sets the Keras model's ``jit_compile``: its inference calls then run as an XLA graph.
    """
    import warnings

    from ..common.base.deps import require_framework

    if framework not in ("pt", "tf"):
        raise ValueError(f"--framework must be one of ['pt', 'tf'], got {framework!r}")
    if xla and framework != "tf":
        raise ValueError(f"--xla applies to --framework tf only (got --framework {framework}); PyTorch runs its "
                         "own fast path without it")
    from ..common.model.hub import looks_like_repo_id
    from ..common.model.presets import find_preset

    if not Path(path).exists() and find_preset(path) is None and not (looks_like_repo_id(path) and "/" in path):
        raise FileNotFoundError(
            f"--model {path!r} does not exist: pass a checkpoint folder (config.json + weights), a preset name "
            "(segformer presets) or a Hugging Face Hub id"
        )
    from ..segmenter import backend_module

    require_framework(framework, command)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, report = backend_module(framework).load_pretrained(path)
    random_head = report.untrained_head_keys
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
    if xla:
        model.jit_compile = True
    return model


def build_segmenter(model: Any, args: argparse.Namespace, **options: Any) -> Any:
    """The :class:`segformer.Segmenter` for ``model`` loaded from ``--model``, built as
    :meth:`segformer.Segmenter.from_pretrained` builds it (the folder's processor, the preset's settings), with
    the inference options (:func:`segmenter_options`) and ``options`` on top."""
    from ..segmenter import Segmenter

    return Segmenter.from_loaded(model, args.model, **segmenter_options(args), **options)


def label_predictor(framework: str, kwargs: dict[str, Any]) -> Callable[[Any, Any, tuple[int, int]], Any]:
    """``predict(model, pixel_values (1, 3, h, w), (H, W)) -> (1, H, W)`` labels (the framework adapter's
    ``Backend.labels``), as the trainers' ``evaluate`` takes it."""
    from ..segmenter import backend_module

    backend = backend_module(framework).Backend

    def predict(model: Any, pixel_values: Any, size: tuple[int, int]) -> Any:
        return backend(model).labels(pixel_values, size, **kwargs)

    return predict


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data ROOT`` or ``--images ITEMS... --labels DIR`` (shared by ``eval`` and ``train``)."""
    parser.add_argument("--data", default=None, help="dataset root (images/ + annotations/ per split)")
    parser.add_argument("--images", nargs="+", default=None, metavar="ITEM",
                        help="instead of --data: image files, folders (recursive), globs or @FILE lists (an image whose "
                             "name starts with @ is passed as ./@name.png)")
    parser.add_argument("--labels", default=None, metavar="DIR",
                        help="with --images: folder of label PNGs, NAME.png for image NAME.ext (sub-folders as below an image "
                             "folder or below a glob's fixed part)")


def dataset_from_args(args: argparse.Namespace, split: str, transform: Any, seed: int | None = None) -> Any:
    """The dataset that ``--data`` (its ``split``) or ``--images`` / ``--labels`` name."""
    from ..common.training.datasets import SegmentationFolderDataset, _read_id2label
    from ..common.images.image_io import expand_named_inputs

    if (args.data is None) == (args.images is None):
        raise ValueError("pass either --data ROOT or --images ITEM... with --labels DIR (exactly one of --data / --images)")
    if args.data is not None:
        if args.labels is not None:
            raise ValueError("--labels goes with --images; with --data the labels are ROOT/annotations/<split>")
        return SegmentationFolderDataset(args.data, split, transform=transform, reduce_labels=args.reduce_labels, seed=seed)
    if args.labels is None:
        raise ValueError("--images needs --labels DIR (the folder of label PNGs)")
    labels = Path(args.labels)
    if not labels.is_dir():
        raise FileNotFoundError(f"--labels {args.labels!r} is not a folder")
    pairs = [(name, path, labels / f"{name}.png") for path, name in expand_named_inputs(args.images, "--images")]
    return SegmentationFolderDataset.from_pairs(pairs, transform=transform, reduce_labels=args.reduce_labels, seed=seed,
                                                id2label=_read_id2label(labels / "id2label.json"))


def check_dataset_files(dataset: Any, count: int | None = None, where: str = "the dataset") -> dict[str, int]:
    """Decode every image and label map of ``dataset`` (the first ``count``) before any work.

    Returns ``{label map path: its largest class index}`` (ignored pixels, 255, excluded; -1 for a map
    with none), which :func:`check_num_labels` checks against a model.
    Raises ``ValueError`` listing every bad file with its reason (missing, unreadable, truncated, not an
    image, wrong label mode, label size differs from the image), or when every pixel of every label map
    is ignored (nothing to train on or to measure: an mIoU of NaN).
    """
    from ..common.training.datasets import load_label
    from ..common.images.image_io import BadImageError, check_image, image_size

    bad: list[str] = []
    largest: dict[str, int] = {}
    total = len(dataset.image_paths) if count is None else min(count, len(dataset.image_paths))
    for image_path, label_path in list(zip(dataset.image_paths, dataset.label_paths))[:total]:
        reason = check_image(image_path)
        if reason is not None:
            bad.append(f"{os.fspath(image_path)}: {reason}")
        try:
            label = load_label(label_path)
        except FileNotFoundError:
            bad.append(f"{os.fspath(label_path)}: label map does not exist (for {os.fspath(image_path)})")
            continue
        except BadImageError as err:
            bad.append(f"{err.path}: label map: {err.reason}")
            continue
        except (OSError, SyntaxError, ValueError) as err:
            bad.append(f"{os.fspath(label_path)}: {err}")
            continue
        if reason is None:
            height, width = image_size(image_path)
            if label.shape != (height, width):
                bad.append(f"{os.fspath(label_path)}: label map is {label.shape[0]}x{label.shape[1]} (HxW) but its image "
                           f"is {height}x{width}")
        if dataset.reduce_labels:
            label = np.where(label == 0, 255, label - 1)
        valid = label[label != 255]
        largest[os.fspath(label_path)] = int(valid.max()) if valid.size else -1
    if bad:
        shown = "\n  ".join(bad[:50]) + (f"\n  ... and {len(bad) - 50} more" if len(bad) > 50 else "")
        raise ValueError(f"{len(bad)} bad file(s) among {total} image / label pairs; nothing was run:\n  {shown}")
    if largest and max(largest.values()) < 0:
        reduced = " after --reduce-labels (class 0 -> ignored, k -> k-1)" if dataset.reduce_labels else ""
        raise ValueError(
            f"every pixel of the {len(largest)} label map(s) of {where} is ignored (255){reduced}: there is nothing to "
            "train on or to measure (the mIoU would be NaN); label maps hold class ids 0..N-1"
            + ("; drop --reduce-labels if 0 is a real class" if dataset.reduce_labels else "")
        )
    return largest


def check_num_labels(num_labels: int, dataset: Any, largest: dict[str, int], where: str, verb: str = "evaluate") -> None:
    """Refuse a model whose ``num_labels`` cannot match the dataset's classes (both numbers in the message),
    naming the label maps with a class id outside ``0..num_labels-1`` (``largest``: :func:`check_dataset_files`)."""
    known = getattr(dataset, "id2label", None)
    if known and len(known) != num_labels:
        raise ValueError(
            f"the model predicts {num_labels} classes but the dataset {where} has {len(known)} (its id2label.json); "
            f"{verb} a model trained on these labels (or fix --reduce-labels)"
        )
    outside = {path: value for path, value in largest.items() if value >= num_labels}
    if outside:
        top = max(outside.values())
        files = ", ".join(f"{path} (class {value})" for path, value in list(outside.items())[:10])
        more = f" and {len(outside) - 10} more" if len(outside) > 10 else ""
        raise ValueError(
            f"the model predicts {num_labels} classes (0..{num_labels - 1}) but the label maps of {where} use class {top}, "
            f"i.e. at least {top + 1} classes (255 is ignored), in {len(outside)} file(s): {files}{more}; {verb} a model with "
            "these labels (--num-labels), or fix the label maps (or use --reduce-labels)"
        )
