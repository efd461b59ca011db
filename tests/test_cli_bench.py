"""The benchmark harness runs (tiny config, one repeat), its contention mode starts and always ends its
competing processes, and the analytic FLOP counter is right.

Speed is never asserted here; the benchmark's numbers live in benchmarks/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

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


def test_flops_of_the_mmseg_head_match_torch_flop_counter_on_both_paths():
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from segformer.pt import SegformerForSemanticSegmentation

    config = tiny_config(decode_head_type="mmseg", decoder_hidden_size=24)
    model = SegformerForSemanticSegmentation(config).eval()
    with torch.no_grad():
        maps = model.segformer(torch.zeros(2, 3, 67, 93), output_hidden_states=True).hidden_states
    for path in ("plain", "fast"):  # the head alone (the encoder's fused attention is counted differently)
        model.use_fast_path = path == "fast"
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model.decode_head(maps)
        assert counter.get_total_flops() == count_flops(config, 67, 93, batch=2, path=path).decode_head, path
    # the mmseg fast path runs a D x D block per stage where the all-MLP fold has none
    mlp = config.copy(decode_head_type="mlp")
    assert count_flops(config, 67, 93, path="fast").decode_head > count_flops(mlp, 67, 93, path="fast").decode_head


def test_benchmarked_models_get_random_weights_everywhere():
    """Every float tensor of a benchmarked model is replaced (no zero bias, no identity norm or BatchNorm
    statistics left for an exporter to fold away), by the documented rules, in both frameworks."""
    import numpy as np
    import torch

    from segformer.benchmark.randomize import randomize_keras, randomize_torch
    from segformer.pt import SegformerForSemanticSegmentation
    from segformer.tf import TFSegformerForSemanticSegmentation

    config = tiny_config(num_labels=4)
    model = randomize_torch(SegformerForSemanticSegmentation(config).eval(), seed=3)
    state = model.state_dict()
    for name, value in state.items():
        value = value.numpy()
        if name.endswith("num_batches_tracked"):
            assert value == 0  # integers are left alone
        elif name.endswith("running_var"):
            assert value.min() >= 0.5 and value.max() <= 1.5, name
        else:
            assert np.all(value != 0) and not np.all(value == 1), name
    norm_weights = [m.weight.numpy(force=True) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norm_weights and all(abs(w.mean() - 1.0) < 0.2 for w in norm_weights)
    kernel = state["decode_head.linear_fuse.weight"].numpy()  # (16, 64, 1, 1): fan_in 64 -> std 0.125
    assert 0.09 < kernel.std() < 0.16
    again = randomize_torch(SegformerForSemanticSegmentation(config).eval(), seed=3).state_dict()
    assert all(torch.equal(state[k], again[k]) for k in state)  # seeded

    keras_model = TFSegformerForSemanticSegmentation(config)
    keras_model(np.zeros((1, 3, 32, 32), np.float32), training=False)
    randomize_keras(keras_model, seed=3)
    for variable in keras_model.weights:
        value, name = np.asarray(variable), variable.path
        if "float" not in str(variable.dtype):
            assert np.all(value == 0), name
        elif name.endswith("moving_variance"):
            assert value.min() >= 0.5 and value.max() <= 1.5, name
        else:
            assert np.all(value != 0) and not np.all(value == 1), name
    gammas = [np.asarray(v) for v in keras_model.weights if v.path.endswith("gamma")]
    assert gammas and all(abs(g.mean() - 1.0) < 0.2 for g in gammas)


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


def test_each_timed_pass_follows_untimed_passes_of_its_own(monkeypatch):
    """``round_warmup`` N: every round asks each worker for N + 1 passes and keeps only the last time (0: one
    pass, timed); the setting is in the report and the table; bad values are refused."""
    pytest.importorskip("torch")
    from segformer.benchmark import run as run_module

    asked = []
    real_ask = run_module._Worker.ask

    def ask(self, request):
        reply = real_ask(self, request)
        if request.get("cmd") == "run":
            asked.append((request["n"], len(reply.get("times", []))))
        return reply

    monkeypatch.setattr(run_module._Worker, "ask", ask)
    for round_warmup in (2, 0):
        asked.clear()
        report = run_benchmark(variants=["tiny"], sizes=[(32, 32)], impls=["pt-fast", "pt-plain"], repeats=2, warmup=0,
                               threads=1, round_warmup=round_warmup)
        assert report["settings"]["round_warmup"] == round_warmup
        run_requests = asked[-4:]  # 2 rounds x 2 implementations (the matmul-rate worker asks first)
        assert run_requests == [(round_warmup + 1, round_warmup + 1)] * 4
        kept = [len(row["times_ms"]) for row in report["results"]]  # how many passes were kept, not how long
        assert kept == [2, 2]
        assert f"each after {round_warmup} untimed pass(es) of its own" in format_table(report)
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="round_warmup must be a non-negative int"):
            run_benchmark(variants=["tiny"], impls=["pt-fast"], round_warmup=bad)


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


def _busy_children() -> list[int]:
    """Ids of this process's children that run the benchmark's busy loop (zombies excluded)."""
    from segformer.benchmark.contention import BUSY_LOOP, alive

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and "getppid" in cmdline and BUSY_LOOP[:20] in cmdline:
            if alive(int(entry.name)):
                found.append(int(entry.name))
    return found


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


@needs_proc
def test_competing_processes_start_and_are_always_reaped():
    from segformer.benchmark.contention import alive, competing_processes

    with competing_processes(2) as procs:
        assert len(procs) == 2 and sorted(_busy_children()) == sorted(p.pid for p in procs)
        assert all(alive(p.pid) for p in procs)
    assert all(p.returncode is not None for p in procs) and _busy_children() == []  # ended and waited for
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C inside the block
        with competing_processes(1) as procs:
            raise KeyboardInterrupt
    assert procs[0].returncode is not None and _busy_children() == []
    with pytest.raises(ValueError, match="contention must be a non-negative int .competing processes., got -1"):
        with competing_processes(-1):
            pass


@needs_proc
def test_competing_processes_end_when_the_benchmark_is_killed():
    """``kill -9`` of the benchmark runs no clean-up; the busy loops notice their parent is gone and exit."""
    from segformer.benchmark.contention import alive

    code = ("from segformer.benchmark.contention import competing_processes; import time, sys\n"
            "with competing_processes(2) as procs:\n"
            "    print(' '.join(str(p.pid) for p in procs), flush=True); time.sleep(120)\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids)


@needs_proc
def test_contention_mode_runs_and_leaves_no_process():
    pytest.importorskip("torch")
    report = run_benchmark(variants=["tiny"], sizes=[(64, 64)], impls=["pt-fast"], repeats=1, warmup=0, threads=1,
                           contention=1)
    assert report["settings"]["contention"] == 1 and report["results"][0]["status"] == "ok"
    assert "1 competing busy process(es)" in format_table(report)
    assert report["machine"]["thread_env"]["GOMP_SPINCOUNT"] == "100000"  # the workers' OpenMP settings are recorded
    assert _busy_children() == []

    def interrupt(line):  # Ctrl-C while the competitors run
        if "competing" in line:
            assert len(_busy_children()) == 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_benchmark(variants=["tiny"], sizes=[(64, 64)], impls=["pt-fast"], repeats=1, warmup=0, contention=2,
                      log=interrupt)
    assert _busy_children() == []


@needs_proc
@pytest.mark.slow
def test_contention_levels_give_one_table_each(tmp_path, capsys):
    pytest.importorskip("torch")
    from segformer.cli import main

    out = tmp_path / "levels.json"
    assert main(["bench", "--variants", "tiny", "--sizes", "64x64", "--impls", "pt-fast", "--repeats", "1", "--warmup",
                 "0", "--threads", "1", "--contention", "0,1", "--json", str(out), "--quiet"]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [run["settings"]["contention"] for run in runs] == [0, 1]
    assert capsys.readouterr().out.count("competing busy process(es)") == 2
    assert _busy_children() == []


def test_bench_modes_reject_bad_options(capsys):
    from segformer.cli import main

    for argv, message in (
        (["--contention", "two"], "contention: 'two' is not a whole number >= 0"),
        (["--mode", "memory", "--megapixels", "16,0"], "megapixels: '0' is not a whole number >= 1"),
        (["--mode", "folder", "--images", "0"], "--images must be a positive int, got 0"),
        (["--threads", "0"], "--threads must be a positive int, got 0"),
        (["--mode", "quant", "--trained", "/nonexistent/model"], "trained: '/nonexistent/model' is not a model folder"),
    ):
        assert main(["bench", *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_fold_mode_prints_one_row_per_case(capsys):
    """``--mode fold``: forward, fold and cache-check times of the PT eval head (tiny variant, two sizes)."""
    pytest.importorskip("torch")
    from segformer.cli import main

    assert main(["bench", "--mode", "fold", "--variants", "tiny", "--sizes", "64x64,32x48", "--threads", "1",
                 "--repeats", "2", "--num-labels", "3"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny |")]
    assert [row.split(" | ")[1] for row in rows] == ["64x64", "32x48"]
    assert all(row.count("%") == 4 for row in rows)  # fold and check, each by median and by min
    assert main(["bench", "--mode", "fold", "--repeats", "0"]) == 2
    assert "--repeats must be a positive int, got 0" in capsys.readouterr().err


def test_scale_mode_whole_runs(capsys):
    """``--mode whole``: one fresh measurement process, its peak memory printed (tiny image)."""
    pytest.importorskip("torch")
    from segformer.cli import main

    assert main(["bench", "--mode", "whole", "--side", "64", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "whole 64x64, b0, 150 classes: peak RSS" in out and "load average at end" in out


@pytest.mark.slow
def test_scale_mode_folder_runs(capsys):
    """``--mode folder``: predict's outputs equal the one-at-a-time loop's, byte for byte (2 small images)."""
    pytest.importorskip("torch")
    from segformer.cli import main

    assert main(["bench", "--mode", "folder", "--images", "2", "--repeats", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "outputs byte-identical to the loop's: True" in out and "images/s min / median / max" in out


@pytest.mark.slow
def test_quant_mode_runs(tmp_path, capsys):
    """``--mode quant`` with a b0 trained for one step: every path's agreement and mIoU are printed; the
    float32 paths agree with PT float32 on the sample photo (the same network)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tensorflow")
    from segformer.cli import main

    out = tmp_path / "quant.json"
    assert main(["bench", "--mode", "quant", "--work", str(tmp_path / "work"), "--train-steps", "1", "--threads", "1",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())["accuracy"]
    assert set(report["miou"]) >= {"pt-fp32-fast", "pt-int8-dynamic", "ort-fp32", "ort-int8-static", "ort-int8-dynamic",
                                   "tflite-fp32", "tflite-fp16", "tflite-int8"}
    assert report["agreement"]["ort-fp32"][0] > 0.99 and report["agreement"]["tflite-fp32"][0] > 0.99
    for key in ("held_out_agreement", "held_out_agreement_64"):
        assert len(report[key]["ort-fp32"]) == 16 and min(report[key]["ort-fp32"]) > 0.99
    assert "tflite-int8" in capsys.readouterr().out
