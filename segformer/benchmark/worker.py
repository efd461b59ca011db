"""The worker side of the benchmark: one process per (variant, size, implementation), JSON requests on
stdin, JSON replies on stdout (``python -m segformer.benchmark.worker``). It imports only the framework it
runs."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

from ..common.model.variants import variant_kwargs

from .randomize import randomize_keras, randomize_torch
from .run import DEPLOY_IMPLS, IMPLEMENTATIONS, TRAIN_IMPLS


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def _cuda_peak_mb() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


_memory_mb = _rss_mb  # CUDA workers report the GPU's peak allocated memory instead (set by _build)


def _set_threads(threads: int | None) -> None:
    """``--threads N`` for this worker (both frameworks, imported or not yet: the thread policy's
    :func:`~segformer.common.base.threads.configure_threads`); ``None`` keeps the policy's default."""
    if threads:
        from ..common.base.threads import configure_threads

        configure_threads(threads)


def _build(spec: dict[str, Any]):
    """Return (callable running one forward pass to a finished numpy-able result, library version)."""
    global _memory_mb
    impl = spec["impl"]
    kwargs = variant_kwargs(spec["variant"])
    kwargs["num_labels"] = spec["num_labels"]
    height, width = spec["size"]
    if impl == "matmul":
        return _build_matmul(spec)
    framework = IMPLEMENTATIONS[impl][0]
    _set_threads(spec.get("threads"))
    if impl in DEPLOY_IMPLS:
        return _build_deploy(spec, kwargs)
    batch = int(spec.get("batch", 1))
    if impl in TRAIN_IMPLS:
        return _build_train(spec, kwargs, batch, height, width)
    if framework == "pt":
        import numpy as np
        import torch

        cuda = "cuda" in impl
        if cuda and not torch.cuda.is_available():
            raise ImportError("no CUDA GPU visible to torch")
        torch.manual_seed(0)
        pixel_values = torch.from_numpy(
            np.random.default_rng(0).standard_normal((batch, 3, height, width), dtype=np.float32))
        if impl.startswith("hf-pt"):
            import transformers

            model = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(**kwargs)).eval()
            version = f"transformers {transformers.__version__}, torch {torch.__version__}"
        else:
            from ..common.model.config import SegformerConfig
            from ..pt import SegformerForSemanticSegmentation

            model = SegformerForSemanticSegmentation(SegformerConfig(**kwargs)).eval()
            model.use_fast_path = impl != "pt-plain"
            version = f"segformer, torch {torch.__version__}"
        randomize_torch(model)  # no zero biases / identity norms for a compiler to drop
        if impl == "pt-compile":
            from ..pt.inference import compile_for_inference

            model = compile_for_inference(model)
            version += ", torch.compile inductor (freezing)"
        device = torch.device("cuda" if cuda else "cpu")
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=impl.endswith("bf16"))
        if cuda:
            model, pixel_values = model.to(device), pixel_values.to(device)
            version += f", {torch.cuda.get_device_name(device)}"
            _memory_mb = _cuda_peak_mb

        from ..pt.backend import adapted_threads

        # ours runs as our runners (Segmenter, predict, eval) call it: under the thread policy's per-call count
        threads_now = contextlib.nullcontext if impl.startswith("hf-") else adapted_threads

        def run() -> Any:
            with torch.inference_mode(), autocast, threads_now():
                logits = model(pixel_values).logits
            if cuda:
                torch.cuda.synchronize()
            return logits

        return run, version
    import numpy as np
    import tensorflow as tf

    pixel_values = tf.constant(np.random.default_rng(0).standard_normal((batch, 3, height, width), dtype=np.float32))
    if impl.startswith("hf-"):
        import transformers

        tf.random.set_seed(0)
        model = transformers.TFSegformerForSemanticSegmentation(transformers.SegformerConfig(**kwargs))
        version = f"transformers {transformers.__version__}, tensorflow {tf.__version__}"
    else:
        import keras

        from ..common.model.config import SegformerConfig
        from ..tf import TFSegformerForSemanticSegmentation

        keras.utils.set_random_seed(0)
        model = TFSegformerForSemanticSegmentation(SegformerConfig(**kwargs))
        model.run_eagerly = impl == "tf-opbyop"
        version = f"segformer, keras {keras.__version__}, tensorflow {tf.__version__}"
    model(pixel_values[:, :, :64, :64], training=False)  # builds the variables
    randomize_keras(model)

    def forward(x: Any) -> Any:
        return model(x, training=False).logits

    if impl.endswith("xla"):
        forward = tf.function(forward, jit_compile=True)

    def run_tf() -> Any:
        return forward(pixel_values).numpy()

    return run_tf, version


