"""The benchmark's orchestration: the implementations, the workers it starts, the round-robin repeats,
the report (:func:`run_benchmark`)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..common.base.threads import THREAD_VARIABLES, WAIT_VARIABLES, available_cpus, thread_environment
from ..common.model.variants import variant_kwargs
from .contention import competing_processes


# name -> (framework, description)
IMPLEMENTATIONS: dict[str, tuple[str, str]] = {
    "pt-fast": ("pt", "ours PyTorch, eval fast path (folded head, SDPA)"),
    "pt-plain": ("pt", "ours PyTorch, plain path (use_fast_path=False)"),
    "pt-compile": ("pt", "ours PyTorch, eval fast path under torch.compile (inductor, freezing); setup_s includes the compile"),
    "hf-pt": ("pt", "transformers SegformerForSemanticSegmentation (PyTorch)"),
    "pt-cuda": ("pt", "ours PyTorch fast path on the CUDA GPU, float32"),
    "pt-cuda-bf16": ("pt", "ours PyTorch fast path on the CUDA GPU, bf16 autocast"),
    "hf-pt-cuda": ("pt", "transformers SegformerForSemanticSegmentation on the CUDA GPU, float32"),
    "hf-pt-cuda-bf16": ("pt", "transformers SegformerForSemanticSegmentation on the CUDA GPU, bf16 autocast"),
    "tf-eager": ("tf", "ours Keras 3 / TensorFlow, called eagerly (from the 2nd call a cached graph, no XLA)"),
    "tf-opbyop": ("tf", "ours Keras 3 / TensorFlow, run_eagerly=True (op by op, as the reference's eager call)"),
    "tf-xla": ("tf", "ours Keras 3 / TensorFlow, tf.function(jit_compile=True)"),
    "hf-tf": ("tf", "transformers 4.x TFSegformerForSemanticSegmentation, eager"),
    "hf-tf-xla": ("tf", "transformers 4.x TFSegformerForSemanticSegmentation, tf.function(jit_compile=True)"),
    "pt-int8": ("pt", "ours PyTorch fast path, encoder linear layers dynamic int8 (segformer.pt.quantize)"),
    "ort-fp32": ("pt", "ONNX Runtime float32 of our ONNX export"),
    "ort-int8": ("pt", "ONNX Runtime static int8 (QDQ) of our ONNX export, calibrated on 4 random images"),
    "hf-ort-fp32": ("pt", "ONNX Runtime float32 of torch.onnx.export of transformers' PyTorch model"),
    "tflite-fp32": ("tf", "TFLite float32 of our Keras model (fixed size)"),
    "tflite-fp16": ("tf", "TFLite with float16 weights of our Keras model"),
    "tflite-int8": ("tf", "TFLite int8 convolutions / matrix products of our Keras model, calibrated on 4 random images"),
    "tflite-int8-full": ("tf", "TFLite full-integer int8 of our Keras model, calibrated on 4 random images"),
    "pt-train": ("pt", "ours PyTorch, one training step: forward + loss + backward + AdamW (the trainer's optimizer)"),
    "hf-pt-train": ("pt", "transformers SegformerForSemanticSegmentation, one training step with torch.optim.AdamW"),
    "tf-train": ("tf", "ours Keras 3, one training step as the TF trainer: tf.function(GradientTape + AdamW)"),
}
REFERENCE_OF = {"pt-fast": "hf-pt", "pt-plain": "hf-pt", "pt-compile": "hf-pt", "pt-train": "hf-pt-train",
                "tf-train": "hf-pt-train", "pt-cuda": "hf-pt-cuda", "pt-cuda-bf16": "hf-pt-cuda-bf16",
                "tf-eager": "hf-tf", "tf-opbyop": "hf-tf", "tf-xla": "hf-tf-xla",
                "pt-int8": "pt-fast", "ort-int8": "pt-fast", "ort-fp32": "hf-ort-fp32",
                "tflite-fp32": "tf-eager", "tflite-fp16": "tf-eager", "tflite-int8": "tf-eager",
                "tflite-int8-full": "tf-eager"}
CUDA_IMPLS = ("pt-cuda", "pt-cuda-bf16", "hf-pt-cuda", "hf-pt-cuda-bf16")  # in the default list when a GPU is seen
# deployment paths (need onnx / onnxruntime, export before timing): only when named in --impls
DEPLOY_IMPLS = ("pt-int8", "ort-fp32", "ort-int8", "hf-ort-fp32", "tflite-fp32", "tflite-fp16", "tflite-int8",
                "tflite-int8-full")
TRAIN_IMPLS = ("pt-train", "hf-pt-train", "tf-train")  # only when asked for (``train=True`` / ``--train``)
# never in the default list (compile minutes, training steps, exports)
OPT_IN_IMPLS = ("pt-compile",) + TRAIN_IMPLS + DEPLOY_IMPLS
FRAMEWORKS = ("pt", "tf")


def cuda_available() -> bool:
    """Whether torch is importable here and sees a CUDA GPU (decides the default implementation list)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def parse_list(name: str, text: str | Sequence[str], choices: Sequence[str] | None = None) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; with ``choices``, every item must be one of them."""
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else [str(t) for t in text]
    items = [t for t in items if t]
    if not items:
        raise ValueError(f"{name} must name at least one item, got {text!r}")
    if choices is not None:
        for item in items:
            if item not in choices:
                raise ValueError(f"{name}: unknown item {item!r}; valid choices: {list(choices)}")
    return items


@dataclass
class BenchResult:
    """One (variant, size, implementation): times in milliseconds, memory in MB (``ru_maxrss``)."""

    variant: str
    height: int
    width: int
    impl: str
    description: str
    status: str = "ok"  # ok | skipped | error
    message: str = ""
    version: str = ""
    times_ms: list[float] = field(default_factory=list)
    setup_s: float = 0.0
    rss_model_mb: float = 0.0
    peak_rss_mb: float = 0.0
    plain_gflop: float = 0.0
    own_gflop: float = 0.0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")

    @property
    def min_ms(self) -> float:
        return min(self.times_ms) if self.times_ms else float("nan")

    @property
    def max_ms(self) -> float:
        return max(self.times_ms) if self.times_ms else float("nan")

    @property
    def inference_mb(self) -> float:
        """Peak resident memory above what the process held once the model was built."""
        return self.peak_rss_mb - self.rss_model_mb

    @property
    def gflops_per_s(self) -> float:
        """Plain-path FLOPs / median time: equivalent plain-path work per second."""
        return self.plain_gflop / (self.median_ms / 1e3) if self.times_ms else float("nan")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            median_ms=self.median_ms,
            min_ms=self.min_ms,
            max_ms=self.max_ms,
            inference_mb=self.inference_mb,
            gflops_per_s=self.gflops_per_s,
        )
        return out


class _Worker:
    def __init__(self, python: str, log_dir: str, name: str) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.update(thread_environment(env))  # the thread policy, as the command line sets it
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [python, "-m", "segformer.benchmark.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
            bufsize=1,
        )

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self.log.flush()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            return {"ok": False, "error": f"worker exited (code {self.proc.poll()}); log tail:\n{tail}"}
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask({"cmd": "quit"})
            except (OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def _python_for(impl: str, hf_python: str | None, hf_tf_python: str | None) -> str:
    if impl.startswith("hf-pt"):  # hf-pt, hf-pt-cuda*, hf-pt-train
        return hf_python or os.environ.get("SEGFORMER_BENCH_HF_PYTHON") or sys.executable
    if impl in ("hf-tf", "hf-tf-xla"):
        return hf_tf_python or os.environ.get("SEGFORMER_BENCH_HF_TF_PYTHON") or sys.executable
    return sys.executable


def measure_matmul_rate(threads: int | None, repeats: int = 5, size: int = 2048) -> dict[str, Any]:
    """Float32 matmul rate of this machine in GFLOP/s (median of ``repeats``), in a fresh worker."""
    with tempfile.TemporaryDirectory() as log_dir:
        worker = _Worker(sys.executable, log_dir, "matmul")
        try:
            setup = worker.ask(
                {"cmd": "setup", "impl": "matmul", "variant": "b0", "size": [1, 1], "num_labels": 1,
                 "threads": threads, "warmup": 2, "matmul_size": size}
            )
            if not setup.get("ok"):
                return {"gflops": float("nan"), "error": setup.get("error") or setup.get("skip")}
            times = worker.ask({"cmd": "run", "n": repeats}).get("times", [])
        finally:
            worker.close()
    flop = 2.0 * size**3
    median = statistics.median(times)
    return {"gflops": flop / median / 1e9, "best_gflops": flop / min(times) / 1e9, "size": size, "what": setup["version"]}


def run_benchmark(
    variants: Sequence[str] = ("b0", "b2"),
    sizes: Sequence[tuple[int, int]] = ((512, 512),),
    impls: Sequence[str] | None = None,
    frameworks: Sequence[str] = FRAMEWORKS,
    repeats: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    num_labels: int = 150,
    hf_python: str | None = None,
    hf_tf_python: str | None = None,
    pairs: Sequence[tuple[str, tuple[int, int]]] | None = None,
    log: Any = None,
    batch: int = 1,
    train: bool = False,
    contention: int = 0,
    round_warmup: int = 1,
) -> dict[str, Any]:
    """Run every (variant, size) x implementation and return a JSON-ready report.

    ``pairs`` (variant, (h, w)) overrides the cross product of ``variants`` and ``sizes``. ``impls``
    defaults to every implementation of the chosen ``frameworks`` except the opt-in ones
    (:data:`OPT_IN_IMPLS`); ``train=True`` makes the default the training steps (:data:`TRAIN_IMPLS`).
    ``batch`` images per pass (training steps usually 8). ``log`` is a callable taking a line.

    FLOPs: a training step counts 3 x the plain forward pass (backward ~ 2 x forward), times ``batch``.

    ``round_warmup``: untimed passes an implementation runs at the start of each of its turns, so every timed
    pass follows a pass of the same implementation, as in a loop over images (right after another process's
    turn the first pass is slower: b0 512x512 PT fast path 82 against 70 ms on a 2-vCPU Xeon); 0 times the
    first pass of each turn (the behaviour before 2026-12-07).

    ``contention``: that many busy-loop processes compete for the CPUs from the matmul-rate measurement to
    the last repeat (:func:`~segformer.benchmark.contention.competing_processes`; always ended, also on an
    error or Ctrl-C). The workers run under the thread policy (:mod:`segformer.common.base.threads`; the report's
    ``machine.thread_env`` lists the variables they saw).
    """
    for name, value in (("repeats", repeats), ("warmup", warmup), ("num_labels", num_labels), ("batch", batch),
                        ("round_warmup", round_warmup)):
        zero_ok = name in ("warmup", "round_warmup")
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero_ok else 1):
            raise ValueError(f"{name} must be a {'non-negative' if zero_ok else 'positive'} int, got {value!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be None or a positive int, got {threads!r}")
    if isinstance(contention, bool) or not isinstance(contention, int) or contention < 0:
        raise ValueError(f"contention must be a non-negative int (competing processes), got {contention!r}")
    for framework in frameworks:
        if framework not in FRAMEWORKS:
            raise ValueError(f"frameworks: unknown {framework!r}; valid choices: {list(FRAMEWORKS)}")
    if impls is None and train:
        impls = [name for name in TRAIN_IMPLS if IMPLEMENTATIONS[name][0] in frameworks]
    elif impls is None:
        cuda = "pt" in frameworks and cuda_available()
        impls = [name for name, (fw, _) in IMPLEMENTATIONS.items()
                 if fw in frameworks and (cuda or name not in CUDA_IMPLS) and name not in OPT_IN_IMPLS]
    for impl in impls:
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"impls: unknown {impl!r}; valid choices: {list(IMPLEMENTATIONS)}")
    if pairs is None:
        pairs = [(v, tuple(s)) for v in variants for s in sizes]
    for variant, _ in pairs:
        variant_kwargs(variant)
    say = log or (lambda line: None)
    load_start = os.getloadavg()
    with competing_processes(contention) as competitors:
        if competitors:
            say(f"{len(competitors)} competing busy-loop process(es) running")
        matmul, results = _run_all(pairs, impls, repeats, warmup, threads, num_labels, hf_python, hf_tf_python,
                                   batch, say, round_warmup)
    machine = _machine(threads)
    machine["loadavg_start"] = list(load_start)
    machine["loadavg_end"] = list(os.getloadavg())
    return {
        "machine": machine,
        "matmul": matmul,
        "settings": {"repeats": repeats, "warmup": warmup, "round_warmup": round_warmup, "threads": threads,
                     "num_labels": num_labels, "batch": batch, "dtype": "float32", "contention": contention},
        "results": [r.to_dict() for r in results],
    }


def _run_all(pairs, impls, repeats, warmup, threads, num_labels, hf_python, hf_tf_python, batch, say, round_warmup):
    from ..common.model.config import SegformerConfig
    from ..common.model.flops import count_flops

    matmul = measure_matmul_rate(threads)
    say(f"float32 matmul rate: {matmul.get('gflops', float('nan')):.1f} GFLOP/s ({matmul.get('what', '')})")
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory() as log_dir:
        for variant, (height, width) in pairs:
            config = SegformerConfig(**variant_kwargs(variant), num_labels=num_labels)
            plain = count_flops(config, height, width, path="plain", batch=batch).total / 1e9
            fast = count_flops(config, height, width, path="fast", batch=batch).total / 1e9
            group: list[tuple[BenchResult, _Worker]] = []
            for impl in impls:
                own = fast if impl in ("pt-fast", "pt-compile", "pt-cuda", "pt-cuda-bf16") else plain
                scale = 3.0 if impl in TRAIN_IMPLS else 1.0
                result = BenchResult(variant, height, width, impl, IMPLEMENTATIONS[impl][1], plain_gflop=plain * scale,
                                     own_gflop=own * scale)
                results.append(result)
                worker = _Worker(_python_for(impl, hf_python, hf_tf_python), log_dir, f"{variant}-{height}x{width}-{impl}")
                say(f"[{variant} {height}x{width}] {impl}: setup + {warmup} warm-up ...")
                setup = worker.ask(
                    {"cmd": "setup", "impl": impl, "variant": variant, "size": [height, width],
                     "num_labels": num_labels, "threads": threads, "warmup": warmup, "batch": batch}
                )
                if not setup.get("ok"):
                    result.status = "skipped" if "skip" in setup else "error"
                    result.message = setup.get("skip") or setup.get("error", "")
                    say(f"  {result.status}: {result.message.splitlines()[0] if result.message else ''}")
                    worker.close()
                    continue
                result.version = setup["version"]
                result.setup_s = setup["setup_s"]
                result.rss_model_mb = setup["rss_model_mb"]
                result.peak_rss_mb = setup["rss_after_warmup_mb"]
                group.append((result, worker))
            try:
                for repeat in range(repeats):  # round robin: one timed pass of each implementation per round
                    for result, worker in group:
                        if result.status != "ok":
                            continue
                        reply = worker.ask({"cmd": "run", "n": 1 + round_warmup})
                        if not reply.get("ok"):
                            result.status, result.message = "error", reply.get("error", "")
                            continue
                        result.times_ms.extend(t * 1e3 for t in reply["times"][round_warmup:])  # the timed one
                        result.peak_rss_mb = max(result.peak_rss_mb, reply["peak_rss_mb"])
                    say(f"[{variant} {height}x{width}] round {repeat + 1}/{repeats}: "
                        + ", ".join(f"{r.impl} {r.times_ms[-1]:.0f} ms" for r, _ in group if r.times_ms))
            finally:
                for _, worker in group:
                    worker.close()
    return matmul, results


def _machine(threads: int | None) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = dict(os.environ)
    env.update(thread_environment(env))
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "available_cpus": available_cpus(), "threads": threads,
            "python": platform.python_version(), "platform": platform.platform(),
            "thread_env": {name: env.get(name) for name in (*THREAD_VARIABLES, *WAIT_VARIABLES, "OMP_WAIT_POLICY")}}
