"""``segformer demo``: one model, two frameworks, one set of numbers, on the bundled sample photo.

1. Build a SegFormer in PyTorch: ``--model DIR`` (a Hugging Face-layout folder), or a b0 with seeded
   random weights (every tensor, LayerNorm and BatchNorm statistics included) and the ADE20K labels.
2. Run it on the sample image (the processor's 512x512 resize by default).
3. Convert it to TensorFlow through the same code as ``segformer convert`` (verified before it writes;
   into a temporary folder, or ``--tf-out DIR`` to keep it), load the TF model from that folder, run it.
4. Print the parity table (max |diff| of the logits, agreement of the argmax masks, and per framework the
   median time of the warm forward calls with the first calls, which carry tracing and allocation, apart)
   and write the colorized mask, the label PNG and the overlay to ``--out`` (default ``./segformer-demo``).

Exit status 0 when the frameworks agree (logits within ``--tolerance``), 1 otherwise, 2 for bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["OUTPUT_NAMES", "CallTimes", "add_arguments", "run", "seeded_state", "time_calls"]

OUTPUT_NAMES = ("mask.png", "labels.png", "overlay.png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="DIR",
                        help="a Hugging Face-layout segmentation checkpoint folder (default: b0 with seeded weights)")
    parser.add_argument("--out", default="segformer-demo", metavar="DIR", help="where the PNGs go (default ./segformer-demo)")
    parser.add_argument("--tf-out", default=None, metavar="DIR",
                        help="keep the converted TF checkpoint folder here (default: a temporary folder)")
    parser.add_argument("--size", type=int, default=512, help="square processor resize (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random b0 weights (default 0)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted logits max |diff| (default 1e-4)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing PNGs in --out and an existing --tf-out folder")


def seeded_state(config, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random values for every tensor of the canonical table (norms and BN statistics too).

    Identity norms and zero BN statistics would let a swapped or dropped tensor go unnoticed; random
    ones make the parity table mean something.
    """
    from ..common.model.weights import parameter_table

    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    for spec in parameter_table(config, "semantic_segmentation"):
        if spec.kind == "counter":
            state[spec.name] = np.array(0, dtype=np.int64)
            continue
        if spec.kind in ("linear", "conv", "dwconv"):
            fan_in = int(np.prod(spec.shape[1:]))
            value = rng.normal(0.0, float(np.clip(1.0 / np.sqrt(fan_in), 0.02, 0.2)), spec.shape)
        elif spec.kind == "norm_weight":
            value = 1.0 + rng.normal(0.0, 0.1, spec.shape)
        elif spec.kind == "bn_var":
            value = rng.uniform(0.5, 1.5, spec.shape)
        else:
            value = rng.normal(0.0, 0.1, spec.shape)
        state[spec.name] = value.astype(np.float32)
    return state


def _palette(config) -> tuple[np.ndarray, str]:
    from ..common.images.labels import resolve_palette

    return resolve_palette(config.num_labels, id2label=config.id2label, palette=config.extra.get("palette"))


FIRST_CALLS = 2  # Keras runs the first inference call op by op and traces its tf.function graph in the second
WARM_CALLS = 3


@dataclass
class CallTimes:
    """Seconds of each call of one forward: the first ``FIRST_CALLS`` apart, then the warm ones."""

    first: list[float]
    warm: list[float]

    @property
    def warm_median(self) -> float:
        return float(np.median(self.warm))


def time_calls(function: Callable[[], Any], first_calls: int = FIRST_CALLS, warm_calls: int = WARM_CALLS,
               clock: Callable[[], float] = time.perf_counter) -> tuple[Any, CallTimes]:
    """Call ``function`` ``first_calls + warm_calls`` times; the last result and every call's seconds.

    The first calls carry the one-time costs (graph tracing, allocator growth, lazy initialization) and are
    reported apart; the warm calls are what a running application sees. Both frameworks go through here.
    """
    seconds = []
    result = None
    for _ in range(first_calls + warm_calls):
        start = clock()
        result = function()
        seconds.append(clock() - start)
    return result, CallTimes(first=seconds[:first_calls], warm=seconds[first_calls:])


