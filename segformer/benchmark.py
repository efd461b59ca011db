"""Latency / peak-memory benchmark of SegFormer inference: ours (PT fast and plain, TF eager and XLA)
against Hugging Face ``transformers`` (PT 5.x, TF 4.x eager and XLA), same machine, same run.

Used by ``segformer bench`` and ``benchmarks/bench_inference.py``. Design:

* Every (variant, size, implementation) runs in its own fresh worker process, so its peak resident
  memory (``ru_maxrss``) is its own. A worker builds the model (random weights, eval mode, batch 1,
  float32), records its resident memory, runs the warm-up passes, then answers "run once" requests
  and reports the time of each forward pass (``time.perf_counter`` around the call that produces the
  logits tensor, including the conversion to numpy for TF so that the work has finished).
* For one (variant, size), all workers are started and warmed up, then the repeats alternate between
  them (round robin): slow drift of the machine (other processes, thermal state) hits all alike.
* The references live in interpreters of their own when needed (transformers 5.x has no TF classes):
  ``hf_python`` / ``hf_tf_python`` name them; a reference that is not importable is skipped.
* Arithmetic rate: FLOPs are counted analytically (:mod:`segformer.common.flops`, the *plain* path's
  multiply-adds x 2), so the GFLOP/s of a fast path is "equivalent plain-path work per second"; the
  fast path's own count is reported too. The machine's float32 matmul rate is measured by a worker
  (square ``torch.mm`` or ``numpy.dot``, same thread count).

The worker side imports only the framework it runs; this module imports neither torch nor tensorflow
at import time.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .common.sizes import parse_sizes
from .common.variants import variant_kwargs

__all__ = [
    "IMPLEMENTATIONS",
    "REFERENCE_OF",
    "BenchResult",
    "parse_sizes",
    "parse_list",
    "run_benchmark",
    "format_table",
    "worker_main",
]

# name -> (framework, description)
IMPLEMENTATIONS: dict[str, tuple[str, str]] = {
    "pt-fast": ("pt", "ours PyTorch, eval fast path (folded head, SDPA)"),
    "pt-plain": ("pt", "ours PyTorch, plain path (use_fast_path=False)"),
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
}
REFERENCE_OF = {"pt-fast": "hf-pt", "pt-plain": "hf-pt", "pt-cuda": "hf-pt-cuda", "pt-cuda-bf16": "hf-pt-cuda-bf16",
                "tf-eager": "hf-tf", "tf-opbyop": "hf-tf", "tf-xla": "hf-tf-xla"}
CUDA_IMPLS = ("pt-cuda", "pt-cuda-bf16", "hf-pt-cuda", "hf-pt-cuda-bf16")  # in the default list when a GPU is seen
FRAMEWORKS = ("pt", "tf")

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


# ---------------------------------------------------------------------------------------------- worker
def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def _cuda_peak_mb() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


_memory_mb = _rss_mb  # CUDA workers report the GPU's peak allocated memory instead (set by _build)


def cuda_available() -> bool:
    """Whether torch is importable here and sees a CUDA GPU (decides the default implementation list)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _set_threads(framework: str, threads: int | None) -> None:
    if not threads:
        return
    if framework == "pt":
        import torch

        torch.set_num_threads(threads)
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)


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
    _set_threads(framework, spec.get("threads"))
    if framework == "pt":
        import numpy as np
        import torch

        cuda = "cuda" in impl
        if cuda and not torch.cuda.is_available():
            raise ImportError("no CUDA GPU visible to torch")
        torch.manual_seed(0)
        pixel_values = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, height, width), dtype=np.float32))
        if impl.startswith("hf-pt"):
            import transformers

            model = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(**kwargs)).eval()
            version = f"transformers {transformers.__version__}, torch {torch.__version__}"
        else:
            from .common.config import SegformerConfig
            from .pt import SegformerForSemanticSegmentation

            model = SegformerForSemanticSegmentation(SegformerConfig(**kwargs)).eval()
            model.use_fast_path = impl != "pt-plain"
            version = f"segformer, torch {torch.__version__}"
        device = torch.device("cuda" if cuda else "cpu")
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=impl.endswith("bf16"))
        if cuda:
            model, pixel_values = model.to(device), pixel_values.to(device)
            version += f", {torch.cuda.get_device_name(device)}"
            _memory_mb = _cuda_peak_mb

        def run() -> Any:
            with torch.inference_mode(), autocast:
                logits = model(pixel_values).logits
            if cuda:
                torch.cuda.synchronize()
            return logits

        return run, version
    import numpy as np
    import tensorflow as tf

    pixel_values = tf.constant(np.random.default_rng(0).standard_normal((1, 3, height, width), dtype=np.float32))
    if impl.startswith("hf-"):
        import transformers

        tf.random.set_seed(0)
        model = transformers.TFSegformerForSemanticSegmentation(transformers.SegformerConfig(**kwargs))
        version = f"transformers {transformers.__version__}, tensorflow {tf.__version__}"
    else:
        import keras

        from .common.config import SegformerConfig
        from .tf import TFSegformerForSemanticSegmentation

        keras.utils.set_random_seed(0)
        model = TFSegformerForSemanticSegmentation(SegformerConfig(**kwargs))
        model.run_eagerly = impl == "tf-opbyop"
        version = f"segformer, keras {keras.__version__}, tensorflow {tf.__version__}"

    def forward(x: Any) -> Any:
        return model(x, training=False).logits

    if impl.endswith("xla"):
        forward = tf.function(forward, jit_compile=True)

    def run_tf() -> Any:
        return forward(pixel_values).numpy()

    return run_tf, version


