"""The benchmark report as a text table (:func:`format_table`)."""

from __future__ import annotations

from typing import Any

from .run import CUDA_IMPLS, REFERENCE_OF, TRAIN_IMPLS


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


def _usable(machine: dict[str, Any]) -> str:
    usable = machine.get("available_cpus")
    return f", {usable} usable" if usable is not None and usable != machine.get("cpu_count") else ""


def _threads(machine: dict[str, Any]) -> str:
    env = machine.get("thread_env") or {}
    threads = machine["threads"] or f"default ({env.get('OMP_NUM_THREADS') or 'the framework'})"
    waits = [f"{name} {env[name]}" for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if env.get(name)]
    return f"{threads}, {', '.join(waits) or 'OpenMP waits unset'}"


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width text table (times in ms; memory in MB; ratio = reference median / ours)."""
    matmul = report["matmul"].get("gflops", float("nan"))
    lines = [
        f"machine: {report['machine']['cpu']} ({report['machine']['cpu_count']} logical CPUs"
        f"{_usable(report['machine'])}), threads {_threads(report['machine'])}; "
        f"{report['settings'].get('contention', 0)} competing busy process(es); float32 matmul {matmul:.1f} GFLOP/s; load average "
        f"{report['machine'].get('loadavg_start', [float('nan')])[0]:.2f} at start, "
        f"{report['machine'].get('loadavg_end', [float('nan')])[0]:.2f} at end",
        f"batch {report['settings'].get('batch', 1)}, float32, {report['settings']['repeats']} repeats (round robin, each "
        f"after {report['settings'].get('round_warmup', 0)} untimed pass(es) of its own) after "
        f"{report['settings']['warmup']} warm-up; GFLOP/s = plain-path FLOPs / median time"
        + (" (training steps: 3 x forward)" if any(r["impl"] in TRAIN_IMPLS for r in report["results"]) else "")
        + "; ratio = reference / ours",
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