def _build_deploy(spec: dict[str, Any], kwargs: dict[str, Any]):
    """The deployment paths: PT dynamic int8, ONNX Runtime of our export (float32 / static int8) and of
    transformers' (float32), TFLite float32 / float16 / int8. Files go to a temporary folder."""
    import tempfile

    import numpy as np

    from ..common.model.config import SegformerConfig
    from ..common.base.deps import require
    from ..common.inference.quantization import random_pixel_values

    impl = spec["impl"]
    height, width = spec["size"]
    from ..common.base.threads import default_threads

    threads = spec.get("threads") or default_threads()  # ONNX Runtime / TFLite: the policy's count too
    pixel_values = np.random.default_rng(0).standard_normal((1, 3, height, width), dtype=np.float32)
    calibration = random_pixel_values(4, (height, width), seed=1)
    folder = tempfile.mkdtemp(prefix=f"segformer-bench-{impl}-")
    config = SegformerConfig(**kwargs)
    if impl.startswith("tflite"):
        import keras
        import tensorflow as tf

        from ..tf import TFSegformerForSemanticSegmentation
        from ..tf.export import TFLITE_FORMATS, TFLiteRunner, export_tflite

        keras.utils.set_random_seed(0)
        model = TFSegformerForSemanticSegmentation(config)
        model(pixel_values[:, :, :64, :64], training=False)  # builds the variables
        randomize_keras(model)  # the converter would fold zero biases and identity norms away
        quantization = TFLITE_FORMATS["tflite" if impl == "tflite-fp32" else impl]
        path = export_tflite(model, os.path.join(folder, "model.tflite"), input_size=(height, width),
                             quantization=quantization, representative_data=calibration)
        runner = TFLiteRunner(path, num_threads=threads)
        return (lambda: runner(pixel_values)), f"tflite (tensorflow {tf.__version__}), {os.path.getsize(path) / 1e6:.2f} MB"
    import torch

    torch.manual_seed(0)
    if impl == "hf-ort-fp32":
        import transformers

        model = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(**kwargs)).eval()
        version = f"transformers {transformers.__version__}"
    else:
        from ..pt import SegformerForSemanticSegmentation

        model = SegformerForSemanticSegmentation(config).eval()
        version = "segformer"
    randomize_torch(model)  # the exporters would fold zero biases and identity norms away
    if impl == "pt-int8":
        from ..pt.quantize import quantize_dynamic

        quantized = quantize_dynamic(model)
        x = torch.from_numpy(pixel_values)

        def run() -> Any:
            with torch.inference_mode():
                return quantized(x).logits

        return run, f"{version}, torch {torch.__version__}"
    ort = require("onnxruntime", f"segformer bench --impls {impl}")
    path = os.path.join(folder, "model.onnx")
    if impl == "hf-ort-fp32":
        import warnings

        class Logits(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: Any) -> Any:
                return self.inner(pixel_values=x).logits

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Logits(model).eval(), (torch.from_numpy(pixel_values),), path, dynamo=False,
                              input_names=["pixel_values"], output_names=["logits"], opset_version=17)
    elif impl == "ort-fp32":
        from ..pt.export import export_onnx

        export_onnx(model, path, input_size=(height, width))
    else:
        from ..pt.quantize import export_onnx_int8

        export_onnx_int8(model, path, calibration=calibration, input_size=(height, width))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    size_mb = os.path.getsize(path) / 1e6

    def run_ort() -> Any:
        return session.run(None, {"pixel_values": pixel_values})[0]

    return run_ort, f"{version}, onnxruntime {ort.__version__}, {size_mb:.2f} MB"


