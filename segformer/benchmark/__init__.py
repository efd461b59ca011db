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
* Arithmetic rate: FLOPs are counted analytically (:mod:`segformer.common.model.flops`, the *plain* path's
  multiply-adds x 2), so the GFLOP/s of a fast path is "equivalent plain-path work per second"; the
  fast path's own count is reported too. The machine's float32 matmul rate is measured by a worker
  (square ``torch.mm`` or ``numpy.dot``, same thread count).

The worker side imports only the framework it runs; this package imports neither torch nor tensorflow
at import time. Modules: :mod:`~segformer.benchmark.worker` (the worker process and its JSON protocol),
:mod:`~segformer.benchmark.run` (implementations, workers, round robin, the report),
:mod:`~segformer.benchmark.table` (the text table); ``python -m segformer.benchmark`` is ``segformer bench``.
"""

from __future__ import annotations

from ..common.base.sizes import parse_sizes
from .run import (
    CUDA_IMPLS,
    DEPLOY_IMPLS,
    FRAMEWORKS,
    IMPLEMENTATIONS,
    OPT_IN_IMPLS,
    REFERENCE_OF,
    TRAIN_IMPLS,
    BenchResult,
    cuda_available,
    measure_matmul_rate,
    parse_list,
    run_benchmark,
)
from .table import format_table
from .worker import worker_main

__all__ = [
    "CUDA_IMPLS",
    "DEPLOY_IMPLS",
    "FRAMEWORKS",
    "IMPLEMENTATIONS",
    "OPT_IN_IMPLS",
    "REFERENCE_OF",
    "TRAIN_IMPLS",
    "BenchResult",
    "cuda_available",
    "format_table",
    "measure_matmul_rate",
    "parse_list",
    "parse_sizes",
    "run_benchmark",
    "worker_main",
]
