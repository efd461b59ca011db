"""The benchmark runs (tiny config, one repeat) and the analytic FLOP counter is right.

Speed is never asserted here; the benchmark's numbers live in benchmarks/README.md.
"""

from __future__ import annotations

import json

import pytest

from randomize import tiny_config
from segformer.benchmark import format_table, parse_list, parse_sizes, run_benchmark
from segformer.common.model.config import SegformerConfig
from segformer.common.model.flops import count_flops


def test_flops_match_the_paper():
    # SegFormer paper, Table 1 / 2: multiply-adds ("FLOPs") at 512x512 on ADE20K (150 classes)
    for variant, paper in (("b0", 8.4), ("b1", 15.9), ("b2", 62.4)):
        config = SegformerConfig.from_variant(variant, num_labels=150)
        macs = count_flops(config, 512, 512).total / 2e9
        assert abs(macs - paper) < 0.1, (variant, macs)
    config = SegformerConfig.from_variant("b0", num_labels=150)
    fast = count_flops(config, 512, 512, path="fast")
    plain = count_flops(config, 512, 512, path="plain")
    assert fast.encoder == plain.encoder and fast.decode_head < plain.decode_head / 5
    assert count_flops(config, 512, 512, batch=2).total == 2 * plain.total
    with pytest.raises(ValueError, match=r"path must be one of \['plain', 'fast'\], got 'quick'"):
        count_flops(config, 512, 512, path="quick")
    with pytest.raises(ValueError, match="height must be a positive int, got 0"):
        count_flops(config, 0, 512)


def test_flops_match_torch_flop_counter():
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from segformer.pt import SegformerForSemanticSegmentation

    for config, (height, width) in ((tiny_config(), (64, 96)), (SegformerConfig.from_variant("b0", num_labels=19), (67, 131))):
        model = SegformerForSemanticSegmentation(config).eval()
        model.use_fast_path = False  # plain path: explicit attention matmuls, concat + linear_fuse
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, 3, height, width))
        assert counter.get_total_flops() == count_flops(config, height, width).total


def test_parsers():
    assert parse_sizes("512x512, 1024x2048") == [(512, 512), (1024, 2048)]
    assert parse_list("frameworks", "pt,tf", ("pt", "tf")) == ["pt", "tf"]
    with pytest.raises(ValueError, match="not HEIGHTxWIDTH"):
        parse_sizes("512")
    with pytest.raises(ValueError, match=r"unknown item 'jax'; valid choices: \['pt', 'tf'\]"):
        parse_list("frameworks", "pt,jax", ("pt", "tf"))


def test_tiny_benchmark_runs(tmp_path, capsys):
    pytest.importorskip("torch")
    report = run_benchmark(variants=["tiny"], sizes=[(64, 64)], impls=["pt-fast", "pt-plain"], repeats=1, warmup=0,
                           threads=1)
    rows = report["results"]
    assert [r["impl"] for r in rows] == ["pt-fast", "pt-plain"]
    for row in rows:
        assert row["status"] == "ok", row["message"]
        assert len(row["times_ms"]) == 1 and row["median_ms"] > 0 and row["peak_rss_mb"] > 0
    assert report["matmul"]["gflops"] > 0
    table = format_table(report)
    print(table)
    assert "pt-fast" in table and "GFLOP/s" in table


def test_cuda_rows_are_skipped_without_a_gpu():
    """The CUDA implementations run where torch sees a GPU; elsewhere they are reported as skipped (CI has
    no GPU, so there this checks the skip; on a GPU machine it checks that the row runs)."""
    torch = pytest.importorskip("torch")
    from segformer.benchmark import CUDA_IMPLS, REFERENCE_OF, cuda_available

    assert set(CUDA_IMPLS) <= set(REFERENCE_OF) | set(REFERENCE_OF.values())
    gpu = torch.cuda.is_available()
    assert cuda_available() is gpu
    report = run_benchmark(variants=["tiny"], sizes=[(64, 64)], impls=["pt-cuda", "pt-fast"], repeats=1, warmup=0, threads=1)
    statuses = {r["impl"]: (r["status"], r["message"]) for r in report["results"]}
    assert statuses["pt-fast"][0] == "ok"
    if gpu:
        assert statuses["pt-cuda"][0] == "ok", statuses["pt-cuda"]
    else:
        assert statuses["pt-cuda"] == ("skipped", "ImportError: no CUDA GPU visible to torch")
        assert "skipped: ImportError: no CUDA GPU" in format_table(report)


