"""``segformer export --model M --format F --out PATH``: deployment files, float32 and quantized.

Formats (the framework each needs):

* ``onnx`` (PyTorch): our ONNX export, dynamic batch / height / width.
* ``onnx-int8`` (PyTorch + ONNX Runtime): the same file, static int8 by ONNX Runtime (QDQ), calibrated on
  ``--calibration`` images; ``--int8-mode dynamic`` quantizes weights only (no calibration).
* ``saved-model`` (TensorFlow): a SavedModel folder, dynamic batch / height / width.
* ``tflite`` / ``tflite-fp16`` / ``tflite-int8`` (TensorFlow): a TFLite file for the fixed ``--size``:
  float32, float16 weights, or full-integer int8 calibrated on ``--calibration`` images.

Every file is written atomically. Then it prints the size on disk and a quick check: label-map agreement of
the written file with the float32 model on the calibration images (or the bundled sample photo) and two
random images, at ``--size``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["FORMATS", "add_arguments", "run"]

# format -> (framework, needs calibration with the default --int8-mode, what it is)
FORMATS: dict[str, tuple[str, bool, str]] = {
    "onnx": ("pt", False, "ONNX float32, dynamic batch / height / width"),
    "onnx-int8": ("pt", True, "ONNX Runtime int8 (static QDQ, calibrated), dynamic batch / height / width"),
    "saved-model": ("tf", False, "TensorFlow SavedModel folder, dynamic batch / height / width"),
    "tflite": ("tf", False, "TFLite float32, fixed --size"),
    "tflite-fp16": ("tf", False, "TFLite with float16 weights, fixed --size"),
    "tflite-int8": ("tf", True, "TFLite full-integer int8 (int8 input / output), calibrated, fixed --size"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint folder, preset name (segformer presets) or Hub id")
    parser.add_argument("--format", required=True, choices=list(FORMATS),
                        help="; ".join(f"{name}: {text}" for name, (_, _, text) in FORMATS.items()))
    parser.add_argument("--out", required=True, help="the file (or SavedModel folder) to write")
    parser.add_argument("--calibration", nargs="+", default=None, metavar="IMAGE",
                        help="images for int8 calibration (files, folders, globs, @FILE lists), resized to --size; "
                             "required by onnx-int8 (static) and tflite-int8; 50-200 typical images are plenty")
    parser.add_argument("--calibration-limit", type=int, default=200, metavar="N",
                        help="use at most the first N calibration images (default 200)")
    parser.add_argument("--int8-mode", choices=("static", "dynamic"), default="static",
                        help="onnx-int8: static (calibrated activations, default) or dynamic (weights only, no calibration)")
    parser.add_argument("--size", default="512,512", help="H,W of the example / fixed input and of calibration (default 512,512)")
    parser.add_argument("--full-resolution", action="store_true", help="upsample the logits to the input size inside the graph")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the agreement check against the float32 model")


def _needs_calibration(args: argparse.Namespace) -> bool:
    return FORMATS[args.format][1] and not (args.format == "onnx-int8" and args.int8_mode == "dynamic")


def _processor(model_path: str) -> Any:
    from ..common.images.image_processing import SegformerImageProcessor

    folder = Path(model_path)
    if folder.is_dir() and not (folder / "preprocessor_config.json").is_file():
        return SegformerImageProcessor()
    try:
        return SegformerImageProcessor.from_pretrained(model_path)
    except (FileNotFoundError, OSError, ValueError):
        return SegformerImageProcessor()


def _check_inputs(size: tuple[int, int], calibration: list[np.ndarray] | None, processor: Any) -> tuple[list[np.ndarray], str]:
    from ..common.inference.quantization import calibration_pixel_values, random_pixel_values
    from ..common.images.sample import SAMPLE_IMAGE

    if calibration:
        images, what = calibration[:8], f"{min(len(calibration), 8)} calibration image(s)"
    else:
        images, what = calibration_pixel_values([SAMPLE_IMAGE], size, processor), "the sample photo"
    return images + random_pixel_values(2, size, seed=0), what + " + 2 random images"


def _file_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _runner(fmt: str, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    if fmt in ("onnx", "onnx-int8"):
        from ..common.base.deps import require

        ort = require("onnxruntime", f"segformer export --format {fmt} (the check; --no-check skips it)")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if fmt == "saved-model":
        from ..tf.export import load_saved_model

        run = load_saved_model(path)
        return lambda x: np.asarray(run(x))
    from ..tf.export import TFLiteRunner

    return TFLiteRunner(path)


def run(args: argparse.Namespace) -> int:
    from ..common.base.deps import require, require_framework
    from ..common.inference.quantization import calibration_pixel_values, label_agreement
    from ..common.base.sizes import parse_size
    from .shared import load_model

    fmt = args.format
    framework = FORMATS[fmt][0]
    size = parse_size(args.size, "--size")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {args.out!r} already exists; pass --overwrite to replace it")
    if args.calibration_limit < 1:
        raise ValueError(f"--calibration-limit must be a positive integer, got {args.calibration_limit}")
    if _needs_calibration(args) and not args.calibration:
        raise ValueError(f"--format {fmt} is calibrated int8: pass --calibration IMAGES... (a few dozen of the images "
                         "you will segment, resized to --size)"
                         + ("; or --int8-mode dynamic for weight-only int8 without calibration" if fmt == "onnx-int8" else ""))
    feature = f"segformer export --format {fmt}"
    if framework == "pt":
        require("torch", feature, "or use a TensorFlow format (saved-model, tflite, tflite-fp16, tflite-int8)")
        require("onnx", feature)
        if fmt == "onnx-int8":
            require("onnxruntime", feature)
    else:
        for package in ("tensorflow", "keras"):
            require(package, feature, "or use a PyTorch format (onnx, onnx-int8)")
    require_framework(framework, feature)
    processor = _processor(args.model)
    calibration = None
    if args.calibration:
        calibration = calibration_pixel_values(args.calibration, size, processor, limit=args.calibration_limit,
                                               what="--calibration")
    model = load_model(framework, args.model, command=feature)
    if framework == "pt":
        from ..pt.export import export_onnx
        from ..pt.quantize import export_onnx_int8

        if fmt == "onnx":
            export_onnx(model, out, input_size=size, full_resolution=args.full_resolution, overwrite=args.overwrite)
        else:
            export_onnx_int8(model, out, calibration=calibration, mode=args.int8_mode, input_size=size,
                             full_resolution=args.full_resolution, overwrite=args.overwrite)

        def reference(x: np.ndarray) -> np.ndarray:
            import torch
            import torch.nn.functional as F

            with torch.inference_mode():
                logits = model(torch.from_numpy(x)).logits
                if args.full_resolution:
                    logits = F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)
            return logits.numpy()
    else:
        from ..tf.export import _Serving, export_saved_model, export_tflite

        if fmt == "saved-model":
            export_saved_model(model, out, full_resolution=args.full_resolution, overwrite=args.overwrite)
        else:
            quantization = {"tflite": None, "tflite-fp16": "float16", "tflite-int8": "int8"}[fmt]
            export_tflite(model, out, input_size=size, full_resolution=args.full_resolution, overwrite=args.overwrite,
                          quantization=quantization, representative_data=calibration)
        serving = _Serving(model, "channels_first", args.full_resolution)

        def reference(x: np.ndarray) -> np.ndarray:
            return np.asarray(serving.logits(x))
    size_mb = _file_size(out) / 1e6
    calibrated = f", calibrated on {len(calibration)} image(s)" if calibration and _needs_calibration(args) else ""
    what = FORMATS[fmt][2] if _needs_calibration(args) or fmt != "onnx-int8" else \
        "ONNX Runtime dynamic int8 (weights only), dynamic batch / height / width"
    print(f"wrote {os.fspath(out)} ({what}{calibrated}): {size_mb:.2f} MB on disk")
    if not args.check:
        return 0
    inputs, what = _check_inputs(size, calibration, processor)
    exported = _runner(fmt, out)
    agreements = [label_agreement(reference(x), exported(x)) for x in inputs]
    print(f"label-map agreement with the float32 model on {what}: mean {100 * np.mean(agreements):.2f} %, "
          f"min {100 * min(agreements):.2f} % (at {size[0]}x{size[1]})")
    sys.stdout.flush()
    return 0