def _timing_rows(framework: str, times: CallTimes) -> list[tuple[str, str, str]]:
    warm = times.warm
    first = ", ".join(f"{s * 1000:.1f}" for s in times.first)
    return [
        (f"time per forward, {framework}", f"{times.warm_median * 1000:.1f} ms",
         f"median of {len(warm)} warm calls (min {min(warm) * 1000:.1f}, max {max(warm) * 1000:.1f} ms)"),
        (f"first calls, {framework}", f"{first} ms",
         f"calls 1-{len(times.first)}, not in the median: one-time costs (allocation, Keras graph tracing)"),
    ]


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..common.base.errors import DOCUMENTED_ERRORS
    from ..common.images.image_processing import SegformerImageProcessor, post_process_semantic_segmentation
    from ..common.images.sample import SAMPLE_IMAGE, load_sample_image
    from ..common.images.viz import colorize, overlay, save_mask_png, save_png
    from ..conversion import VerificationError, convert
    from .shared import random_variant_config

    from ..common.base.deps import require

    try:
        for package in ("torch", "tensorflow", "keras"):
            require(package, "segformer demo (runs PyTorch and TensorFlow side by side)")
        import torch

        from ..pt import SegformerForSemanticSegmentation
        from ..tf import TFSegformerForSemanticSegmentation
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        print(f"error: --out {os.fspath(out_dir)!r} exists and is not a folder", file=sys.stderr)
        return 2
    existing = [os.fspath(out_dir / name) for name in OUTPUT_NAMES if (out_dir / name).exists()]
    if existing and not args.overwrite:
        print(f"error: {len(existing)} output(s) already exist, e.g. {existing[:3]}; pass --overwrite to replace them",
              file=sys.stderr)
        return 2

    print(f"segformer {__version__}: PyTorch {torch.__version__} -> convert -> TensorFlow/Keras, on {SAMPLE_IMAGE.name}")
    image = load_sample_image()
    try:
        processor = SegformerImageProcessor(size={"height": args.size, "width": args.size})
        pixel_values = processor(image, return_tensors="np")["pixel_values"]
        if args.model is None:
            config = random_variant_config("b0")
            model_pt = SegformerForSemanticSegmentation(config)
            model_pt.load_state_dict_numpy(seeded_state(config, args.seed))
            model_pt.eval()
            source_text = f"SegFormer-b0, seeded random weights (seed {args.seed}), ADE20K labels"
        else:
            model_pt = SegformerForSemanticSegmentation.from_pretrained(args.model)
            config = model_pt.config
            source_text = f"{args.model}"
    except DOCUMENTED_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"model: {source_text}; depths {config.depths}, hidden sizes {config.hidden_sizes}, {config.num_labels} labels")
    print(f"input: image {image.shape[1]}x{image.shape[0]} -> pixel_values {tuple(pixel_values.shape)}")

    with torch.no_grad():
        logits_pt_t, times_pt = time_calls(lambda: model_pt(torch.from_numpy(pixel_values)).logits)
    logits_pt = logits_pt_t.numpy()

    with tempfile.TemporaryDirectory(prefix="segformer-demo-") as work:
        pt_dir = Path(work) / "pt"
        tf_dir = Path(args.tf_out) if args.tf_out else Path(work) / "tf"
        model_pt.save_pretrained(pt_dir)
        print("converting PyTorch -> TensorFlow (the `segformer convert` code path: verify, then write) ...", flush=True)
        try:
            report = convert(pt_dir, tf_dir, to="tf", overwrite=args.overwrite, tolerance=args.tolerance)
        except VerificationError as err:
            print(str(err.report), file=sys.stderr)
            print(f"error: {err.args[0].splitlines()[0]}", file=sys.stderr)
            return 1
        except DOCUMENTED_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        model_tf = TFSegformerForSemanticSegmentation.from_pretrained(tf_dir)
        logits_tf, times_tf = time_calls(lambda: np.asarray(model_tf(pixel_values, training=False).logits))
        del model_tf

    diff = float(np.max(np.abs(logits_pt.astype(np.float64) - logits_tf.astype(np.float64))))
    height, width = image.shape[:2]
    mask_pt = post_process_semantic_segmentation(logits_pt, target_sizes=[(height, width)])[0]
    mask_tf = post_process_semantic_segmentation(logits_tf, target_sizes=[(height, width)])[0]
    agree_native = float(np.mean(logits_pt.argmax(1) == logits_tf.argmax(1))) * 100.0
    agree_full = float(np.mean(mask_pt == mask_tf)) * 100.0
    ok = diff <= args.tolerance

    print()
    print("conversion checks (PT model vs TF model loaded from the written tf_model.h5, seeded inputs):")
    print("  " + report.table().replace("\n", "\n  "))
    print()
    print(f"parity on the sample image ({tuple(logits_pt.shape)} logits):")
    rows = [
        ("logits max |diff| PT vs TF", f"{diff:.3e}", "ok" if ok else f"ABOVE {args.tolerance:g}"),
        ("argmax agreement at H/4 x W/4", f"{agree_native:.4f} %", ""),
        (f"argmax agreement at {height}x{width}", f"{agree_full:.4f} %", ""),
        *_timing_rows("PyTorch", times_pt),
        *_timing_rows("TensorFlow", times_tf),
    ]
    for name, value, note in rows:
        print(f"  {name:<34} {value:>18}  {note}")

    palette, palette_name = _palette(config)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        mask_path, labels_path, overlay_path = (out_dir / name for name in OUTPUT_NAMES)
        save_png(mask_path, colorize(mask_pt, palette), overwrite=args.overwrite)
        save_mask_png(labels_path, mask_pt, palette, overwrite=args.overwrite)
        save_png(overlay_path, overlay(image, mask_pt, palette, alpha=0.5), overwrite=args.overwrite)
    except (OSError, *DOCUMENTED_ERRORS) as err:
        print(f"error: writing the pictures to {os.fspath(out_dir)!r}: {err}", file=sys.stderr)
        return 2
    counts = np.bincount(mask_pt.ravel(), minlength=config.num_labels)
    top = [int(i) for i in np.argsort(counts)[::-1][:3] if counts[i]]
    print()
    print("most frequent classes (PyTorch mask): " + ", ".join(f"{config.id2label[i]!r} {100 * counts[i] / mask_pt.size:.1f} %" for i in top))
    print(f"wrote {mask_path} (colorized, {palette_name} palette), {labels_path} (class ids), {overlay_path}")
    if args.tf_out:
        print(f"kept the converted TensorFlow checkpoint in {args.tf_out}")
    if not ok:
        print(f"error: PyTorch and TensorFlow logits differ by {diff:.3e} > {args.tolerance:g}", file=sys.stderr)
    return 0 if ok else 1
