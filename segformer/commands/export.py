"""``segformer export --model M --format F --out PATH``: deployment files, float32 and quantized.

Formats (the framework each needs):

* ``onnx`` (PyTorch): our ONNX export, dynamic batch / height / width.
* ``onnx-int8`` (PyTorch + ONNX Runtime): the same file, static int8 by ONNX Runtime (QDQ), calibrated on
  ``--calibration`` images; ``--int8-mode dynamic`` quantizes weights only (no calibration). ``--target-cpu``
  picks the integer format for the CPU that will run the file (``auto``: this one; ``avx2`` is safe on
  every x86-64 CPU, ``vnni`` only on x86-64 CPUs with VNNI; ``segformer.common.inference.quantization``).
* ``saved-model`` (TensorFlow): a SavedModel folder, dynamic batch / height / width.
* ``tflite`` / ``tflite-fp16`` / ``tflite-int8`` / ``tflite-int8-full`` (TensorFlow): a TFLite file for the
  fixed ``--size``: float32, float16 weights, int8 convolutions and matrix products (the first convolution and
  the elementwise ops float, float32 input / output), or full-integer int8 (every op, int8 input / output, for
  integer-only accelerators); the int8 ones calibrated on ``--calibration`` images.

The file is built beside ``--out`` and checked before it is put in place: label-map agreement with the
float32 model on the calibration images (the first 8; without any, the bundled sample photo), at ``--size``,
with this machine's kernels. Below ``--min-agreement`` (percent of pixels, default 99) nothing is written,
the layers that lose most are named and the exit status is 1, unless ``--accept-low-agreement``. Two random
images are measured too and printed (information only: their activations lie outside the calibrated
ranges). ``--no-check`` skips the check.

A checkpoint without a trained decode head (base or classification weights) is refused unless
``--allow-random-head``: its masks, and an agreement measured on them, would mean nothing. ``--out`` is never
one of the inputs, inside one or containing one, whatever the flags.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
    "tflite-int8": ("tf", True, "TFLite int8 convolutions / matrix products (float32 input / output), calibrated, "
                                "fixed --size"),
    "tflite-int8-full": ("tf", True, "TFLite full-integer int8 (int8 input / output), calibrated, fixed --size"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..common.inference.quantization import DEFAULT_MIN_AGREEMENT, INT8_TARGETS, ONNX_INT8_MODES

    parser.add_argument("--model", required=True, help="checkpoint folder, preset name (segformer presets) or Hub id")
    parser.add_argument("--format", required=True, choices=list(FORMATS),
                        help="; ".join(f"{name}: {text}" for name, (_, _, text) in FORMATS.items()))
    parser.add_argument("--out", required=True, help="the file (or SavedModel folder) to write")
    parser.add_argument("--calibration", nargs="+", default=None, metavar="IMAGE",
                        help="images for int8 calibration (files, folders, globs, @FILE lists), resized to --size; "
                             "required by onnx-int8 (static), tflite-int8 and tflite-int8-full; 50-200 typical images are plenty")
    parser.add_argument("--calibration-limit", type=int, default=200, metavar="N",
                        help="use at most the first N calibration images (default 200)")
    parser.add_argument("--int8-mode", choices=list(ONNX_INT8_MODES), default="static",
                        help="onnx-int8: static (calibrated activations, default) or dynamic (weights only, no calibration)")
    parser.add_argument("--target-cpu", choices=list(INT8_TARGETS), default="auto",
                        help="onnx-int8: the CPU that will run the file, which may not be this one. avx2: 7-bit weights, "
                             "correct on every x86-64 CPU; vnni: 8-bit weights, only for x86-64 CPUs with AVX512-VNNI / "
                             "AVX-VNNI (elsewhere int16 sums saturate); arm: int8 activations (ARM64); auto (default): "
                             "this machine's")
    parser.add_argument("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT, metavar="PERCENT",
                        help="the least label-map agreement with the float32 model, in percent of the pixels of the "
                             "check images, below which nothing is written and the exit status is 1 "
                             f"(default {DEFAULT_MIN_AGREEMENT:g})")
    parser.add_argument("--accept-low-agreement", action="store_true",
                        help="write the file even when its agreement is below --min-agreement (exit status 0)")
    parser.add_argument("--size", default="512,512", help="H,W of the example / fixed input and of calibration (default 512,512)")
    parser.add_argument("--full-resolution", action="store_true", help="upsample the logits to the input size inside the graph")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out (never an input)")
    parser.add_argument("--allow-random-head", action="store_true",
                        help="export a checkpoint whose decode head is not trained (base / classification weights); "
                             "its agreement check then compares two copies of the same random head")
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
    """The images the agreement floor is measured on, and how to name them."""
    from ..common.inference.quantization import calibration_pixel_values
    from ..common.images.sample import SAMPLE_IMAGE

    if calibration:
        return calibration[:8], f"{min(len(calibration), 8)} calibration image(s)"
    return calibration_pixel_values([SAMPLE_IMAGE], size, processor), "the sample photo"


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


# onnx-int8: the float32 export it is quantized from, kept in the staging folder for the layer comparison (in a
# sub-folder, so that no --out name can be the same path)
_FLOAT_SOURCE = Path("float32-source", "model.onnx")


def _layer_losses(fmt: str, staging: Path, written: Path, model: Any, size: tuple[int, int], args: argparse.Namespace,
                  pixel_values: np.ndarray) -> list[tuple[str, float]]:
    """The layers of the int8 file that lose most against float32 (on the worst check image); ``[]`` for
    the float formats."""
    if fmt == "onnx-int8":
        from ..common.inference.quantization import onnx_layer_losses

        return onnx_layer_losses(staging / _FLOAT_SOURCE, written, pixel_values)
    if fmt in ("tflite-int8", "tflite-int8-full"):
        from ..tf.export import tflite_layer_losses

        return tflite_layer_losses(model, written, pixel_values, input_size=size, full_resolution=args.full_resolution)
    return []


def _put_in_place(written: Path, out: Path) -> None:
    from ..common.base.atomic import replace_folder

    if written.is_dir():
        replace_folder(written, out)
    else:
        os.replace(written, out)


def _inputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """What the export reads: ``--model`` (a local folder or file) and the ``--calibration`` items (files,
    folders, ``@FILE`` lists and the files they name, the files a glob matches)."""
    from ..common.images.image_io import expand_named_inputs

    inputs = [("--model", args.model)]
    for item in args.calibration or []:
        inputs.append(("--calibration", item[1:] if item.startswith("@") else item))
        try:
            inputs.extend(("--calibration", os.fspath(path)) for path, _ in expand_named_inputs([item], "--calibration"))
        except (ValueError, FileNotFoundError, OSError):
            pass  # reported with its reason when the calibration images are read
    return inputs


def run(args: argparse.Namespace) -> int:
    from ..common.base.atomic import temp_folder_for
    from ..common.base.deps import require, require_framework
    from ..common.inference.quantization import calibration_pixel_values
    from ..common.base.sizes import parse_size
    from .shared import load_model, refuse_output_over_inputs

    fmt = args.format
    framework = FORMATS[fmt][0]
    size = parse_size(args.size, "--size")
    out = Path(args.out)
    refuse_output_over_inputs(out, "--out", _inputs(args), "segformer export")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {args.out!r} already exists; pass --overwrite to replace it")
    if args.calibration_limit < 1:
        raise ValueError(f"--calibration-limit must be a positive integer, got {args.calibration_limit}")
    floor = args.min_agreement
    if not 0.0 <= floor <= 100.0:
        raise ValueError(f"--min-agreement is a percentage of pixels, 0 to 100, got {args.min_agreement:g}")
    if args.target_cpu != "auto" and fmt != "onnx-int8":
        raise ValueError(f"--target-cpu {args.target_cpu} applies to --format onnx-int8 only, got --format {fmt} "
                         "(TFLite's int8 kernels accumulate in int32 on every CPU)")
    if _needs_calibration(args) and not args.calibration:
        raise ValueError(f"--format {fmt} is calibrated int8: pass --calibration IMAGES... (a few dozen of the images "
                         "you will segment, resized to --size)"
                         + ("; or --int8-mode dynamic for weight-only int8 without calibration" if fmt == "onnx-int8" else ""))
    feature = f"segformer export --format {fmt}"
    if framework == "pt":
        require("torch", feature, "or use a TensorFlow format (saved-model, tflite, tflite-fp16, tflite-int8, tflite-int8-full)")
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
    model = load_model(framework, args.model, command=feature, allow_random_head=args.allow_random_head)
    staging = temp_folder_for(out)
    try:
        return _export_and_check(args, fmt, framework, size, out, staging, model, calibration, processor, floor)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _export_and_check(args: argparse.Namespace, fmt: str, framework: str, size: tuple[int, int], out: Path,
                      staging: Path, model: Any, calibration: list[np.ndarray] | None, processor: Any,
                      floor: float) -> int:
    from ..common.inference.quantization import cpu_int8_target, label_agreement, onnx_int8_format, random_pixel_values
    from ..segmenter import backend_module

    written = staging / out.name
    target_note = ""
    if framework == "pt":
        from ..pt.export import export_onnx

        if fmt == "onnx":
            export_onnx(model, written, input_size=size, full_resolution=args.full_resolution)
        else:
            from ..common.inference.quantization import quantize_onnx

            form = onnx_int8_format(args.target_cpu)
            (staging / _FLOAT_SOURCE).parent.mkdir()
            float_path = export_onnx(model, staging / _FLOAT_SOURCE, input_size=size,
                                     full_resolution=args.full_resolution)
            quantize_onnx(float_path, written, calibration=calibration, mode=args.int8_mode,
                          target_cpu=form["target"])
            here = cpu_int8_target()
            target_note = f"; for --target-cpu {form['target']}: {form['description']}"
            if form["target"] != here:
                target_note += f" (this machine is {here}: the check below runs this machine's kernels)"
    else:
        from ..tf.export import TFLITE_FORMATS, export_saved_model, export_tflite

        if fmt == "saved-model":
            export_saved_model(model, written, full_resolution=args.full_resolution)
        else:
            quantization = TFLITE_FORMATS[fmt]
            export_tflite(model, written, input_size=size, full_resolution=args.full_resolution,
                          quantization=quantization, representative_data=calibration)
    backend = backend_module(framework).Backend(model)  # the float32 model's logits, as Segmenter runs it

    def reference(x: np.ndarray) -> np.ndarray:
        return backend.logits(x, full_resolution=args.full_resolution)

    size_mb = _file_size(written) / 1e6
    calibrated = f", calibrated on {len(calibration)} image(s)" if calibration and _needs_calibration(args) else ""
    what = FORMATS[fmt][2] if _needs_calibration(args) or fmt != "onnx-int8" else \
        "ONNX Runtime dynamic int8 (weights only), dynamic batch / height / width"
    if not args.check:
        _put_in_place(written, out)
        print(f"wrote {os.fspath(out)} ({what}{calibrated}{target_note}): {size_mb:.2f} MB on disk")
        return 0
    inputs, named = _check_inputs(size, calibration, processor)
    exported = _runner(fmt, written)
    agreements = [label_agreement(reference(x), exported(x)) for x in inputs]
    extra = [label_agreement(reference(x), exported(x)) for x in random_pixel_values(2, size, seed=0)]
    measured = 100 * float(np.mean(agreements))
    line = (f"label-map agreement with the float32 model on {named}: mean {measured:.2f} %, "
            f"min {100 * min(agreements):.2f} % (at {size[0]}x{size[1]}; floor {floor:g} %); "
            f"2 random images (not checked): mean {100 * np.mean(extra):.2f} %")
    if measured < floor:
        worst = inputs[int(np.argmin(agreements))]
        losses = _layer_losses(fmt, staging, written, model, size, args, worst)
        where = ("; the layers that lose most (RMS error of their output over its largest float32 value, where it grows): "
                 + ", ".join(f"{name} {error:.3f}" for name, error in losses)) if losses else ""
        if not args.accept_low_agreement:
            print(line)
            sys.stdout.flush()
            hints = "more (and more typical) --calibration images"
            if fmt == "onnx-int8":
                hints += ", --int8-mode dynamic, or --target-cpu for the CPU that will run it"
            print(f"error: label-map agreement {measured:.2f} % with the float32 model on {named} is below the floor "
                  f"--min-agreement {floor:g} %{where}; {os.fspath(out)} was not written. Pass --accept-low-agreement "
                  f"to write it anyway, or try {hints}", file=sys.stderr)
            return 1
        line += f"; below the floor, accepted (--accept-low-agreement){where}"
    del exported  # the runner's open file, before the rename
    _put_in_place(written, out)
    print(f"wrote {os.fspath(out)} ({what}{calibrated}{target_note}): {size_mb:.2f} MB on disk")
    print(line)
    sys.stdout.flush()
    return 0