def _build_matmul(spec: dict[str, Any]):
    n = int(spec.get("matmul_size", 2048))
    try:
        import torch

        _set_threads("pt", spec.get("threads"))
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


# ------------------------------------------------------------------------------------------ orchestrator
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
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [python, "-m", "segformer.benchmark", "--worker"],
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
    if impl.startswith("hf-pt"):
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
) -> dict[str, Any]:
    """Run every (variant, size) x implementation and return a JSON-ready report.

    ``pairs`` (variant, (h, w)) overrides the cross product of ``variants`` and ``sizes``. ``impls``
    defaults to every implementation of the chosen ``frameworks``. ``log`` is a callable taking a line.
    """
    from .common.config import SegformerConfig
    from .common.flops import count_flops

    for name, value in (("repeats", repeats), ("warmup", warmup), ("num_labels", num_labels)):
        if not isinstance(value, int) or value < (0 if name == "warmup" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'warmup' else 'positive'} int, got {value!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be None or a positive int, got {threads!r}")
    for framework in frameworks:
        if framework not in FRAMEWORKS:
            raise ValueError(f"frameworks: unknown {framework!r}; valid choices: {list(FRAMEWORKS)}")
    if impls is None:
        cuda = "pt" in frameworks and cuda_available()
        impls = [name for name, (fw, _) in IMPLEMENTATIONS.items() if fw in frameworks and (cuda or name not in CUDA_IMPLS)]
    for impl in impls:
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"impls: unknown {impl!r}; valid choices: {list(IMPLEMENTATIONS)}")
    if pairs is None:
        pairs = [(v, tuple(s)) for v in variants for s in sizes]
    for variant, _ in pairs:
        variant_kwargs(variant)
    say = log or (lambda line: None)
    load_start = os.getloadavg()
    matmul = measure_matmul_rate(threads)
    say(f"float32 matmul rate: {matmul.get('gflops', float('nan')):.1f} GFLOP/s ({matmul.get('what', '')})")
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory() as log_dir:
        for variant, (height, width) in pairs:
            config = SegformerConfig(**variant_kwargs(variant), num_labels=num_labels)
            plain = count_flops(config, height, width, path="plain").total / 1e9
            fast = count_flops(config, height, width, path="fast").total / 1e9
            group: list[tuple[BenchResult, _Worker]] = []
            for impl in impls:
                result = BenchResult(variant, height, width, impl, IMPLEMENTATIONS[impl][1], plain_gflop=plain,
                                     own_gflop=fast if impl in ("pt-fast", "pt-cuda", "pt-cuda-bf16") else plain)
                results.append(result)
                worker = _Worker(_python_for(impl, hf_python, hf_tf_python), log_dir, f"{variant}-{height}x{width}-{impl}")
                say(f"[{variant} {height}x{width}] {impl}: setup + {warmup} warm-up ...")
                setup = worker.ask(
                    {"cmd": "setup", "impl": impl, "variant": variant, "size": [height, width],
                     "num_labels": num_labels, "threads": threads, "warmup": warmup}
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
                for repeat in range(repeats):  # round robin: one pass of each implementation per round
                    for result, worker in group:
                        if result.status != "ok":
                            continue
                        reply = worker.ask({"cmd": "run", "n": 1})
                        if not reply.get("ok"):
                            result.status, result.message = "error", reply.get("error", "")
                            continue
                        result.times_ms.extend(t * 1e3 for t in reply["times"])
                        result.peak_rss_mb = max(result.peak_rss_mb, reply["peak_rss_mb"])
                    say(f"[{variant} {height}x{width}] round {repeat + 1}/{repeats}: "
                        + ", ".join(f"{r.impl} {r.times_ms[-1]:.0f} ms" for r, _ in group if r.times_ms))
            finally:
                for _, worker in group:
                    worker.close()
    machine = _machine(threads)
    machine["loadavg_start"] = list(load_start)
    machine["loadavg_end"] = list(os.getloadavg())
    return {
        "machine": machine,
        "matmul": matmul,
        "settings": {"repeats": repeats, "warmup": warmup, "threads": threads, "num_labels": num_labels,
                     "batch": 1, "dtype": "float32"},
        "results": [r.to_dict() for r in results],
    }


def _machine(threads: int | None) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "platform": platform.platform()}


