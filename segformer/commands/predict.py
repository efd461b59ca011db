"""``segformer predict``: segment images, write label PNGs and overlays (PyTorch or Keras).

    segformer predict --model runs/b0 photo1.jpg photo2.png --out masks/
    segformer predict --model nvidia-b0-ade --framework tf big.jpg --out masks/ --mode slide

For every input ``NAME.ext`` it writes ``OUT/NAME.png`` (palette PNG: pixel value = class index, shown in
the label set's colours) and ``OUT/NAME_overlay.png`` (the colours blended over the image), each
atomically. Existing outputs are never replaced without ``--overwrite`` (checked for every image before
any work). Masks have the input's resolution. An image larger than ``--max-pixels`` (default 64 megapixels)
is refused in whole-image mode before it is decoded: use ``--mode slide``, which holds one window's
activations at a time (plus the full-resolution logits). ``--check-finite`` (default on) stops with an
error naming the image if any logit is NaN or infinite.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .eval import add_inference_arguments, cli_errors, inference_kwargs, load_model

__all__ = ["DEFAULT_MAX_PIXELS", "add_arguments", "output_paths", "palette_for", "run"]

DEFAULT_MAX_PIXELS = 64_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint folder (config.json + weights)")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--check-finite", dest="check_finite", action="store_true", default=True,
                        help="fail on NaN / Inf logits (default on)")
    parser.add_argument("--no-check-finite", dest="check_finite", action="store_false")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse larger images in whole mode (default {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay mask weight in [0, 1] (default 0.5)")
    parser.add_argument("--palette", default=None,
                        help="ade20k | cityscapes | auto (default: by num_labels: 150 ade20k, 19 cityscapes, else generated)")
    add_inference_arguments(parser)


def palette_for(num_labels: int, name: str | None = None) -> np.ndarray:
    """The colours for ``num_labels`` classes: a named set, or ADE20K (150) / Cityscapes (19) / generated."""
    from ..common.labels import get_palette, make_palette

    if name not in (None, "auto"):
        palette = get_palette(name)
        if len(palette) < num_labels:
            raise ValueError(f"--palette {name!r} has {len(palette)} colours but the model has {num_labels} classes")
        return palette
    if num_labels == 150:
        return get_palette("ade20k")
    if num_labels == 19:
        return get_palette("cityscapes")
    return make_palette(num_labels)


def output_paths(images: list[str], out: Path) -> list[tuple[Path, Path, Path]]:
    """``(image, mask, overlay)`` per input; two inputs with the same stem are an error."""
    seen: dict[str, str] = {}
    result = []
    for image in images:
        path = Path(image)
        if path.stem in seen:
            raise ValueError(f"inputs {seen[path.stem]!r} and {image!r} would both write {path.stem}.png; rename one")
        seen[path.stem] = image
        result.append((path, out / f"{path.stem}.png", out / f"{path.stem}_overlay.png"))
    return result


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"image {os.fspath(path)!r} does not exist")
    with Image.open(path) as image:  # reads the header only
        width, height = image.size
    return height, width


@cli_errors
def run(args: argparse.Namespace) -> int:
    from ..common.datasets import load_image
    from ..common.training import build_eval_transform
    from ..common.viz import overlay, save_mask_png, save_png

    if args.max_pixels < 1:
        raise ValueError(f"--max-pixels must be >= 1, got {args.max_pixels}")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must lie in [0, 1], got {args.alpha}")
    kwargs = inference_kwargs(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {os.fspath(out)!r} exists and is not a folder")
    jobs = output_paths(args.images, out)
    if not args.overwrite:
        existing = [os.fspath(p) for _, mask, over in jobs for p in (mask, over) if p.exists()]
        if existing:
            raise FileExistsError(f"{len(existing)} output(s) already exist, e.g. {existing[:3]}; pass --overwrite to replace them")
    sizes = [_image_size(image) for image, _, _ in jobs]
    if args.mode == "whole":
        for (image, _, _), (height, width) in zip(jobs, sizes):
            if height * width > args.max_pixels:
                raise ValueError(
                    f"image {os.fspath(image)!r} is {height}x{width} = {height * width:,} pixels, above "
                    f"--max-pixels {args.max_pixels:,}; use --mode slide (sliding windows) or raise --max-pixels"
                )
    model = load_model(args.framework, args.model)
    palette = palette_for(model.config.num_labels, args.palette)
    transform = build_eval_transform(args.eval_size)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for (image_path, mask_path, overlay_path), size in zip(jobs, sizes):
        image = load_image(image_path)
        pixel_values, _ = transform(image)
        logits = _logits(args.framework, model, pixel_values[None], size, kwargs)
        if args.check_finite and not np.isfinite(logits).all():
            print(f"error: non-finite logits for {os.fspath(image_path)!r}; nothing written for it", file=sys.stderr)
            failures += 1
            continue
        labels = logits[0].argmax(axis=0).astype(np.int64)
        save_mask_png(mask_path, labels, palette, overwrite=args.overwrite)
        save_png(overlay_path, overlay(image, labels, palette, alpha=args.alpha), overwrite=args.overwrite)
        print(f"{os.fspath(image_path)} -> {os.fspath(mask_path)}, {os.fspath(overlay_path)}")
    return 1 if failures else 0


def _logits(framework: str, model: Any, pixel_values: np.ndarray, size: tuple[int, int], kwargs: dict[str, Any]) -> np.ndarray:
    """Full-resolution logits (or log-probabilities with TTA) ``(1, K, H, W)`` as numpy."""
    if framework == "pt":
        import torch

        from ..pt.inference import predict_logits

        result = predict_logits(model, torch.from_numpy(pixel_values), output_size=size, **kwargs)
        return result.float().numpy()
    from ..tf.inference import predict_logits as tf_predict_logits

    return np.asarray(tf_predict_logits(model, pixel_values, output_size=size, **kwargs))
