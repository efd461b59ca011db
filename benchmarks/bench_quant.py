"""Quantized inference of b0: latency, size on disk, label-map agreement and synthetic-set mIoU vs float32.

    python benchmarks/bench_quant.py --trained /tmp/segformer_quant/run_b0 --threads 1 --repeats 10

Part 1, latency (b0, 512x512, 150 classes, random weights; timing does not depend on them), one process,
repeats round robin over the implementations (one pass of each per round) after warm-up passes:
PT float32 fast path, PT dynamic int8 (encoder linears), ONNX Runtime float32 of our export, ONNX Runtime
static int8 (QDQ) of it, ONNX Runtime float32 of transformers' export (``torch.onnx.export`` of
``transformers.SegformerForSemanticSegmentation``; skipped with the reason when it cannot be produced),
TFLite float32 / float16 weights / full-integer int8. Sizes on disk: the files (PT: ``torch.save`` of the
state dict).

Part 2, accuracy, on a b0 fine-tuned on the synthetic set of benchmarks/TRAINING.md (``--trained DIR``; without
it the script trains one with ``--train-steps``): label-map agreement with PT float32 on the sample photo and 4
random images at 512x512, and mIoU on the 16 held-out synthetic images (64x64) for every path. The int8 paths
are calibrated on 16 training images of the synthetic set (the user's images), resized to the input size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load(seconds: float = 0.0) -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _size_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def build_paths(pt_model, work: Path, size, calibration, threads: int, hf: bool = False):
    """{name: (run(x) -> logits numpy, size MB or None)} for every implementation."""
    import onnxruntime as ort
    import torch

    from segformer.pt.export import export_onnx
    from segformer.pt.quantize import quantize_dynamic
    from segformer.common.inference.quantization import quantize_onnx
    from segformer.tf import TFSegformerForSemanticSegmentation
    from segformer.tf.export import TFLiteRunner, export_tflite

    work.mkdir(parents=True, exist_ok=True)
    paths = {}
    skipped = {}

    def torch_run(model):
        def run(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x)).logits.numpy()
        return run

    torch.save(pt_model.state_dict(), work / "fp32.pt")
    paths["pt-fp32-fast"] = (torch_run(pt_model), _size_mb(work / "fp32.pt"))
    q = quantize_dynamic(pt_model)
    torch.save(q.state_dict(), work / "int8.pt")
    paths["pt-int8-dynamic"] = (torch_run(q), _size_mb(work / "int8.pt"))

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
    if hf:
        try:
            import transformers

            config = transformers.SegformerConfig(**pt_model.config.to_dict())
            reference = transformers.SegformerForSemanticSegmentation(config).eval()
            missing = reference.load_state_dict(pt_model.state_dict(), strict=False)
            example = torch.from_numpy(calibration[0])

            class Logits(torch.nn.Module):
                def __init__(self, model):
                    super().__init__()
                    self.model = model

                def forward(self, pixel_values):
                    return self.model(pixel_values=pixel_values).logits

            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(Logits(reference).eval(), (example,), str(work / "hf.onnx"), dynamo=False,
                                  input_names=["pixel_values"], output_names=["logits"], opset_version=17,
                                  dynamic_axes={"pixel_values": {0: "batch", 2: "height", 3: "width"}})
            paths["ort-fp32-hf-export"] = (ort_run(work / "hf.onnx"), _size_mb(work / "hf.onnx"))
            if missing.missing_keys or missing.unexpected_keys:
                skipped["hf weights"] = f"not all weights copied: {missing}"
        except Exception as err:  # reported in the table
            skipped["ort-fp32-hf-export"] = f"{type(err).__name__}: {str(err)[:200]}"

    tf_model = TFSegformerForSemanticSegmentation(pt_model.config)
    tf_model(np.zeros((1, 3, *size), np.float32), training=False)
    tf_model.load_state_dict_numpy({k: v.detach().numpy() for k, v in pt_model.state_dict().items()})
    for name, quantization in (("tflite-fp32", None), ("tflite-fp16", "float16"), ("tflite-int8", "int8")):
        path = work / f"{name}.tflite"
        export_tflite(tf_model, path, input_size=size, quantization=quantization,
                      representative_data=calibration if quantization == "int8" else None)
        paths[name] = (TFLiteRunner(path, num_threads=threads), _size_mb(path))
    return paths, skipped


def latency(paths, x, repeats: int, warmup: int):
    for run, _ in paths.values():
        for _ in range(warmup):
            run(x)
    times = {name: [] for name in paths}
    for _ in range(repeats):
        for name, (run, _) in paths.items():
            start = time.perf_counter()
            run(x)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trained", default=None, help="b0 fine-tuned on the synthetic set (else trained here)")
    parser.add_argument("--work", default="/tmp/segformer_quant")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from segformer.common.model.config import SegformerConfig
    from segformer.common.training.datasets import make_synthetic_dataset
    from segformer.common.training.metrics import SegmentationMetric
    from segformer.common.inference.quantization import calibration_pixel_values, label_agreement, random_pixel_values
    from segformer.common.images.sample import SAMPLE_IMAGE
    from segformer.common.model.variants import variant_kwargs
    from segformer.pt import SegformerForSemanticSegmentation

    work = Path(args.work)
    report = {"threads": args.threads, "load_start": _load()}
    print(f"load average at start: {report['load_start']}", flush=True)
    size = (512, 512)
    if not args.skip_latency:
        torch.manual_seed(0)
        model = SegformerForSemanticSegmentation(SegformerConfig(num_labels=150, **variant_kwargs("b0"))).eval()
        calibration = random_pixel_values(4, size, seed=1)
        paths, skipped = build_paths(model, work / "latency", size, calibration, args.threads, hf=True)
        x = random_pixel_values(1, size, seed=7)[0]
        load_before = _load()
        times = latency(paths, x, args.repeats, args.warmup)
        load_after = _load()
        base = statistics.median(times["pt-fp32-fast"])
        print(f"\nb0 512x512, 150 classes, batch 1, {args.threads} thread(s), {args.repeats} repeats round robin after "
              f"{args.warmup} warm-up; load average {load_before} before, {load_after} after")
        print(f"{'path':22s} {'min':>8s} {'median':>8s} {'max':>8s} {'MB':>7s}  speed-up vs pt-fp32-fast (median / min)")
        rows = []
        for name, values in times.items():
            med, lo, hi = statistics.median(values), min(values), max(values)
            speed = f"{base / med:.2f}x / {min(times['pt-fp32-fast']) / lo:.2f}x"
            print(f"{name:22s} {lo:8.1f} {med:8.1f} {hi:8.1f} {paths[name][1]:7.2f}  {speed}")
            rows.append({"path": name, "min_ms": lo, "median_ms": med, "max_ms": hi, "size_mb": paths[name][1], "times_ms": values})
        for name, why in skipped.items():
            print(f"{name:22s} skipped: {why}")
        report["latency"] = {"rows": rows, "skipped": skipped, "load_before": load_before, "load_after": load_after}

    if not args.skip_accuracy:
        data = make_synthetic_dataset(work / "data", num_train=64, num_val=16, size=(64, 64), num_labels=5)
        trained = args.trained
        if trained is None:
            from segformer.cli import main as cli

            trained = str(work / "run_b0")
            code = cli(["train", "--framework", "pt", "--model", "b0", "--num-labels", "5", "--data", str(data), "--out",
                        trained, "--overwrite", "--steps", str(args.train_steps), "--batch-size", "8", "--crop-size", "64,64",
                        "--img-scale", "64,64", "--ratio-range", "0.75,1.5", "--no-photometric", "--lr", "0.002",
                        "--eval-every", str(args.train_steps), "--log-every", "50", "--no-progress"])
            if code:
                return code
        model = SegformerForSemanticSegmentation.from_pretrained(trained).eval()
        train_images = sorted((Path(data) / "images" / "training").iterdir())[:16]
        val_images = sorted((Path(data) / "images" / "validation").iterdir())
        val_labels = [Path(data) / "annotations" / "validation" / (p.stem + ".png") for p in val_images]
        from segformer.common.training.datasets import load_label

        # 512x512: sample photo + random images
        calib512 = calibration_pixel_values(train_images, size)
        paths512, _ = build_paths(model, work / "acc512", size, calib512, args.threads)
        probes = calibration_pixel_values([SAMPLE_IMAGE], size) + random_pixel_values(4, size, seed=11)
        reference = [paths512["pt-fp32-fast"][0](x) for x in probes]
        agreement = {name: [label_agreement(r, run(x)) for r, x in zip(reference, probes)] for name, (run, _) in paths512.items()}
        # 64x64: held-out synthetic set
        calib64 = calibration_pixel_values(train_images, (64, 64))
        paths64, _ = build_paths(model, work / "acc64", (64, 64), calib64, args.threads)
        inputs = calibration_pixel_values(val_images, (64, 64))
        labels = [load_label(p) for p in val_labels]
        miou = {}
        for name, (run, _) in paths64.items():
            metric = SegmentationMetric(num_labels=5)
            for x, label in zip(inputs, labels):
                logits = torch.from_numpy(np.ascontiguousarray(run(x)))
                up = torch.nn.functional.interpolate(logits, size=label.shape, mode="bilinear", align_corners=False)
                metric.update(up.argmax(1)[0].numpy(), label)
            miou[name] = float(metric.compute()["mean_iou"])
        print(f"\ntrained b0 ({trained}); int8 calibrated on {len(train_images)} synthetic training images")
        print(f"{'path':22s} {'sample photo':>13s} {'random (min)':>13s} {'mIoU 64x64':>11s} {'change':>8s}")
        for name in paths512:
            values = agreement[name]
            print(f"{name:22s} {100 * values[0]:12.2f}% {100 * min(values[1:]):12.2f}% {miou[name]:11.4f} "
                  f"{miou[name] - miou['pt-fp32-fast']:+8.4f}")
        report["accuracy"] = {"agreement": agreement, "miou": miou, "trained": trained}
    report["load_end"] = _load()
    print(f"\nload average at end: {report['load_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