def _ratio(results: list[dict[str, Any]], row: dict[str, Any]) -> str:
    reference = REFERENCE_OF.get(row["impl"])
    for other in results:
        if (other["impl"] == reference and other["variant"] == row["variant"] and other["height"] == row["height"]
                and other["width"] == row["width"] and other["status"] == "ok" and row["status"] == "ok"):
            speed = other["median_ms"] / row["median_ms"]
            best = other["min_ms"] / row["min_ms"]
            memory = row["inference_mb"] / other["inference_mb"] if other["inference_mb"] > 0 else float("nan")
            return f"{speed:5.2f}x ({best:4.2f}x by min) vs {reference}, infer mem {memory:4.0%}"
    return ""


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width text table (times in ms; memory in MB; ratio = reference median / ours)."""
    matmul = report["matmul"].get("gflops", float("nan"))
    lines = [
        f"machine: {report['machine']['cpu']} ({report['machine']['cpu_count']} logical CPUs), threads "
        f"{report['machine']['threads'] or 'default'}; float32 matmul {matmul:.1f} GFLOP/s; load average "
        f"{report['machine'].get('loadavg_start', [float('nan')])[0]:.2f} at start, "
        f"{report['machine'].get('loadavg_end', [float('nan')])[0]:.2f} at end",
        f"batch 1, float32, {report['settings']['repeats']} repeats (round robin) after "
        f"{report['settings']['warmup']} warm-up; GFLOP/s = plain-path FLOPs / median time; ratio = reference / ours",
        "",
        f"{'model':<16}{'impl':<16}{'min':>9}{'median':>9}{'max':>9}{'peak MB':>9}{'infer MB':>9}"
        f"{'GFLOP/s':>9}{'%mm':>6}  ratio",
    ]
    for row in report["results"]:
        model = f"{row['variant']} {row['height']}x{row['width']}"
        if row["status"] != "ok":
            lines.append(f"{model:<16}{row['impl']:<16}  {row['status']}: {row['message'].splitlines()[0][:80] if row['message'] else ''}")
            continue
        rate = row["gflops_per_s"]
        share = "     -" if row["impl"] in CUDA_IMPLS else f"{rate / matmul:6.0%}"  # the matmul rate is the CPU's
        lines.append(
            f"{model:<16}{row['impl']:<16}{row['min_ms']:9.1f}{row['median_ms']:9.1f}{row['max_ms']:9.1f}"
            f"{row['peak_rss_mb']:9.0f}{row['inference_mb']:9.0f}{rate:9.1f}{share}  {_ratio(report['results'], row)}"
        )
    if any(row["impl"] in CUDA_IMPLS for row in report["results"]):
        lines.append("(*-cuda rows: memory columns are the GPU's peak allocated MB, not the process's resident memory)")
    return "\n".join(lines)


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        sys.exit(worker_main())
    from .commands.bench import main as _bench_main

    sys.exit(_bench_main(sys.argv[1:]))
