"""``segformer bench --mode quant``: label-map agreement and synthetic-set mIoU of every quantized path
against PyTorch float32 (their latency: the deployment rows, ``segformer bench --impls
pt-fast,pt-int8,ort-fp32,ort-int8,hf-ort-fp32,tflite-fp32,tflite-fp16,tflite-int8,tflite-int8-full``).

    segformer bench --mode quant --trained /tmp/segformer_quant/run_b0 --threads 1

A b0 fine-tuned on the synthetic set of benchmarks/TRAINING.md (``trained``; without it one is trained first
with ``train_steps`` steps of the recipe below). Paths: PT float32 fast path, PT dynamic int8 (encoder
linears), ONNX Runtime float32 of our export and its static int8 (QDQ) and dynamic int8 in this CPU's format (and,
on a VNNI / ARM CPU, both also in the ``avx2`` format: 7-bit weights, exact on every x86-64 CPU), TFLite float32 /
float16 weights / int8 convolutions and matrix products / full-integer int8. The int8 paths are calibrated on 16 training images of the synthetic set (the user's
images), resized to the input size. Measured: label-map agreement with PT float32 on the sample photo, 4
random images and the 16 held-out synthetic images (resized: eight times their training scale; worst and mean) at
512x512, and
on the 16 held-out synthetic images at their own 64x64 (mean over the images) with their mIoU, for every path.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _size_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def build_paths(pt_model, work: Path, size, calibration, threads: int | None):
    """{name: (run(x) -> logits numpy, size in MB)} for every path; the files go to ``work``."""
    import onnxruntime as ort
    import torch

    from ..pt.export import export_onnx
    from ..pt.quantize import quantize_dynamic
    from ..common.inference.quantization import cpu_int8_target, quantize_onnx
    from ..tf import TFSegformerForSemanticSegmentation
    from ..tf.export import TFLITE_FORMATS, TFLiteRunner, export_tflite

    from ..common.base.threads import default_threads

    threads = threads or default_threads()  # ONNX Runtime / TFLite: the policy's count too
    work.mkdir(parents=True, exist_ok=True)
    paths = {}

    def torch_run(model):
        def run(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x)).logits.numpy()
        return run

    def saved_mb(model) -> float:  # the size torch.save of the state dict takes, nothing written
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        return buffer.tell() / 1e6

    paths["pt-fp32-fast"] = (torch_run(pt_model), saved_mb(pt_model))
    q = quantize_dynamic(pt_model)
    paths["pt-int8-dynamic"] = (torch_run(q), saved_mb(q))

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1

    def ort_run(path):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]

    export_onnx(pt_model, work / "fp32.onnx", input_size=size)
    paths["ort-fp32"] = (ort_run(work / "fp32.onnx"), _size_mb(work / "fp32.onnx"))
    quantize_onnx(work / "fp32.onnx", work / "int8.onnx", calibration=calibration, mode="static")
    paths["ort-int8-static"] = (ort_run(work / "int8.onnx"), _size_mb(work / "int8.onnx"))
    quantize_onnx(work / "fp32.onnx", work / "int8-dynamic.onnx", mode="dynamic")
    paths["ort-int8-dynamic"] = (ort_run(work / "int8-dynamic.onnx"), _size_mb(work / "int8-dynamic.onnx"))
    if cpu_int8_target() != "avx2":  # the format every x86-64 CPU computes exactly (7-bit weights), for comparison
        for mode in ("static", "dynamic"):
            path = work / f"int8-{mode}-avx2.onnx"
            quantize_onnx(work / "fp32.onnx", path, calibration=calibration if mode == "static" else None,
                          mode=mode, target_cpu="avx2")
            paths[f"ort-int8-{mode}-avx2"] = (ort_run(path), _size_mb(path))
    tf_model = TFSegformerForSemanticSegmentation(pt_model.config)
    tf_model(np.zeros((1, 3, *size), np.float32), training=False)
    tf_model.load_state_dict_numpy({k: v.detach().numpy() for k, v in pt_model.state_dict().items()})
    for fmt, quantization in TFLITE_FORMATS.items():
        name = "tflite-fp32" if fmt == "tflite" else fmt
        path = work / f"{name}.tflite"
        export_tflite(tf_model, path, input_size=size, quantization=quantization,
                      representative_data=calibration if quantization in ("int8", "int8-full") else None)
        paths[name] = (TFLiteRunner(path, num_threads=threads), _size_mb(path))
    return paths


def run_quant(trained: str | None = None, work: str = "/tmp/segformer_quant", train_steps: int = 300,
              threads: int | None = None) -> dict:
    """Agreement and mIoU of every path (printed as a table); returns the JSON-ready report."""
    if trained is not None and not Path(trained).is_dir():
        raise ValueError(f"trained: {trained!r} is not a model folder")
    if isinstance(train_steps, bool) or not isinstance(train_steps, int) or train_steps < 1:
        raise ValueError(f"train_steps must be a positive int, got {train_steps!r}")
    from ..common.base.threads import configure_threads

    configure_threads(threads)  # PT and TF in this one process, the same count
    import torch

    from ..common.training.datasets import load_label, make_synthetic_dataset
    from ..common.training.metrics import SegmentationMetric
    from ..common.inference.quantization import calibration_pixel_values, label_agreement, random_pixel_values
    from ..common.images.sample import SAMPLE_IMAGE
    from ..pt import SegformerForSemanticSegmentation

    folder = Path(work)
    report = {"threads": threads, "load_start": _load()}
    print(f"load average at start: {report['load_start']}", flush=True)
    size = (512, 512)
    data = make_synthetic_dataset(folder / "data", num_train=64, num_val=16, size=(64, 64), num_labels=5)
    if trained is None:
        from ..cli import main as cli

        trained = str(folder / "run_b0")
        code = cli(["train", "--framework", "pt", "--model", "b0", "--num-labels", "5", "--data", str(data), "--out",
                    trained, "--overwrite", "--steps", str(train_steps), "--batch-size", "8", "--crop-size", "64,64",
                    "--img-scale", "64,64", "--ratio-range", "0.75,1.5", "--no-photometric", "--lr", "0.002",
                    "--eval-every", str(train_steps), "--log-every", "50", "--no-progress"])
        if code:
            raise RuntimeError(f"training the b0 to measure failed (exit {code})")
    model = SegformerForSemanticSegmentation.from_pretrained(trained).eval()
    train_images = sorted((Path(data) / "images" / "training").iterdir())[:16]
    val_images = sorted((Path(data) / "images" / "validation").iterdir())
    val_labels = [Path(data) / "annotations" / "validation" / (p.stem + ".png") for p in val_images]
    # 512x512: sample photo, random images, held-out images
    paths512 = build_paths(model, folder / "acc512", size, calibration_pixel_values(train_images, size), threads)
    probes = calibration_pixel_values([SAMPLE_IMAGE], size) + random_pixel_values(4, size, seed=11)
    reference = [paths512["pt-fp32-fast"][0](x) for x in probes]
    agreement = {name: [label_agreement(r, run(x)) for r, x in zip(reference, probes)] for name, (run, _) in paths512.items()}
    held_out = calibration_pixel_values(val_images, size)  # never calibrated on, resized like the user's images
    held_reference = [paths512["pt-fp32-fast"][0](x) for x in held_out]
    held_agreement = {name: [label_agreement(r, run(x)) for r, x in zip(held_reference, held_out)]
                      for name, (run, _) in paths512.items()}
    # 64x64: held-out synthetic set
    paths64 = build_paths(model, folder / "acc64", (64, 64), calibration_pixel_values(train_images, (64, 64)), threads)
    inputs = calibration_pixel_values(val_images, (64, 64))
    labels = [load_label(p) for p in val_labels]
    miou, held_agreement64 = {}, {}
    reference64 = [paths64["pt-fp32-fast"][0](x) for x in inputs]
    for name, (run, _) in paths64.items():
        metric = SegmentationMetric(num_labels=5)
        held_agreement64[name] = []
        for x, label, ref in zip(inputs, labels, reference64):
            logits = torch.from_numpy(np.ascontiguousarray(run(x)))
            held_agreement64[name].append(label_agreement(ref, logits.numpy()))
            up = torch.nn.functional.interpolate(logits, size=label.shape, mode="bilinear", align_corners=False)
            metric.update(up.argmax(1)[0].numpy(), label)
        miou[name] = float(metric.compute()["mean_iou"])
    print(f"\ntrained b0 ({trained}); int8 calibrated on {len(train_images)} synthetic training images")
    print(f"{'path':22s} {'sample photo':>13s} {'random (min)':>13s} {'held-out (min)':>15s} {'(mean)':>7s} "
          f"{'held-out 64':>12s} {'mIoU 64x64':>11s} {'change':>8s} {'MB':>7s}")
    for name in paths512:
        values = agreement[name]
        print(f"{name:22s} {100 * values[0]:12.2f}% {100 * min(values[1:]):12.2f}% {100 * min(held_agreement[name]):14.2f}% "
              f"{100 * np.mean(held_agreement[name]):6.2f}% {100 * np.mean(held_agreement64[name]):11.2f}% "
              f"{miou[name]:11.4f} {miou[name] - miou['pt-fp32-fast']:+8.4f} {paths512[name][1]:7.2f}")
    report["accuracy"] = {"agreement": agreement, "held_out_agreement": held_agreement,
                          "held_out_agreement_64": held_agreement64, "miou": miou, "trained": trained,
                          "size_mb_512": {name: paths512[name][1] for name in paths512}}
    report["load_end"] = _load()
    print(f"\nload average at end: {report['load_end']}")
    return report