def test_bench_cli_writes_json(tmp_path, capsys):
    pytest.importorskip("torch")
    from segformer.cli import main

    out = tmp_path / "bench.json"
    code = main(["bench", "--variants", "tiny", "--sizes", "64x64", "--impls", "pt-fast,hf-pt", "--repeats", "1",
                 "--warmup", "0", "--threads", "1", "--json", str(out), "--quiet"])
    assert code == 0
    report = json.loads(out.read_text())
    statuses = {r["impl"]: r["status"] for r in report["results"]}
    assert statuses["pt-fast"] == "ok" and statuses["hf-pt"] in ("ok", "skipped")  # skipped without transformers
    assert "pt-fast" in capsys.readouterr().out
    assert main(["bench", "--variants", "b9", "--quiet"]) == 2


def _deployment_report(impls):
    report = run_benchmark(variants=["tiny"], sizes=[(64, 64)], impls=impls, repeats=1, warmup=0, threads=1)
    statuses = {r["impl"]: (r["status"], r["message"], r["version"]) for r in report["results"]}
    for impl in impls:
        assert statuses[impl][0] == "ok", statuses[impl]
    table = format_table(report)
    print(table)
    return statuses, table


def test_deployment_rows_run_on_request_only():
    """pt-int8 / ort-* / tflite-* rows: opt-in (not in the default list), timed like the others, the int8
    rows compared with our float32 fast path and ours-vs-transformers for the ONNX Runtime float32 row."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from segformer.benchmark import DEPLOY_IMPLS, REFERENCE_OF
    from segformer.benchmark.run import IMPLEMENTATIONS

    assert set(DEPLOY_IMPLS) <= set(IMPLEMENTATIONS)
    assert REFERENCE_OF["ort-int8"] == "pt-fast" and REFERENCE_OF["ort-fp32"] == "hf-ort-fp32"
    statuses, table = _deployment_report(["pt-fast", "pt-int8", "ort-int8"])
    assert " MB" in statuses["ort-int8"][2] and "onnxruntime" in statuses["ort-int8"][2]
    assert table.count("vs pt-fast") == 2


@pytest.mark.slow
def test_every_deployment_row_runs():
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tensorflow")
    pytest.importorskip("transformers")
    statuses, table = _deployment_report(["ort-fp32", "hf-ort-fp32", "tflite-fp32", "tflite-fp16", "tflite-int8"])
    assert "vs hf-ort-fp32" in table and "tflite" in statuses["tflite-int8"][2]


def test_tiny_training_steps_run():
    """``--train`` rows: ours (PT) and transformers' PT model take training steps at batch 2 (TF in its
    own test tier); the default implementation list never includes the opt-in rows."""
    pytest.importorskip("torch")
    from segformer.benchmark import OPT_IN_IMPLS, TRAIN_IMPLS

    assert set(TRAIN_IMPLS) <= set(OPT_IN_IMPLS) and "pt-compile" in OPT_IN_IMPLS
    report = run_benchmark(variants=["tiny"], sizes=[(64, 64)], frameworks=["pt"], train=True, batch=2, repeats=1,
                           warmup=0, threads=1)
    statuses = {r["impl"]: r["status"] for r in report["results"]}
    assert list(statuses) == ["pt-train", "hf-pt-train"]
    assert statuses["pt-train"] == "ok" and statuses["hf-pt-train"] in ("ok", "skipped")
    assert report["settings"]["batch"] == 2
    config = SegformerConfig.from_variant("tiny", num_labels=150)
    row = report["results"][0]
    assert row["plain_gflop"] == pytest.approx(3 * count_flops(config, 64, 64, batch=2).total / 1e9)
    assert "batch 2" in format_table(report) and "training steps: 3 x forward" in format_table(report)
    with pytest.raises(ValueError, match="batch must be a positive int, got 0"):
        run_benchmark(variants=["tiny"], sizes=[(64, 64)], impls=["pt-train"], batch=0)