def _build_train(spec: dict[str, Any], kwargs: dict[str, Any], batch: int, height: int, width: int):
    """One training step (forward with labels, loss, backward, AdamW update) as each library trains:
    ours with its trainer's optimizer (the recipe's parameter groups), transformers with
    ``torch.optim.AdamW``, Keras as the TF trainer's ``tf.function`` step. Random weights, random labels."""
    import numpy as np

    from ..common.model.config import SegformerConfig
    from ..common.training.recipe import TrainConfig

    impl = spec["impl"]
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((batch, 3, height, width), dtype=np.float32)
    labels = rng.integers(0, kwargs["num_labels"], (batch, height, width)).astype(np.int64)
    recipe = TrainConfig()
    if impl == "tf-train":
        import keras
        import tensorflow as tf

        from ..tf import TFSegformerForSemanticSegmentation
        from ..tf.training import build_optimizer as tf_optimizer

        keras.utils.set_random_seed(0)
        model = TFSegformerForSemanticSegmentation(SegformerConfig(**kwargs))
        model(tf.constant(pixels[:1, :, :64, :64]), training=False)  # build the variables
        optimizer = tf_optimizer(model, recipe)
        x, y = tf.constant(pixels), tf.constant(labels)

        @tf.function
        def step() -> Any:
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(model(x, labels=y, training=True).loss)
            variables = model.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        return (lambda: float(step())), f"segformer, keras {keras.__version__}, tensorflow {tf.__version__}"
    import torch

    torch.manual_seed(0)
    x, y = torch.from_numpy(pixels), torch.from_numpy(labels)
    if impl == "hf-pt-train":
        import transformers

        model = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(**kwargs)).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=recipe.betas, eps=recipe.eps,
                                      weight_decay=recipe.weight_decay)
        version = f"transformers {transformers.__version__}, torch {torch.__version__}"
    else:
        from ..pt import SegformerForSemanticSegmentation
        from ..pt.training import build_optimizer as pt_optimizer

        model = SegformerForSemanticSegmentation(SegformerConfig(**kwargs)).train()
        optimizer = pt_optimizer(model, recipe)
        version = f"segformer, torch {torch.__version__}"

    from ..pt.backend import adapted_threads

    threads_now = contextlib.nullcontext if impl == "hf-pt-train" else adapted_threads  # as our trainer's steps

    def run() -> Any:
        with threads_now():
            loss = model(pixel_values=x, labels=y).loss
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return run, version


def _build_matmul(spec: dict[str, Any]):
    n = int(spec.get("matmul_size", 2048))
    try:
        import torch

        _set_threads(spec.get("threads"))
        a = torch.randn(n, n)
        b = torch.randn(n, n)
        version = f"torch {torch.__version__} mm {n}x{n}"

        def run() -> Any:
            return torch.mm(a, b)

    except ImportError:
        import numpy as np

        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
        version = f"numpy {np.__version__} dot {n}x{n}"

        def run() -> Any:
            return a @ b

    return run, version


def worker_main(stdin: Any = None) -> int:
    """Worker loop: JSON requests on stdin, JSON replies on the original stdout (anything the libraries
    print goes to stderr). Requests: ``{"cmd": "setup", ...spec}``, ``{"cmd": "run", "n": k}``,
    ``{"cmd": "quit"}``."""
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # library chatter on stdout would corrupt the protocol
    replies = os.fdopen(reply_fd, "w", buffering=1)
    stdin = stdin or sys.stdin
    run = None

    def send(obj: dict) -> None:
        replies.write(json.dumps(obj) + "\n")
        replies.flush()

    for line in stdin:
        request = json.loads(line)
        cmd = request.get("cmd")
        try:
            if cmd == "setup":
                rss_start = _memory_mb()
                start = time.perf_counter()
                try:
                    run, version = _build(request)
                except ImportError as err:
                    send({"ok": False, "skip": f"{type(err).__name__}: {err}"})
                    continue
                rss_model = _memory_mb()
                for _ in range(int(request.get("warmup", 1))):
                    run()
                send(
                    {
                        "ok": True,
                        "version": version,
                        "python": sys.executable,
                        "setup_s": time.perf_counter() - start,
                        "rss_start_mb": rss_start,
                        "rss_model_mb": rss_model,
                        "rss_after_warmup_mb": _memory_mb(),
                    }
                )
            elif cmd == "run":
                times = []
                for _ in range(int(request.get("n", 1))):
                    start = time.perf_counter()
                    run()
                    times.append(time.perf_counter() - start)
                send({"ok": True, "times": times, "peak_rss_mb": _memory_mb()})
            elif cmd == "quit":
                send({"ok": True, "peak_rss_mb": _memory_mb()})
                return 0
            else:
                send({"ok": False, "error": f"unknown command {cmd!r}"})
        except Exception as err:  # reported to the orchestrator, which records it
            send({"ok": False, "error": f"{type(err).__name__}: {err}"})
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
